//! The tuning seam: a [`Tuner`] receives the exact Vertex AI `tuningJobs.create` body built by
//! [`job::TuningJob`] and carries it out. `dry-run` stops there and records the body; the
//! Vertex tuner sends it.

pub mod dry_run;
pub mod job;

use async_trait::async_trait;

use crate::record::RunStatus;

/// What a tuner reports back for the run record.
#[derive(Debug, Clone)]
pub struct Tuned {
    pub status: RunStatus,
    /// Goes into the record's `model_details`.
    pub model_details: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum TunerError {
    #[error("{message}")]
    Failed {
        message: String,
        model_details: serde_json::Value,
    },
    #[error("tuner is not available: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Tuner: Send + Sync {
    fn name(&self) -> &'static str;
    /// Runs the tuning job described by `request` to its end.
    async fn tune(&self, request: &job::Request) -> Result<Tuned, TunerError>;
}
