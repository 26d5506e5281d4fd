//! The tune stage: find or submit the tuning job, record it in the lease and the run record
//! before following it (so whoever adopts it can finalise the run), then follow it; and
//! adoption, which follows a job an earlier run submitted and could not see to its end.

use std::future::Future;

use chrono::Utc;
use tokio::sync::Mutex;

use crate::lease::Lease;
use crate::notify::Event;
use crate::record::{self, RunRecord};
use crate::status::RunStatus;
use crate::storage;
use crate::tuner::{Tuned, TuningMode, job};

use super::{Gates, Job, Outcome, RunError, State, Stop, hand_over_quietly, merge};

/// How the tune stage ended.
#[derive(Debug)]
pub enum Tuning {
    /// Submitted and left to a later run (`--detach`).
    Submitted { job: String },
    /// Followed to its end, successfully (a failed job is a [`RunError::JobFailed`]).
    Finished,
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
    /// name beside it; returns the record's key.
    pub(super) async fn claim_record(
        &self,
        gates: &Gates,
        built: &crate::dataset::Built,
        state: &Mutex<State>,
    ) -> Result<String, RunError> {
        let previous = gates
            .comparison
            .as_ref()
            .map(crate::delta::Comparison::carried)
            .unwrap_or_default();
        let manifest =
            crate::delta::encode(&gates.inventory.samples, &built.outcomes, &previous).await;
        let started = state.lock().await.record.training_start_time;
        let (meta_key, manifest_key) = record::claim_names(
            &*self.store,
            &self.config.model_meta_folder,
            started,
            Some(manifest),
        )
        .await?;
        let mut st = state.lock().await;
        st.record.manifest_uri = manifest_key.map(|k| self.store.uri(&k));
        st.meta_key = Some(meta_key.clone());
        Ok(meta_key)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn tune(
        &self,
        run_id: &str,
        gates: &Gates,
        built: &crate::dataset::Built,
        digest: &str,
        train_uri: &str,
        validation_uri: Option<&str>,
        state: &Mutex<State>,
        lease: &Lease,
        detach: bool,
    ) -> Result<Tuning, RunError> {
        // The manifest and the record's name exist before the job does, so that whoever adopts
        // the job can finalise this run.
        let meta_key = self.claim_record(gates, built, state).await?;
        // The run key is the digest of what goes into the files (and the job's settings): the
        // same datasets tuned the same way are the same job.
        let run_key = digest.to_owned();
        let mut request = job::Request::build(
            &self.config.request,
            run_id,
            &run_key,
            train_uri,
            validation_uri,
        );
        self.continue_from_baseline(&mut request, gates, state)
            .await?;
        merge(
            &mut state.lock().await.record.model_details,
            &serde_json::json!({ "request": request }),
        );

        let (name, submitted) = if let Some(existing) = self.tuner.find(&request.run_key).await? {
            tracing::info!(job = %existing, "re-attaching to the tuning job already created for this data");
            (existing, false)
        } else {
            (self.tuner.submit(&request).await?, true)
        };
        // The job exists and is paid for: before anything else (a notice may take a minute, a
        // SIGTERM may come meanwhile), the lease and the record name it, so that whoever comes
        // next adopts it instead of tuning again. The lease first: it is what adoption reads.
        let record = {
            let mut st = state.lock().await;
            st.job = Some(name.clone());
            st.record.status = RunStatus::Running;
            merge(
                &mut st.record.model_details,
                &serde_json::json!({ "tuning_job": name }),
            );
            st.record.clone()
        };
        lease.attach_job(&name, &meta_key).await?;
        record::write(&*self.store, &meta_key, &record).await?;
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
        let tuned = self.tuner.follow(&name).await?;
        let record = {
            let mut st = state.lock().await;
            st.job_ended = true;
            merge(&mut st.record.model_details, &tuned.model_details);
            st.record.status = tuned.status;
            st.record.clone()
        };
        self.notify_tuned(&record, &tuned);
        if tuned.status == RunStatus::Failed {
            return Err(job_failed(&tuned));
        }
        Ok(Tuning::Finished)
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
    /// blessed is never a parent.
    async fn continue_from_baseline(
        &self,
        request: &mut job::Request,
        gates: &Gates,
        state: &Mutex<State>,
    ) -> Result<(), RunError> {
        if self.config.tuning_mode != TuningMode::Continuous {
            return Ok(());
        }
        match self.parent(gates).await? {
            Some((parent, base, checkpoint)) => {
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
                merge(&mut state.lock().await.record.model_details, &details);
            }
            None => {
                tracing::info!(
                    "continuous tuning: no tuned model to start from yet, tuning SOURCE_MODEL"
                );
            }
        }
        Ok(())
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
    pub(super) async fn adopt(
        &self,
        lease: Lease,
        shutdown: impl Future<Output = &'static str>,
        detach: bool,
    ) -> Outcome {
        let held = lease.record().await;
        let (job, record_key) = held
            .pending_job()
            .expect("adopt is called with a pending job");
        let job = job.to_owned();
        let record_key = record_key.map(str::to_owned);
        let mut shutdown = std::pin::pin!(shutdown);
        let previous = tokio::select! {
            r = self.adopted_record(record_key.as_deref()) => r,
            // Nothing done yet: the job passes on with the lease, as it came.
            signal = &mut shutdown => {
                let reason = format!(
                    "interrupted by {signal} before adopting tuning job {job}; the next run adopts it"
                );
                tracing::info!("{reason}");
                hand_over_quietly(lease).await;
                return Outcome::new(RunStatus::Interrupted, reason);
            }
        };
        let started = previous
            .as_ref()
            .map_or_else(Utc::now, |r| r.training_start_time);
        let mut record = match previous {
            Some(r) => r,
            None => {
                self.record_anew(&held.run_id, record_key.as_deref(), started)
                    .await
            }
        };
        tracing::info!(job = %job, run_id = %record.run_id, "adopting the tuning job of an earlier run");
        let looked = async {
            if detach {
                self.tuner.check(&job).await
            } else {
                self.tuner.follow(&job).await.map(Some)
            }
        };
        let mut saw_end = false;
        let result = tokio::select! {
            r = looked => match r {
                Ok(None) => {
                    tracing::info!(job = %job, "the tuning job still runs; a later run follows it");
                    record.status = RunStatus::Running;
                    Ok(())
                }
                Ok(Some(tuned)) => {
                    saw_end = true;
                    merge(&mut record.model_details, &tuned.model_details);
                    record.status = tuned.status;
                    record.error = None;
                    if tuned.status == RunStatus::Failed {
                        Err(Stop::Failed(job_failed(&tuned)))
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(Stop::Failed(e.into())),
            },
            signal = &mut shutdown => Err(Stop::Interrupted { signal, during: None }),
            lost = lease.lost() => Err(Stop::Failed(RunError::LeaseLost(lost))),
        };
        // Only a job seen to end is announced (not one whose follow was interrupted, or
        // failed to be followed).
        if saw_end {
            let tuned = Tuned {
                status: record.status,
                model_details: record.model_details.clone(),
            };
            self.notify_tuned(&record, &tuned);
        }
        let state = Mutex::new(State {
            record,
            meta_key: record_key,
            job: Some(job.clone()),
            eval_set: None,
            // A job still running, or whose follow was interrupted, passes on with the lease.
            job_ended: !matches!(result, Ok(()) | Err(Stop::Interrupted { .. })) || saw_end,
        });
        // A job that succeeded: its candidate is judged now (resuming stored answers).
        let mut result = result;
        let succeeded = matches!(
            state.lock().await.record.status,
            RunStatus::Success | RunStatus::DryRun
        );
        if result.is_ok() && succeeded {
            tokio::select! {
                () = Box::pin(self.judge(&state)) => {}
                signal = &mut shutdown => {
                    result = Err(Stop::Interrupted { signal, during: Some("while evaluating") });
                }
                lost = lease.lost() => {
                    result = Err(Stop::Failed(RunError::LeaseLost(lost)));
                }
            }
        }
        let mut state = state.into_inner();
        let mut outcome = self.finish(&mut state, result, started, lease).await;
        outcome.reason = format!(
            "adopted tuning job {job} of run {}: {}",
            state.record.run_id, outcome.reason
        );
        outcome
    }
}
