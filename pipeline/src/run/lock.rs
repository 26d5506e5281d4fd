//! Gate 1, the lock: the look at the last run and the lock before anything is listed
//! (`check_against_last_run`), taking the lease once gates 2 and 3 passed (`take_lock`), and
//! settling it (the housekeeping and the re-check of gate 3 while the build's first reads go
//! on, `settle_lock`). Each step is watched ([`super::stop`]): a signal before the lock is
//! taken says where the run was.

use std::future::Future;

use crate::lease::{self, Acquired, Lease};
use crate::status::RunStatus;
use crate::storage::StoreError;
use crate::tuner::TuningMode;

use super::{FirstLook, Gates, Job, Lock, Outcome, Stage, Stop, Watch, cycles, gates};

impl Job {
    /// Once the lock is taken: the housekeeping before the run's own work and, unless the
    /// run adopts a job (`gates` is `None`), gate 3 again (a run that finished between our look
    /// and our lock moved the baseline), at once, watched like all that follows (a bucket that
    /// stops answering here must not keep the process past SIGTERM); `meanwhile` is driven
    /// along.
    pub(super) async fn settle_lock<S, F>(
        &self,
        gates: Option<&mut Gates>,
        mut meanwhile: std::pin::Pin<&mut F>,
        watch: &Watch<'_, S>,
    ) -> Result<Option<Result<Option<String>, StoreError>>, Stop>
    where
        S: Future<Output = &'static str> + Clone,
        F: Future<Output = ()>,
    {
        let prelude = async {
            self.clean_up().await;
            self.repair_champion_alias().await;
        };
        let recheck = async {
            match gates {
                Some(g) => Some(self.recheck(g).await),
                None => None,
            }
        };
        let mut looks = std::pin::pin!(futures::future::join(prelude, recheck));
        let looks = std::future::poll_fn(|cx| {
            let _ = meanwhile.as_mut().poll(cx);
            looks.as_mut().poll(cx)
        });
        let ((), rechecked) = watch.run(Stage::Settle, looks).await?;
        Ok(rechecked)
    }

    /// What the settings must agree with in the bucket, checked before any work (the binary
    /// exits 2 on it), from one read of the last run's record:
    /// * a split other than the last run's is refused unless RESPLIT is set: a new ratio or
    ///   seed moves samples between sides, and a sample that trained would then validate
    ///   (content that validated stays there in any case, see `delta`);
    /// * in continuous mode, the parent the run would start from must be in LOCATION, on a base
    ///   model Vertex still tunes.
    ///
    /// A bucket that cannot be read is the run's failure to report, not a bad setting. The lock
    /// is looked at meanwhile: what both reads found is the first cycle's to use
    /// ([`Job::run_cycles_after`]), so that it does not read them again one after the other.
    pub async fn check_against_last_run(&self) -> Result<FirstLook, String> {
        let continuous = self.config.tuning_mode == TuningMode::Continuous;
        let latest = |statuses| {
            crate::record::latest(&*self.store, &self.config.model_meta_folder, statuses)
        };
        let read = !self.config.resplit || continuous;
        let (lock, baseline) = tokio::join!(self.look_at_lock(), async {
            if read {
                Some(latest(self.baseline_statuses()).await)
            } else {
                None
            }
        });
        let first = FirstLook {
            lock: Some(lock),
            baseline: match &baseline {
                Some(Ok(b)) => gates::Baseline::Read(b.clone().map(Box::new)),
                _ => gates::Baseline::Unread,
            },
        };
        let Some(Ok(Some(b))) = baseline else {
            return Ok(first);
        };
        if !self.config.resplit {
            self.check_split(&b.record)?;
        }
        if continuous && self.config.evaluation.is_some() {
            if let Ok(Some(c)) =
                crate::champion::read(&*self.store, &self.config.model_meta_folder).await
                && let Some(parent) = c.champion.tuned_vertex_model()
            {
                self.check_parent(parent, &c.champion.base_model)
                    .map_err(|e| e.to_string())?;
            }
        } else if continuous {
            let last_success = if b.record.status == RunStatus::Success {
                Some(b)
            } else {
                latest(&[RunStatus::Success]).await.ok().flatten()
            };
            if let Some(last) = last_success
                && let Some(parent) = last.record.tuned_model()
            {
                self.check_parent(&parent.name, &last.record.source_model)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(first)
    }

    pub(super) fn check_split(&self, last: &crate::record::RunRecord) -> Result<(), String> {
        if let Some(ratio) = last.split_ratio
            && (ratio - self.config.split_ratio).abs() > f64::EPSILON
        {
            return Err(format!(
                "SPLIT_RATIO {} differs from the last run's ({ratio}, run {}): samples would change sides and trained ones could validate; keep it, or pass --resplit (RESPLIT=true) to accept a new split",
                self.config.split_ratio, last.run_id
            ));
        }
        if let (Some(seed), Some(previous)) = (&self.config.split_seed, &last.split_seed)
            && seed != previous
        {
            return Err(format!(
                "SPLIT_SEED {seed:?} differs from the last run's ({previous:?}, run {}); keep it, or pass --resplit (RESPLIT=true) to accept a new split",
                last.run_id
            ));
        }
        Ok(())
    }

    /// Gates 1 to 3, then the lease: read-only until the lease is taken. `Err` is the outcome
    /// of a run that ends there. The gates are skipped when a pending job waits for adoption.
    pub(super) async fn take_lock<S>(
        &self,
        run_id: &str,
        watch: &Watch<'_, S>,
        retry: Option<&cycles::Retry>,
        first: FirstLook,
    ) -> Result<(Lease, Option<Gates>), Box<Outcome>>
    where
        S: Future<Output = &'static str> + Clone,
    {
        // Gate 1, read-only: do not even list when a run is in progress.
        let (lock, seen) = match first.lock {
            Some(looked) => looked,
            None => watch
                .run(Stage::Gates, self.look_at_lock())
                .await
                .map_err(|s| super::stopped_before_lock(&s))?,
        };
        let adopt = match lock {
            Lock::Free { pending_job } | Lock::Expired { pending_job, .. } => pending_job.is_some(),
            lock @ (Lock::Live(_) | Lock::Unreadable { .. } | Lock::Failed(_)) => {
                let o = Outcome::of_lock(&lock);
                tracing::info!("{}", o.reason);
                return Err(Box::new(o));
            }
        };
        let gates = if adopt {
            None
        } else {
            Some(Box::pin(self.gates_for_build(watch, retry, first.baseline)).await?)
        };
        // Gate 1, for real: on the lock object as the look found it, read again only if it
        // changed since.
        let (store, key, owner) = (self.store.clone(), self.lock_key(), lease::owner());
        let ttl = self.config.lease_duration;
        let acquire = async {
            match seen {
                Some(seen) => Lease::acquire_after(seen, store, &key, run_id, &owner, ttl).await,
                None => Lease::acquire(store, &key, run_id, &owner, ttl).await,
            }
        };
        let acquired = watch
            .run(Stage::Gates, acquire)
            .await
            .map_err(|s| super::stopped_before_lock(&s))?;
        match acquired {
            Ok(Acquired::Won(l)) => Ok((l, gates)),
            Ok(Acquired::Held(r)) => {
                let reason = format!("gate 1: run {} ({}) took the lock first", r.run_id, r.owner);
                tracing::info!("{reason}");
                Err(Box::new(Outcome::new(RunStatus::Skipped, reason)))
            }
            Err(e) => Err(Box::new(Outcome::failed(e.to_string()))),
        }
    }
}
