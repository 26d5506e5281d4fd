//! autotune retrains Gemini on Vertex AI whenever enough new labelled data lands in a bucket.
//!
//! The `autotune` binary is the job a Cloud Run Job runs after each upload (and what a new user
//! runs on a laptop, against a local folder). Its architecture, one module per concept:
//!
//! * [`client`]: the Google client core under storage and Vertex AI: HTTP with deadlines,
//!   retry classification apart from the back-off policy, access tokens.
//! * [`storage`]: the bucket seam, a small trait with GCS, local-folder and in-memory backends.
//! * [`settings`]: every setting is an environment variable and a long flag.
//! * [`lease`]: gate 1, a lease object that exactly one run can hold.
//! * [`inventory`]: listing the raw and label folders and pairing files into samples.
//! * [`delta`]: gate 3, samples new or changed since the last successful run (manifests).
//! * [`modality`], [`convert`]: one sample into one Vertex AI tuning example.
//! * [`split`]: the deterministic, leak-free train/validation split.
//! * [`dataset`]: concurrent reads, conversion on rayon, streaming uploads of the JSONL files.
//! * [`tuner`]: the tuning seam (dry-run, Vertex AI) and the `tuningJobs.create` body.
//! * [`record`]: the run records (`model_metadata_*.json`) that later runs read.
//! * [`validate`]: `autotune validate`, Vertex's dataset rules checked locally.
//! * [`summary`]: the readable tables of `autotune plan`.
//! * [`run`]: the job itself, tying the gates and stages together; [`logging`]: logs and bars.
//!
//! Library code returns its own error types; `anyhow` lives only in `main.rs`.

pub mod client;
pub mod convert;
pub mod dataset;
pub mod delta;
pub mod inventory;
pub mod lease;
pub mod logging;
pub mod modality;
pub mod record;
pub mod run;
pub mod settings;
pub mod split;
pub mod storage;
pub mod summary;
pub mod tuner;
pub mod validate;
