//! Only a better model ships: after a tuning job succeeds, the candidate and the champion answer
//! the same frozen evaluation rows, the answers are scored in Rust, and the candidate is blessed
//! only when it is better by a margin the paired rows can show.
//!
//! * [`answer`]: what a model answered to one row (text, blocked for safety, empty).
//! * [`set`]: the frozen evaluation set (a third side of the split, by content digest).
//! * [`metrics`]: exact match, JSON validity and per-field accuracy, class accuracy and
//!   macro-F1, ROUGE-L.
//! * [`bless`]: the blessing rule and its paired statistics (McNemar, paired bootstrap).
//! * [`model`]: the seam a model answers through ([`model::Model`]); Vertex endpoints and
//!   publisher models, and the rehearsal stand-in of the embedded default.
//! * [`infer`]: paired inference with bounded concurrency, retries and resumable storage.

pub mod answer;
pub mod bless;
pub mod metrics;
pub mod set;

pub use answer::Answer;
pub use set::Row;
