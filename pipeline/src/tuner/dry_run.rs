//! The dry-run tuner: records the request the Vertex tuner would send, and stops. It is the
//! default without PROJECT_ID, so a new user sees the whole pipeline with no cloud account.

use std::time::Duration;

use async_trait::async_trait;

use super::{Tuned, Tuner, TunerError, job};
use crate::record::RunStatus;

#[derive(Debug, Clone, Default)]
pub struct DryRun {
    /// Pretend the job runs this long (DRY_RUN_DURATION), to rehearse locks and signals.
    pub duration: Duration,
}

#[async_trait]
impl Tuner for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    async fn tune(&self, request: &job::Request) -> Result<Tuned, TunerError> {
        tracing::info!(url = %request.url, "dry run: the Vertex AI request is recorded, not sent");
        if !self.duration.is_zero() {
            tokio::time::sleep(self.duration).await;
        }
        Ok(Tuned {
            status: RunStatus::DryRun,
            model_details: serde_json::json!({
                "tuner": "dry-run",
                "request": { "method": "POST", "url": request.url, "body": request.body },
            }),
        })
    }
}
