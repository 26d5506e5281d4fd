//! The tune stage: find or submit the tuning job, record it in the lease and the run record
//! before following it (so whoever adopts it can finalise the run), then follow it; and
//! adoption, which follows a job an earlier run submitted and could not see to its end.

use chrono::Utc;

use crate::lease::Lease;
use crate::notify::Event;
use crate::record::{self, RunRecord};
use crate::status::RunStatus;
use crate::storage;
use crate::tuner::{Tuned, TuningMode, job};

use super::{
    Gates, Job, Outcome, Progress, RunError, Stage, Stop, Watch, hand_over_quietly, merge,
};

/// How the tune stage ended.
#[derive(Debug)]
pub enum Tuning {
    /// Submitted and left to a later run (`--detach`).
    Submitted { job: String },
    /// Followed to its end, successfully (a failed job is a [`RunError::JobFailed`]).
    Finished,
}

/// What the tune stage tunes: the datasets the build wrote.
pub(super) struct Datasets<'a> {
    pub(super) built: &'a crate::dataset::Built,
    /// What is tuned, as one digest ([`Job::dataset_digest`]): the run key.
    pub(super) digest: &'a str,
    pub(super) train_uri: &'a str,
    pub(super) validation_uri: Option<&'a str>,
}

/// The run's error for a job that ended badly, with Google's message when it gave one.
fn job_failed(tuned: &Tuned) -> RunError {
    RunError::JobFailed(
        tuned.model_details["error"]["message"]
            .as_str()
            .map(str::to_owned),
    )
}

impl Job {
    /// Writes the run's manifest (what the next run compares with) and claims the record's
    /// name beside it, for a run that started at `started`; returns the record's key and the
    /// manifest's URI ([`Progress::claimed`]).
    pub(super) async fn claim_record(
        &self,
        gates: &Gates,
        built: &crate::dataset::Built,
        started: chrono::DateTime<Utc>,
    ) -> Result<(String, Option<String>), RunError> {
        let previous = gates
            .comparison
            .as_ref()
            .map(crate::delta::Comparison::carried)
            .unwrap_or_default();
        let manifest =
            crate::delta::encode(&gates.inventory.samples, &built.outcomes, &previous).await;
        let (meta_key, manifest_key) = record::claim_names(
            &*self.store,
            &self.config.model_meta_folder,
            started,
            Some(manifest),
        )
        .await?;
        Ok((meta_key, manifest_key.map(|k| self.store.uri(&k))))
    }

    /// Claims the record, submits (or finds) the job, names it in the lease and the record,
    /// and follows it; each step watched, its result written into `run` as it returns.
    pub(super) async fn tune<S>(
        &self,
        run: &mut Progress,
        watch: &Watch<'_, S>,
        gates: &Gates,
        datasets: Datasets<'_>,
        lease: &Lease,
        detach: bool,
    ) -> Result<Tuning, Stop>
    where
        S: std::future::Future<Output = &'static str> + Clone,
    {
        // The manifest and the record's name exist before the job does, so that whoever adopts
        // the job can finalise this run.
        let started = run.record.training_start_time;
        let claimed = watch
            .step(
                Stage::Train,
                self.claim_record(gates, datasets.built, started),
            )
            .await?;
        let meta_key = claimed.0.clone();
        run.claimed(claimed);
        // The run key is the digest of what goes into the files (and the job's settings): the
        // same datasets tuned the same way are the same job.
        let run_key = datasets.digest.to_owned();
        let mut request = job::Request::build(
            &self.config.request,
            &run.record.run_id,
            &run_key,
            datasets.train_uri,
            datasets.validation_uri,
        );
        if let Some(parent) = watch
            .step(
                Stage::Train,
                self.continue_from_baseline(&mut request, gates),
            )
            .await?
        {
            merge(&mut run.record.model_details, &parent);
        }
        merge(
            &mut run.record.model_details,
            &serde_json::json!({ "request": request }),
        );

        let (name, submitted) = watch
            .step(Stage::Train, self.find_or_submit(&request))
            .await?;
        // The job exists and is paid for: before anything else (a notice may take a minute, a
        // SIGTERM may come meanwhile), the lease and the record name it, so that whoever comes
        // next adopts it instead of tuning again. The lease first: it is what adoption reads.
        run.job = Some(name.clone());
        run.record.status = RunStatus::Running;
        merge(
            &mut run.record.model_details,
            &serde_json::json!({ "tuning_job": name }),
        );
        let record = run.record.clone();
        watch
            .step(Stage::Train, lease.attach_job(&name, &meta_key))
            .await?;
        watch
            .step(
                Stage::Train,
                record::write(&*self.store, &meta_key, &record),
            )
            .await?;
        if submitted {
            self.notify(
                Event::Submitted,
                &record,
                serde_json::json!({ "tuning_job": name }),
            );
        }
        if detach {
            return Ok(Tuning::Submitted { job: name });
        }
        tracing::info!(job = %name, "following the tuning job");
        let tuned = watch.step(Stage::Train, self.tuner.follow(&name)).await?;
        run.job_ended = true;
        merge(&mut run.record.model_details, &tuned.model_details);
        run.record.status = tuned.status;
        self.notify_tuned(&run.record, &tuned);
        if tuned.status == RunStatus::Failed {
            return Err(job_failed(&tuned).into());
        }
        Ok(Tuning::Finished)
    }

