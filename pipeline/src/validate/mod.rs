//! `autotune validate`: checks Vertex AI tuning JSONL against the rules Vertex applies.
//! (Being built: see issue 5.)

use clap::Args;

/// Arguments of `autotune validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// A JSONL file: a local path, `gs://bucket/object`, or any store URL followed by the object.
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("validate is not built yet")]
    NotBuilt,
}

/// Runs the command; returns the process exit code (0 when the file is valid).
pub async fn command(_args: &ValidateArgs) -> Result<i32, ValidateError> {
    Err(ValidateError::NotBuilt)
}
