//! The status of a run: what `run` and `plan` print, what a run record keeps, and what a tuner
//! reports. A bottom module: it imports nothing of the crate.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The tuning job succeeded.
    Success,
    /// The dry-run tuner built the request and stopped.
    DryRun,
    Failed,
    /// A signal stopped the run.
    Interrupted,
    /// The tuning job is submitted and not finished: a later run follows it (`--detach`).
    Running,
    /// Gate 2 or 3 is not met yet.
    Waiting,
    /// Gate 1: another run holds the lock.
    Skipped,
    /// The datasets came out identical to the last run's: nothing new to tune.
    Unchanged,
    /// The project's concurrent tuning jobs are all busy: a later run goes on.
    Deferred,
    /// Seed records may carry statuses we do not know.
    #[serde(other)]
    Unknown,
}

impl RunStatus {
    /// The name users read (stdout, records, logs): `dry_run`, not `DryRun`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::DryRun => "dry_run",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Skipped => "skipped",
            Self::Unchanged => "unchanged",
            Self::Deferred => "deferred",
            Self::Unknown => "unknown",
        }
    }

    /// Exit code of the process: 0 unless the run failed.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Failed | Self::Interrupted | Self::Unknown => 1,
            _ => 0,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialised_ones() {
        for s in [
            RunStatus::Success,
            RunStatus::DryRun,
            RunStatus::Failed,
            RunStatus::Interrupted,
            RunStatus::Running,
            RunStatus::Waiting,
            RunStatus::Skipped,
            RunStatus::Unchanged,
            RunStatus::Deferred,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
