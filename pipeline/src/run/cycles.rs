//! Follow-up cycles: when a run ends, the same execution lists again and, if gate 3 passes
//! against the new baseline, runs again, with its own run id and record. Uploads that arrive
//! while a run builds or tunes (every event then answered `already_running` by the trigger) are
//! trained without waiting for another upload.
//!
//! ```text
//!  cycle 1   run (or adopt a pending job)                 ── no lease taken ─▶ stop
//!  cycle n   interrupted? detached (job left running)? MAX_CYCLES reached?
//!            TASK_DEADLINE closer than the longest cycle so far?            ── yes ─▶ stop
//!            run again: gate 3 against the new baseline   ── waiting ─▶ stop (nothing written)
//! ```
//!
//! A cycle after a failed one runs only if the inputs changed since: a failure that depends on
//! the data (rejects, budget) would repeat. SIGTERM between cycles ends the loop; during a
//! cycle, the run handles it as always. The stdout object keeps the last cycle's outcome at its
//! top level and lists every cycle in `cycles`.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::status::RunStatus;

use super::{FirstLook, Job, ListingDigest, Outcome};

/// The longest the execution waits for its queued notices at the end, TASK_DEADLINE allowing.
const DRAIN: Duration = Duration::from_secs(60);
/// The same after SIGTERM: with the record and the lock's release
/// ([`super::record::LAST_WRITE`] each), well inside Cloud Run's 10 s.
pub(super) const SIGNAL_DRAIN: Duration = Duration::from_secs(1);

/// A cycle that failed, and the inputs it failed on.
pub(super) struct Retry {
    pub run_id: String,
    pub inputs: ListingDigest,
}

/// What `autotune run` prints: the last cycle's outcome at the top level (as a single run
/// printed it), every cycle in `cycles`, and why no further cycle ran.
#[derive(Debug, Clone, Serialize)]
pub struct Cycles {
    #[serde(flatten)]
    pub last: Outcome,
    /// Every cycle, in order: runs that took the lease, and a first cycle that did not.
    pub cycles: Vec<Outcome>,
    /// Why the execution stopped cycling.
    pub cycles_stopped: String,
}

impl Cycles {
    /// The process's exit code: 1 if any cycle failed or was interrupted.
    pub fn exit_code(&self) -> i32 {
        self.cycles
            .iter()
            .map(|o| o.status.exit_code())
            .max()
            .unwrap_or(0)
    }
}

impl Job {
    /// `autotune run`: runs, then runs again while gate 3 passes, up to MAX_CYCLES and while
    /// the time left before TASK_DEADLINE holds the longest cycle so far.
    pub async fn run_cycles(
        &self,
        shutdown: impl Future<Output = &'static str>,
        detach: bool,
    ) -> Cycles {
        Box::pin(self.run_cycles_after(FirstLook::default(), shutdown, detach)).await
    }

    /// [`Job::run_cycles`], the first cycle starting from what [`Job::check_against_last_run`]
    /// just read.
    pub async fn run_cycles_after(
        &self,
        first: FirstLook,
        shutdown: impl Future<Output = &'static str>,
        detach: bool,
    ) -> Cycles {
        let mut first = Some(first);
        let shutdown = shutdown.shared();
        let start = Instant::now();
        let deadline = self.config.task_deadline.map(|d| start + d);
        *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = deadline;
        let max = self.config.max_cycles.max(1);
        let mut cycles: Vec<Outcome> = Vec::new();
        let mut worked = 0_u32;
        let mut longest = Duration::ZERO;
        let mut retry: Option<Retry> = None;
        let stopped = loop {
            let began = Instant::now();
            let first = first.take().unwrap_or_default();
            let mut outcome =
                Box::pin(self.cycle(shutdown.clone(), detach, retry.as_ref(), first)).await;
            let took = began.elapsed();
            let Some(run_id) = outcome.run_id.clone() else {
                // No lease taken: nothing (more) to do now.
                let reason = outcome.reason.clone();
                if cycles.is_empty()
                    || matches!(outcome.status, RunStatus::Failed | RunStatus::Interrupted)
                {
                    cycles.push(outcome);
                }
                break reason;
            };
            worked += 1;
            longest = longest.max(took);
            let status = outcome.status;
            retry = match (status, outcome.inputs.take()) {
                (RunStatus::Failed, Some(inputs)) => Some(Retry { run_id, inputs }),
                _ => None,
            };
            cycles.push(outcome);
            if let Some(signal) = shutdown.clone().now_or_never() {
                break format!("interrupted by {signal}");
            }
            match status {
                RunStatus::Interrupted => break "the run was interrupted".to_owned(),
                RunStatus::Running => {
                    break "detached: the tuning job runs on; the next execution (an upload or the schedule) finalises it and trains what waits".to_owned();
                }
                // Listing again would find the same busy slots at once.
                RunStatus::Deferred => {
                    break "deferred: the project's tuning slots are busy; the next execution (an upload or the schedule) tries again".to_owned();
                }
                _ => {}
            }
            if worked >= max {
                break format!(
                    "MAX_CYCLES ({max}) reached; the next upload or the schedule starts the next run"
                );
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < longest {
                    break format!(
                        "TASK_DEADLINE: {} left, less than the longest cycle so far ({}); the next upload or the schedule starts the next run",
                        humantime::format_duration(round(left)),
                        humantime::format_duration(round(longest))
                    );
                }
            }
            tracing::info!(
                cycle = worked + 1,
                max_cycles = max,
                "listing again for data that arrived during the run"
            );
        };
        tracing::info!(cycles = cycles.len(), "{stopped}");
        self.drain_notices(shutdown, deadline).await;
        let last = cycles
            .last()
            .cloned()
            .expect("the first cycle is always listed");
        Cycles {
            last,
            cycles,
            cycles_stopped: stopped,
        }
    }
}

impl Job {
    /// Waits for the notices still queued: at most [`DRAIN`], never past TASK_DEADLINE, and
    /// [`SIGNAL_DRAIN`] once SIGTERM has come (before or during the wait).
    async fn drain_notices<S>(&self, shutdown: S, deadline: Option<Instant>)
    where
        S: Future<Output = &'static str> + Clone,
    {
        if shutdown.clone().now_or_never().is_some() {
            self.notifier.flush(SIGNAL_DRAIN).await;
            return;
        }
        let limit = deadline.map_or(DRAIN, |d| {
            d.saturating_duration_since(Instant::now()).min(DRAIN)
        });
        tokio::select! {
            () = self.notifier.flush(limit) => {}
            _ = shutdown => {
                tracing::warn!("stopped waiting for notices to be delivered: the process was asked to stop");
            }
        }
    }
}

/// A duration to the second, for messages.
fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
