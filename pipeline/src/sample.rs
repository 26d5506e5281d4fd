//! The shared words at the bottom of the crate: a sample (a raw file and its label, as the
//! listing describes them), the categories a sample can be rejected for, and a reject. Every
//! other module speaks of samples in these terms; this one imports nothing of the crate but
//! the storage listing type and the modality.

use serde::Serialize;

use crate::modality::Modality;
use crate::storage::ObjectMeta;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct RawFile {
    pub meta: ObjectMeta,
    pub modality: Modality,
    /// Lower-case extension, without `.gz`.
    pub ext: String,
    pub gzip: bool,
}

#[derive(Debug, Clone)]
pub struct LabelFile {
    pub meta: ObjectMeta,
    pub format: LabelFormat,
    pub gzip: bool,
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// Path relative to the folders, without extension: the sample's identity across runs.
    pub key: String,
    pub raw: RawFile,
    pub label: LabelFile,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    MalformedLabel,
    MissingField,
    EmptyLabel,
    EmptyRaw,
    NotUtf8,
    UnsupportedType,
    TooLarge,
    ReadError,
    Ambiguous,
    /// An object whose name cannot be used (not UTF-8, or not a valid object name).
    InvalidName,
}

/// A sample skipped with its reason; one line of `rejected.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    pub key: String,
    pub objects: Vec<String>,
    pub category: Category,
    pub reason: String,
}

impl Reject {
    pub fn new(key: &str, object: &str, category: Category, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            objects: vec![object.to_owned()],
            category,
            reason: reason.into(),
        }
    }
}
