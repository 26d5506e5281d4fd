//! Only a better model ships: after a tuning job succeeds, the candidate and the champion answer
//! the same frozen evaluation rows, the answers are scored in Rust, and the candidate is blessed
//! only when it is better by a margin the paired rows can show.
//!
//! * [`answer`]: what a model answered to one row (text, blocked for safety, empty).
//! * [`set`]: the frozen evaluation set (a third side of the split, by content digest).
//! * [`metrics`]: exact match, JSON validity and per-field accuracy, class accuracy and
//!   macro-F1, ROUGE-L.
//! * [`bless`]: the blessing rule and its paired statistics (McNemar, paired bootstrap).
//! * [`checkpoints`]: every checkpoint of a tuned model judged, Holm-corrected; the winner.
//! * [`model`]: the seam a model answers through ([`model::Model`]); Vertex endpoints and
//!   publisher models, and the rehearsal stand-in of the embedded default.
//! * [`vertex`]: Vertex AI endpoints and publisher models behind [`model::Model`], and
//!   Google's `evaluateInstances` metrics (`EVAL_GOOGLE_METRICS`).
//! * [`rehearsal`]: the deterministic stand-in of the dry-run tuner (`EVAL_MODEL=rehearsal`).
//! * [`infer`]: paired inference with bounded concurrency, retries and resumable storage.

pub mod answer;
pub mod bless;
pub mod checkpoints;
pub mod contestants;
pub mod infer;
pub mod metrics;
pub mod model;
pub mod rehearsal;
pub mod set;
pub mod vertex;

pub use answer::Answer;
pub use infer::{Answers, InferError, Paired, Role, Totals, paired};
pub use model::{Generation, Model, ModelError, Reply, Thinking};
pub use rehearsal::Rehearsal;
pub use set::Row;
