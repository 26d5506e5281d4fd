//! The shared words at the bottom of the crate: a sample (a raw file and its label, as the
//! listing describes them), the categories a sample can be rejected for, and a reject. Every
//! other module speaks of samples in these terms; this one imports nothing of the crate but
//! the storage listing type and the modality.

use serde::Serialize;

use crate::modality::Modality;
use crate::storage::ObjectMeta;

/// How a label is read; defined with the rest of the sample layout in `autotune-layout`, which
/// the trigger shares.
pub use autotune_layout::LabelFormat;

#[derive(Debug, Clone)]
pub struct RawFile {
    pub meta: ObjectMeta,
    pub modality: Modality,
    /// Lower-case extension, without `.gz`. Shared by the samples of one extension: an index
    /// of 100,000 samples would otherwise hold 100,000 copies of a few names.
    pub ext: std::sync::Arc<str>,
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
    /// A FIFO, socket, device or symbolic link where a file was expected (local folders):
    /// never read, never followed.
    NotARegularFile,
    /// Personal data or a secret found with `PERSONAL_DATA=reject` (the kinds named, never the
    /// values).
    PersonalData,
    /// A near-copy of an evaluation row: held out of both files (not a reject).
    EvalLeak,
    /// A near-duplicate of a sample written before it (not a reject).
    NearDuplicate,
}

impl Category {
    /// The name in `rejected.jsonl`, records and logs (`malformed_label`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedLabel => "malformed_label",
            Self::MissingField => "missing_field",
            Self::EmptyLabel => "empty_label",
            Self::EmptyRaw => "empty_raw",
            Self::NotUtf8 => "not_utf8",
            Self::UnsupportedType => "unsupported_type",
            Self::TooLarge => "too_large",
            Self::ReadError => "read_error",
            Self::Ambiguous => "ambiguous",
            Self::InvalidName => "invalid_name",
            Self::NotARegularFile => "not_a_regular_file",
            Self::PersonalData => "personal_data",
            Self::EvalLeak => "eval_leak",
            Self::NearDuplicate => "near_duplicate",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_names_are_the_serialised_ones() {
        for c in [
            Category::MalformedLabel,
            Category::MissingField,
            Category::EmptyLabel,
            Category::EmptyRaw,
            Category::NotUtf8,
            Category::UnsupportedType,
            Category::TooLarge,
            Category::ReadError,
            Category::Ambiguous,
            Category::InvalidName,
            Category::NotARegularFile,
            Category::PersonalData,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
