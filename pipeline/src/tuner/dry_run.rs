//! The dry-run tuner: the request the Vertex tuner would send is recorded by the run, and
//! nothing is sent. It is the default without PROJECT_ID, so a new user sees the whole
//! pipeline with no cloud account.

use std::time::Duration;

use async_trait::async_trait;

use super::{Tuned, Tuner, TunerError, TunerKind, job};
use crate::status::RunStatus;

#[derive(Debug, Clone, Default)]
pub struct DryRun {
    /// Pretend the job runs this long (DRY_RUN_DURATION), to rehearse locks and signals.
    pub duration: Duration,
}

#[async_trait]
impl Tuner for DryRun {
    fn kind(&self) -> TunerKind {
        TunerKind::DryRun
    }

    async fn find(&self, _run_key: &str) -> Result<Option<String>, TunerError> {
        Ok(None)
    }

    async fn submit(&self, request: &job::Request) -> Result<String, TunerError> {
        tracing::info!(url = %request.url, "dry run: the Vertex AI request is recorded, not sent");
        Ok(format!("dry-run/{}", request.run_key))
    }

    async fn follow(&self, _name: &str) -> Result<Tuned, TunerError> {
        if !self.duration.is_zero() {
            tokio::time::sleep(self.duration).await;
        }
        Ok(Tuned {
            status: RunStatus::DryRun,
            model_details: serde_json::json!({ "tuner": "dry-run" }),
        })
    }
}
