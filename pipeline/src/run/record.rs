//! The record stage: the run record a run starts with, and the end of every run that took the
//! lease: the record written (with the error, if any) and the lock freed, or handed over with a
//! job still running.

use chrono::{DateTime, Utc};

use crate::lease::Lease;
use crate::record::{self, Counts, RunRecord};
use crate::status::RunStatus;

use super::{Gates, Job, Outcome, Progress, Stop};

/// The deadline of each of a run's last writes (its record, naming it included; the lock's
/// release), so that a run ends within Cloud Run's 10 s after SIGTERM even when the bucket
/// does not answer: two of them and [`super::cycles::SIGNAL_DRAIN`] for the notices.
pub(super) const LAST_WRITE: std::time::Duration = std::time::Duration::from_secs(3);

/// Counts the inventory already knows.
pub(super) fn counts_of(inv: &crate::inventory::Inventory) -> Counts {
    Counts {
        pairs: inv.samples.len() as u64,
        // Stems with too many candidates; unlistable names and special files are rejects of
        // their own categories.
        ambiguous: inv
            .ambiguous
            .iter()
            .filter(|a| a.category == crate::sample::Category::Ambiguous)
            .count() as u64,
        unpaired_raw: inv.unpaired_raw,
        unpaired_labels: inv.unpaired_labels,
        ignored: inv.ignored,
        ..Counts::default()
    }
}

impl Job {
    pub(super) async fn initial_record(
        &self,
        run_id: &str,
        gates: &Gates,
        started: DateTime<Utc>,
        lease: &Lease,
    ) -> RunRecord {
        let c = &self.config;
        RunRecord {
            status: RunStatus::Failed,
            sample_size: gates.inventory.samples.len() as u64,
            previous_sample_size: gates.baseline.as_ref().map_or(0, |b| b.record.sample_size),
            sample_delta: gates.delta,
            training_start_time: started,
            trigger_bucket: c.trigger.bucket.clone(),
            trigger_object: c.trigger.object.clone(),
            trigger_generation: c.trigger.generation.clone(),
            trigger_event_id: c.trigger.event_id.clone(),
            run_id: run_id.to_owned(),
            tuner: self.tuner.kind().name().to_owned(),
            source_model: c.request.source_model.clone(),
            counts: counts_of(&gates.inventory),
            split_ratio: Some(c.split_ratio),
            resplit: c.resplit,
            lock_generation: Some(lease.generation().await),
            baseline_run_id: gates.baseline.as_ref().map(|b| b.record.run_id.clone()),
            unpaired_examples: gates.inventory.unpaired_examples.clone(),
            quiet_wait_seconds: gates.quiet.as_ref().map(super::Quiet::waited_seconds),
            quiet_end: gates.quiet.as_ref().map(|q| q.end.as_str().to_owned()),
            quiet_reason: gates.quiet.as_ref().map(|q| q.reason.clone()),
            ..RunRecord::empty()
        }
    }

    /// Writes the run's record under its claimed name (claiming one if the run has none yet),
    /// within [`LAST_WRITE`]. `Err`: the object (or the folder, when no name could be claimed)
    /// and why.
    async fn write_record(
        &self,
        run: &Progress,
        started: DateTime<Utc>,
    ) -> Result<String, (String, String)> {
        let folder = self
            .store
            .uri(&crate::storage::join(&self.config.model_meta_folder, ""));
        let write = async {
            let key = match &run.meta_key {
                Some(k) => k.clone(),
                None => {
                    record::claim_names(&*self.store, &self.config.model_meta_folder, started, None)
                        .await
                        .map_err(|e| (folder.clone(), e.to_string()))?
                        .0
                }
            };
            let uri = self.store.uri(&key);
            record::write(&*self.store, &key, &run.record)
                .await
                .map_err(|e| (uri, e.to_string()))
        };
        match tokio::time::timeout(LAST_WRITE, write).await {
            Ok(r) => r,
            Err(_) => Err((
                run.meta_key
                    .as_deref()
                    .map_or_else(|| folder.clone(), |k| self.store.uri(k)),
                format!("no answer within {} s", LAST_WRITE.as_secs()),
            )),
        }
    }

    /// Writes the record, and frees the lock, handing a still-running job over to the next run.
    pub(super) async fn finish(
        &self,
        run: &mut Progress,
        result: Result<(), Stop>,
        started: DateTime<Utc>,
        lease: Lease,
    ) -> Outcome {
        let record = &mut run.record;
        let end = Utc::now();
        if let Err(stop) = result {
            let status = stop.status();
            tracing::error!(run_id = %record.run_id, status = status.as_str(), "run ended: {stop}");
            record.status = status;
            record.error = Some(stop.to_string());
        }
        // A job that has not ended passes on with the lease (also when the run failed after
        // submitting it, say on its record): the next run adopts it rather than tune again.
        // An interrupted run hands its job over even when the job ended: the next run then
        // finishes judging its candidate.
        let job_pending = run.job.is_some()
            && match record.status {
                RunStatus::Running | RunStatus::Interrupted => true,
                RunStatus::Failed => !run.job_ended,
                _ => false,
            };
        if !job_pending {
            record.training_end_time = Some(end);
            record.training_duration_seconds = Some((end - started).num_seconds());
        }
        let written = self.write_record(run, started).await;
        let record = &mut run.record;
        let metadata_uri = match written {
            Ok(uri) => Some(uri),
            Err((object, why)) => {
                // The record is the run's account of itself: a run without one failed, whatever
                // it did, and says what the record would have said.
                let said = Outcome::of_record(record, None).reason;
                let what = if object.ends_with('/') {
                    format!("the run record under {object}")
                } else {
                    format!("the run record {object}")
                };
                let error = format!(
                    "{what} could not be written: {why}; it would have said: {} ({said})",
                    record.status.as_str()
                );
                tracing::error!(run_id = %record.run_id, "{error}");
                if record.status != RunStatus::Interrupted {
                    record.status = RunStatus::Failed;
                }
                record.error = Some(error);
                None
            }
        };
        let release = async {
            if job_pending {
                lease.hand_over().await
            } else {
                lease.release().await
            }
        };
        // A short deadline of its own: Cloud Run kills the task 10 s after SIGTERM, and a lock
        // that cannot be released expires anyway.
        let released = tokio::time::timeout(LAST_WRITE, release)
            .await
            .unwrap_or_else(|_| {
                Err(crate::storage::StoreError::Io {
                    uri: self.store.uri(&self.lock_key()),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", LAST_WRITE.as_secs()),
                    ),
                })
            });
        match released {
            Ok(()) if job_pending => {
                tracing::info!("run lock released; the next run adopts the tuning job");
            }
            Ok(()) => tracing::info!("run lock released"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the run lock; it expires on its own");
            }
        }
        tracing::info!(
            run_id = %record.run_id,
            status = record.status.as_str(),
            metadata = metadata_uri.as_deref().unwrap_or("not written"),
            "run finished"
        );
        Outcome::of_record(record, metadata_uri)
    }
}

impl Job {
    /// `autotune history`: the last `limit` run records, newest first. The binary makes them
    /// the rows of its table (`summary::history`: the summary is listed after the run in
    /// lib.rs's map, so the run does not import it).
    pub async fn history(
        &self,
        limit: usize,
    ) -> Result<Vec<RunRecord>, crate::storage::StoreError> {
        let records = record::all(&*self.store, &self.config.model_meta_folder, limit).await?;
        Ok(records.into_iter().map(|s| s.record).collect())
    }
}
