//! # autotune-layout: which objects of the bucket are samples, labels or the job's own output
//!
//! The pipeline (`autotune`, native) lists the bucket and pairs raw samples with labels; the
//! trigger (`trigger-wasm`, a `wasm32-wasip2` component) decides from one upload event whether
//! the job should run. Both must agree on what a sample is, so both use this crate:
//!
//! * [`defaults`]: the one set of defaults of the layout settings (`RAW_DATA_FOLDER`, …,
//!   `TEXT_EXTENSIONS`, …, `LABEL_EXTENSIONS`);
//! * [`Modality`]: the kind of a raw sample, its MIME types and Vertex's size limit;
//! * [`parse_extension`], [`parse_extension_list`]: an extension setting, normalised and checked;
//! * [`Layout`]: the folders and extensions of a deployment, and [`Layout::classify`], which
//!   says what one object name is ([`Class`]).
//!
//! The crate is small on purpose: std, serde's derive and thiserror, so the trigger component
//! stays under its size budget.

mod extension;
mod layout;
mod modality;

pub use extension::{ExtensionError, parse_extension, parse_extension_list};
pub use layout::{
    Class, Ignored, LabelFormat, LabelName, Layout, OutputFolder, RawName, folder_prefix,
};
pub use modality::Modality;

/// Defaults of the layout settings: the names and values of the system autotune replaces. Lists
/// are comma-separated, as the settings are given.
pub mod defaults {
    /// `RAW_DATA_FOLDER`.
    pub const RAW_DATA_FOLDER: &str = "raw_training_data";
    /// `LABEL_FOLDER`: the raw folder.
    pub const LABEL_FOLDER: &str = "raw_training_data";
    /// `JSONL_FOLDER`: the generated datasets, one subfolder per run.
    pub const JSONL_FOLDER: &str = "training_datasets";
    /// `MODEL_META_FOLDER`: run records, manifests and the lock.
    pub const MODEL_META_FOLDER: &str = "trained_model";
    /// `TEXT_EXTENSIONS`.
    pub const TEXT_EXTENSIONS: &str = "txt,md,csv,html";
    /// `IMAGE_EXTENSIONS`.
    pub const IMAGE_EXTENSIONS: &str = "png,jpg,jpeg,webp";
    /// `DOCUMENT_EXTENSIONS`.
    pub const DOCUMENT_EXTENSIONS: &str = "pdf";
    /// `AUDIO_EXTENSIONS`.
    pub const AUDIO_EXTENSIONS: &str = "mp3,wav,flac,m4a,ogg";
    /// `VIDEO_EXTENSIONS`.
    pub const VIDEO_EXTENSIONS: &str = "mp4,mov,webm";
    /// `LABEL_EXTENSIONS`: `json` is parsed, any other is used as it is.
    pub const LABEL_EXTENSIONS: &str = "json,txt";
}