    /// The job already created for this run key, or a new one; and whether it is new.
    async fn find_or_submit(&self, request: &job::Request) -> Result<(String, bool), RunError> {
        if let Some(existing) = self.tuner.find(&request.run_key).await? {
            tracing::info!(job = %existing, "re-attaching to the tuning job already created for this data");
            Ok((existing, false))
        } else {
            Ok((self.tuner.submit(request).await?, true))
        }
    }

    /// The notice of a job's end.
    fn notify_tuned(&self, record: &RunRecord, tuned: &Tuned) {
        let event = if tuned.status == RunStatus::Failed {
            Event::Failed
        } else {
            Event::Succeeded
        };
        self.notify(event, record, tuned.model_details.clone());
    }

    /// A parent for continuous tuning must live in LOCATION (or its jurisdiction's
    /// multi-region) and have a base model that Vertex still tunes (a tuned model retires with
    /// its base).
    pub(super) fn check_parent(&self, parent: &str, base: &str) -> Result<(), RunError> {
        let at = job::model_location(parent).unwrap_or("unknown");
        let here = &self.config.request.location;
        // A tuned Gemini 3 model may be named under the multi-region it is served on
        // (`locations/us` for a job in us-central1): that is where it lives too.
        let multi_region = crate::locations::jurisdiction(here) == Some(at);
        if at != here && !multi_region {
            return Err(RunError::ParentElsewhere {
                parent: parent.to_owned(),
                location: self.config.request.location.clone(),
            });
        }
        let base = self.config.table.resolve(base);
        match base.check_retirement("SOURCE_MODEL", self.config.today) {
            Ok(Some(warning)) => tracing::warn!(parent, "the parent's base model: {warning}"),
            Ok(None) => {}
            Err(reason) => {
                return Err(RunError::ParentRetired {
                    parent: parent.to_owned(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// `TUNING_MODE=continuous`: tune the champion (with evaluation on), or the last successful
    /// run's model (with evaluation off), instead of SOURCE_MODEL. A candidate that was not
    /// blessed is never a parent. Returns what the record says of the parent (`parent_model`,
    /// `parent_checkpoint`), when there is one.
    async fn continue_from_baseline(
        &self,
        request: &mut job::Request,
        gates: &Gates,
    ) -> Result<Option<serde_json::Value>, RunError> {
        if self.config.tuning_mode != TuningMode::Continuous {
            return Ok(None);
        }
        let Some((parent, base, checkpoint)) = self.parent(gates).await? else {
            tracing::info!(
                "continuous tuning: no tuned model to start from yet, tuning SOURCE_MODEL"
            );
            return Ok(None);
        };
        self.check_parent(&parent, &base)?;
        tracing::info!(
            parent,
            checkpoint = checkpoint.as_deref().unwrap_or("the default"),
            "continuous tuning from {}",
            if self.config.evaluation.is_some() {
                "the champion"
            } else {
                "the last successful run's model"
            }
        );
        request.continue_from(&parent, checkpoint.as_deref());
        let mut details = serde_json::json!({ "parent_model": parent });
        if let Some(c) = &checkpoint {
            details["parent_checkpoint"] = serde_json::json!(c);
        }
        Ok(Some(details))
    }

    /// The model continuous tuning starts from, its base model, and its checkpoint (the
    /// champion's winning checkpoint). With evaluation on, the champion pointer decides (an
    /// unreadable pointer fails the run rather than tune from a guess); else the last
    /// successful run.
    pub(super) async fn parent(
        &self,
        gates: &Gates,
    ) -> Result<Option<(String, String, Option<String>)>, RunError> {
        if self.config.evaluation.is_some() {
            let current = crate::champion::read(&*self.store, &self.config.model_meta_folder)
                .await
                .map_err(|e| RunError::Champion(e.to_string()))?;
            return Ok(current.and_then(|c| {
                c.champion.tuned_vertex_model().map(|m| {
                    (
                        m.to_owned(),
                        c.champion.base_model.clone(),
                        c.champion.checkpoint.clone(),
                    )
                })
            }));
        }
        // The baseline may be a run that found nothing new: the parent is the last run that
        // tuned.
        let last_success = match gates.baseline.as_ref() {
            Some(b) if b.record.status == RunStatus::Success => Some(b.clone()),
            _ => record::latest(
                &*self.store,
                &self.config.model_meta_folder,
                &[RunStatus::Success],
            )
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the last successful run");
                None
            }),
        };
        Ok(last_success.and_then(|b| {
            b.record
                .tuned_model()
                .map(|m| (m.name, b.record.source_model, None))
        }))
    }

    /// The record of the run whose job is adopted, when it can be read.
    async fn adopted_record(&self, key: Option<&str>) -> Option<RunRecord> {
        match storage::get_bytes(&*self.store, key?, 16 * 1024 * 1024).await {
            Ok(b) => serde_json::from_slice::<RunRecord>(&b).ok(),
            Err(e) => {
                tracing::warn!(error = %e, "the adopted run's record is unreadable; starting a new one");
                None
            }
        }
    }

    /// The record of an adopted run that wrote none: killed after its lease named the job,
    /// before its record did. The manifest it claimed beside the record's name is what the
    /// next runs compare against.
    async fn record_anew(
        &self,
        run_id: &str,
        record_key: Option<&str>,
        started: chrono::DateTime<Utc>,
    ) -> RunRecord {
        RunRecord {
            status: RunStatus::Running,
            training_start_time: started,
            run_id: run_id.to_owned(),
            tuner: self.tuner.kind().name().to_owned(),
            manifest_uri: match record_key {
                Some(key) => record::manifest_beside(&*self.store, key).await,
                None => None,
            },
            ..RunRecord::empty()
        }
    }

    /// Follows a tuning job that a previous run submitted and could not see to its end (it was
    /// killed, timed out, stopped by SIGTERM, or detached), and finalises that run's record.
    /// With `detach`, the job is looked at once: a job still running is handed on to a later
    /// run (the schedule), so a scheduled execution never lives as long as the tuning.
    pub(super) async fn adopt<S>(&self, lease: Lease, watch: &Watch<'_, S>, detach: bool) -> Outcome
    where
        S: std::future::Future<Output = &'static str> + Clone,
    {
        let held = lease.record().await;
        let (job, record_key) = held
            .pending_job()
            .expect("adopt is called with a pending job");
        let job = job.to_owned();
        let record_key = record_key.map(str::to_owned);
        let previous = match watch
            .run(Stage::Adopt, self.adopted_record(record_key.as_deref()))
            .await
        {
            Ok(r) => r,
            // Nothing done yet: the job passes on with the lease, as it came.
            Err(stop) => {
                let reason = match stop {
                    Stop::Interrupted { signal, .. } => format!(
                        "interrupted by {signal} before adopting tuning job {job}; the next run adopts it"
                    ),
                    Stop::Failed(ref e) => e.to_string(),
                };
                tracing::info!("{reason}");
                hand_over_quietly(lease).await;
                return Outcome::new(stop.status(), reason);
            }
        };
        let started = previous
            .as_ref()
            .map_or_else(Utc::now, |r| r.training_start_time);
        let record = match previous {
            Some(r) => r,
            None => {
                self.record_anew(&held.run_id, record_key.as_deref(), started)
                    .await
            }
        };
        tracing::info!(job = %job, run_id = %record.run_id, "adopting the tuning job of an earlier run");
        let mut run = Progress {
            record,
            meta_key: record_key,
            job: Some(job.clone()),
            eval_set: None,
            job_ended: false,
        };
        let result = {
            let watch = watch.with_lease(&lease);
            Box::pin(self.finish_adopted(&mut run, &watch, &job, detach)).await
        };
        let mut outcome = self.finish(&mut run, result, started, lease).await;
        outcome.reason = format!(
            "adopted tuning job {job} of run {}: {}",
            run.record.run_id, outcome.reason
        );
        outcome
    }

    /// Looks at (`detach`) or follows the adopted job and, when it succeeded, judges its
    /// candidate (resuming stored answers); each step watched.
    async fn finish_adopted<S>(
        &self,
        run: &mut Progress,
        watch: &Watch<'_, S>,
        job: &str,
        detach: bool,
    ) -> Result<(), Stop>
    where
        S: std::future::Future<Output = &'static str> + Clone,
    {
        let looked = async {
            if detach {
                self.tuner.check(job).await
            } else {
                self.tuner.follow(job).await.map(Some)
            }
        };
        let looked = watch.step(Stage::Train, looked).await;
        // A job still running, or whose follow was interrupted, passes on with the lease.
        run.job_ended = !matches!(looked, Ok(None) | Err(Stop::Interrupted { .. }));
        match looked? {
            None => {
                tracing::info!(job = %job, "the tuning job still runs; a later run follows it");
                run.record.status = RunStatus::Running;
                Ok(())
            }
            Some(tuned) => {
                merge(&mut run.record.model_details, &tuned.model_details);
                run.record.status = tuned.status;
                run.record.error = None;
                // Only a job seen to end is announced (not one whose follow was interrupted,
                // or failed to be followed).
                self.notify_tuned(&run.record, &tuned);
                if tuned.status == RunStatus::Failed {
                    return Err(job_failed(&tuned).into());
                }
                if matches!(run.record.status, RunStatus::Success | RunStatus::DryRun) {
                    Box::pin(self.judge_into(run, watch)).await?;
                }
                Ok(())
            }
        }
    }
}
