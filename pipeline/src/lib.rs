//! autotune retrains Gemini on Vertex AI whenever enough new labelled data lands in a bucket.
//!
//! The `autotune` binary is the job a Cloud Run Job runs after each upload (and what a new user
//! runs on a laptop, against a local folder). Its architecture, one module per concept, listed
//! bottom-up: a module imports only modules listed above it.
//!
//! * [`client`]: the Google client core under storage and Vertex AI: HTTP with deadlines,
//!   retry classification apart from the back-off policy, access tokens.
//! * [`locations`]: where Vertex AI answers: a location's host (regional, multi-region,
//!   global), and a resource name's URL.
//! * [`storage`]: the bucket seam, a small trait with GCS, local-folder and in-memory backends.
//! * [`modality`]: what kind of file a raw sample is, its MIME type and Vertex's size limit.
//! * [`sample`]: the shared words: a sample, a reject and its category.
//! * [`status`]: the status of a run.
//! * [`logging`]: logs and progress bars.
//! * [`lease`]: gate 1, a lease object that exactly one run can hold.
//! * [`inventory`]: listing the raw and label folders and pairing files into samples.
//! * `compress`: zstd for the files a run writes for the next (gzip still read).
//! * [`delta`]: gate 3, samples new or changed since the last successful run (manifests).
//! * [`split`]: the deterministic, leak-free train/validation split.
//! * [`fingerprint`]: near-duplicate fingerprints (MinHash, LSH) and the index that keeps one
//!   sample per cluster.
//! * [`convert`]: one sample into one Vertex AI tuning example.
//! * [`screen`]: personal data and secrets found, redacted or rejected before a line is
//!   made (PERSONAL_DATA).
//! * [`validate`]: Vertex's dataset rules checked locally (`autotune validate`, and every line
//!   the run writes).
//! * [`registry`]: the Vertex AI Model Registry alias `champion`, the mirror of the champion
//!   pointer.
//! * [`notify`]: run events as structured log lines, Pub/Sub messages and signed webhooks.
//! * [`champion`]: the champion pointer (compare-and-swap), its history and rollbacks.
//! * [`evaluate`]: the candidate (each of its checkpoints) against the champion on a frozen
//!   evaluation set; the blessing.
//! * [`lines`]: the line store of incremental builds: the last run's lines, by sample content.
//! * [`limit`]: adaptive read concurrency (AIMD between 16 and 256 samples in flight).
//! * [`reads`]: reading a sample's object whole, and reading what changed while the listing
//!   is still arriving (remote stores).
//! * [`dataset`]: concurrent reads, conversion on rayon, streaming uploads of the JSONL files.
//! * [`record`]: the run records (`model_metadata_*.json`) that later runs read.
//! * [`tuner`]: the tuning seam (dry-run, Vertex AI) and the `tuningJobs.create` body.
//! * [`run`]: the job itself, one file per stage (gates, quiet, build, quality, tune,
//!   evaluate and its checkpoints, promote, record, plan), the notices it sends, and the
//!   follow-up cycles of one execution.
//! * [`summary`]: the readable tables of `autotune plan`, `history` and `models`.
//! * [`settings`]: every setting is an environment variable and a long flag; the composition
//!   root that builds each component's configuration from them.
//!
//! Library code returns its own error types; `anyhow` lives only in `main.rs`. Modules that are
//! the job's own machinery (`delta`, `split`, `dataset`, `record`) are private; what of them
//! shows in the API is re-exported here.

pub mod client;
pub mod locations;

pub mod storage;

pub mod modality;

pub mod sample;
pub mod status;

pub mod logging;

pub mod lease;

pub mod inventory;

mod compress;

mod delta;

mod split;

pub mod fingerprint;

pub mod convert;

pub mod screen;

pub mod validate;

pub mod registry;

pub mod notify;

pub mod champion;

pub mod evaluate;

mod lines;

mod limit;

mod reads;

mod dataset;

mod record;

pub mod tuner;

pub mod run;

pub mod summary;

pub mod settings;

pub use dataset::{Built, RejectExample};
pub use record::{
    CandidateScores, ChampionScores, Counts, DatasetTokens, EvalSpend, EvaluationSummary,
    Promotion, RunRecord, TokenEstimate,
};
pub use split::{DEFAULT_SEED, MAX_VALIDATION, Side};
