//! The Vertex AI tuner (TUNER=vertex): REST calls to `projects.locations.tuningJobs`.
//! (Being built: see issue 3.)

use async_trait::async_trait;
use clap::Args;

use super::{Tuned, Tuner, TunerError, job};
use crate::settings::Settings;

/// Settings of the Vertex tuner.
#[derive(Debug, Clone, Default, Args)]
pub struct VertexSettings {}

#[derive(Debug)]
pub struct Vertex {}

impl Vertex {
    pub fn from_settings(_s: &Settings) -> Result<Self, TunerError> {
        Err(TunerError::Unavailable(
            "TUNER=vertex is not built into this version yet; use TUNER=dry-run".to_owned(),
        ))
    }
}

#[async_trait]
impl Tuner for Vertex {
    fn name(&self) -> &'static str {
        "vertex"
    }
    async fn find(&self, _run_key: &str) -> Result<Option<String>, TunerError> {
        Ok(None)
    }
    async fn submit(&self, _request: &job::Request) -> Result<String, TunerError> {
        Err(TunerError::Unavailable("not built".to_owned()))
    }
    async fn follow(&self, _name: &str) -> Result<Tuned, TunerError> {
        Err(TunerError::Unavailable("not built".to_owned()))
    }
}
