//! The tuning seam: a [`Tuner`] receives the exact Vertex AI `tuningJobs.create` body built by
//! [`job::Request`] and carries it out. `dry-run` stops there and records the body; the Vertex
//! tuner sends it and follows the job.
//!
//! The trait is split in three so the run can make tuning crash-safe: it first asks whether a
//! job for the same run key already exists ([`Tuner::find`], to re-attach after a crash or a
//! Cloud Run retry), else creates one ([`Tuner::submit`]) and writes its name into the lease
//! before following it ([`Tuner::follow`]).

pub mod dry_run;
pub mod job;
pub mod vertex;

use async_trait::async_trait;

use crate::status::RunStatus;

/// What a tuner reports back for the run record.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// `Success`, `DryRun`, or `Failed` for a job that ended badly (FAILED, CANCELLED, …).
    pub status: RunStatus,
    /// Goes into the record's `model_details` (tuned model, endpoint, job name, stats, error).
    pub model_details: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum TunerError {
    /// The API refused or failed; `model_details` keeps Google's error word for word.
    #[error("{message}")]
    Failed {
        message: String,
        model_details: serde_json::Value,
    },
    #[error("tuner is not available: {0}")]
    Unavailable(String),
}

/// What a run tunes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TuningMode {
    /// SOURCE_MODEL, on the whole dataset.
    #[default]
    Full,
    /// The last successful run's tuned model (`preTunedModel`); SOURCE_MODEL on the first run.
    Continuous,
}

/// Which tuner carries a request out. A type, so the run never compares names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunerKind {
    /// Records the request and sends nothing (the default without PROJECT_ID).
    DryRun,
    /// Vertex AI supervised tuning.
    Vertex,
}

impl TunerKind {
    /// The name in settings, logs and run records.
    pub fn name(self) -> &'static str {
        match self {
            Self::DryRun => "dry-run",
            Self::Vertex => "vertex",
        }
    }
}

impl std::fmt::Display for TunerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[async_trait]
pub trait Tuner: Send + Sync {
    fn kind(&self) -> TunerKind;
    /// A job already created for this run key that is running or succeeded, by resource name.
    async fn find(&self, run_key: &str) -> Result<Option<String>, TunerError>;
    /// Creates the job and returns its resource name.
    async fn submit(&self, request: &job::Request) -> Result<String, TunerError>;
    /// Jobs that hold a slot of the project's concurrent tuning quota now, by resource name
    /// (none for a tuner that runs nothing).
    async fn busy(&self) -> Result<Vec<String>, TunerError> {
        Ok(Vec::new())
    }
    /// Looks at a job once: `Some` when it has ended (as [`Tuner::follow`] reports it), `None`
    /// while it runs. The default follows it (a tuner whose jobs end at once).
    async fn check(&self, name: &str) -> Result<Option<Tuned>, TunerError> {
        self.follow(name).await.map(Some)
    }
    /// Follows a job to its end.
    async fn follow(&self, name: &str) -> Result<Tuned, TunerError>;
}
