//! How a run stops early, and the one place it learns that it must: [`Watch::run`] runs one
//! step of a stage raced against the shutdown future (SIGTERM, Ctrl-C) and, once the lease is
//! taken, against its loss, and answers either with a [`Stop`] that names the [`Stage`].
//!
//! A step is never dropped half-way with its results: it returns them, and the caller (the
//! run's orchestration in `run/mod.rs`, `tune.rs`) writes them into the run's
//! [`super::Progress`] before the next step. A stopped run records its progress as far as the
//! last step that finished, which is what it had committed.

use std::future::Future;

use crate::lease::Lease;
use crate::status::RunStatus;

use super::RunError;

/// Where a run was when a signal came: what its record and its outcome say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Gates 1 to 3 and taking the lease, read-only.
    Gates,
    /// Waiting for uploads to settle (QUIET_PERIOD), read-only.
    Quiet,
    /// The lease taken, its housekeeping and gate 3 again, before any work.
    Settle,
    /// Reading the record of the run whose job is adopted, before anything is done with it.
    Adopt,
    /// Building, checking, submitting and following the tuning job.
    Train,
    /// Judging the candidate and promoting it.
    Evaluate,
}

impl Stage {
    /// What a message adds after "interrupted by SIGTERM".
    fn during(self) -> &'static str {
        match self {
            Self::Gates => " before the lock was taken; nothing was written",
            Self::Quiet => " while waiting for uploads to settle; nothing was written",
            Self::Settle => " after the lock was taken, before any work; nothing was written",
            Self::Adopt => " before adopting the tuning job; the next run adopts it",
            Self::Train => "",
            Self::Evaluate => " while evaluating",
        }
    }
}

/// Why a run stopped before its end: the status and the error its record says.
#[derive(Debug)]
pub enum Stop {
    /// A signal (SIGTERM, Ctrl-C) asked the process to stop during `stage`.
    Interrupted { signal: &'static str, stage: Stage },
    /// The run failed.
    Failed(RunError),
}

impl Stop {
    /// The status of a run that stopped this way.
    pub fn status(&self) -> RunStatus {
        match self {
            Self::Interrupted { .. } => RunStatus::Interrupted,
            Self::Failed(_) => RunStatus::Failed,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Interrupted { signal, stage } => {
                write!(f, "interrupted by {signal}{}", stage.during())
            }
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl From<RunError> for Stop {
    fn from(e: RunError) -> Self {
        Self::Failed(e)
    }
}

/// What every step of a run is raced against: the shutdown future and, once taken, the loss
/// of the lease.
pub(super) struct Watch<'a, S> {
    shutdown: S,
    lease: Option<&'a Lease>,
}

impl<'a, S> Watch<'a, S>
where
    S: Future<Output = &'static str> + Clone,
{
    /// Before the lease: the signal only.
    pub(super) fn signal(shutdown: S) -> Self {
        Self {
            shutdown,
            lease: None,
        }
    }

    /// With the lease taken: its loss too.
    pub(super) fn with_lease(&self, lease: &'a Lease) -> Self {
        Self {
            shutdown: self.shutdown.clone(),
            lease: Some(lease),
        }
    }

    /// One step of `stage`, to its end, unless a signal or the loss of the lease comes first:
    /// the one place a run answers either. The step is polled first: one that ends without
    /// waiting (a write to a memory bucket) is never cut short, so that a signal is answered
    /// where the run waits, as when the whole run was raced at once.
    pub(super) async fn run<T>(
        &self,
        stage: Stage,
        step: impl Future<Output = T>,
    ) -> Result<T, Stop> {
        let lost = async {
            match self.lease {
                Some(lease) => lease.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            t = step => Ok(t),
            signal = self.shutdown.clone() => Err(Stop::Interrupted { signal, stage }),
            lost = lost => Err(Stop::Failed(RunError::LeaseLost(lost))),
        }
    }

    /// [`Watch::run`] for a step that may fail.
    pub(super) async fn step<T, E>(
        &self,
        stage: Stage,
        step: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Stop>
    where
        RunError: From<E>,
    {
        self.run(stage, step)
            .await?
            .map_err(|e| Stop::Failed(RunError::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop says what the record's `error` said when it was a (status, message) pair.
    #[test]
    fn a_stop_gives_its_status_and_the_message_runs_have_always_recorded() {
        let stop = |signal, stage| Stop::Interrupted { signal, stage };
        assert_eq!(
            stop("SIGTERM", Stage::Train).to_string(),
            "interrupted by SIGTERM"
        );
        assert_eq!(
            stop("SIGINT", Stage::Evaluate).to_string(),
            "interrupted by SIGINT while evaluating"
        );
        assert_eq!(
            stop("SIGTERM", Stage::Quiet).to_string(),
            "interrupted by SIGTERM while waiting for uploads to settle; nothing was written"
        );
        assert_eq!(
            stop("SIGTERM", Stage::Gates).to_string(),
            "interrupted by SIGTERM before the lock was taken; nothing was written"
        );
        assert_eq!(
            stop("SIGTERM", Stage::Train).status(),
            RunStatus::Interrupted
        );
        let failed = Stop::from(RunError::JobFailed(Some("quota".to_owned())));
        assert_eq!(failed.to_string(), "the tuning job failed: quota");
        assert_eq!(failed.status(), RunStatus::Failed);
    }

    /// The signal during a step stops it, naming the stage; a step that ends first gives its
    /// result.
    #[tokio::test]
    async fn a_watched_step_gives_its_result_or_the_stage_it_was_stopped_in() {
        let watch = Watch::signal(futures::FutureExt::shared(std::future::ready("SIGTERM")));
        let stopped = watch.run(Stage::Quiet, std::future::pending::<()>()).await;
        assert!(
            matches!(
                stopped,
                Err(Stop::Interrupted {
                    signal: "SIGTERM",
                    stage: Stage::Quiet
                })
            ),
            "{stopped:?}"
        );
        let quiet = Watch::signal(futures::FutureExt::shared(std::future::pending()));
        assert_eq!(quiet.run(Stage::Train, async { 7 }).await.unwrap(), 7);
    }
}
