//! The job: three gates, then conversion, tuning and the run record.
//!
//! ```text
//!  gate 1 (peek)   lock live?                      ── yes ─▶ skipped   (nothing written)
//!  inventory       list raw + label folders, pair
//!  gate 2          pairs ≥ MIN_SAMPLES?            ── no ──▶ waiting   (nothing written)
//!  gate 3          new/changed since baseline ≥ MIN_SAMPLES?  ── no ──▶ waiting
//!  gate 1 (take)   create-only / compare-and-swap lease       ── lost ─▶ skipped
//!                  baseline moved meanwhile? re-check gate 3
//!  build           read ▶ convert (rayon) ▶ split ▶ stream train / val / rejected
//!  tune            Tuner (dry-run or Vertex)
//!  record          manifest + model_metadata_*.json, release the lease
//! ```
//! The gates are read-only until the lease is taken, so waiting and skipped runs write
//! nothing. Everything after the lease is raced against the shutdown future (SIGTERM, Ctrl-C)
//! and against loss of the lease; either way the run records why it stopped and frees the lock.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::convert::Converter;
use crate::dataset::{self, Paths};
use crate::inventory::{self, Inventory, Rules};
use crate::lease::{self, Acquired, Lease};
use crate::record::{self, Counts, RunRecord, RunStatus, Stored};
use crate::settings::{Settings, TunerKind};
use crate::split::{self, Side, Split};
use crate::storage::{self, Store, StoreError};
use crate::tuner::{Tuner, TunerError, job};

/// What `run` and `plan` print on stdout: one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: RunStatus,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub counts: Counts,
    pub sample_delta: u64,
    pub min_samples: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpaired_examples: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_dataset_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_dataset_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub model_details: serde_json::Value,
}

/// What `autotune plan` adds: the split a run would make now.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub lock: String,
    /// What the split would do, before conversion.
    pub would_train: u64,
    pub would_validate: u64,
    pub would_hold_out: u64,
    pub split_seed: String,
    /// The conversion, done in memory: examples, rejects by category with examples.
    pub built: dataset::Built,
    /// Tokens per example (histogram), totals for training and validation, billed tokens and
    /// cost; absent when the files break Vertex's rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::validate::Estimate>,
    /// Why a run would stop before tuning (rejects, Vertex's rules, budget), if it would.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Outcome {
    fn new(status: RunStatus, reason: impl Into<String>, min_samples: u64) -> Self {
        Self {
            status,
            reason: reason.into(),
            run_id: None,
            counts: Counts::default(),
            sample_delta: 0,
            min_samples,
            unpaired_examples: Vec::new(),
            metadata_uri: None,
            train_dataset_uri: None,
            validation_dataset_uri: None,
            rejected_uri: None,
            manifest_uri: None,
            baseline_run_id: None,
            plan: None,
            model_details: serde_json::Value::Null,
        }
    }
}

/// Errors that end a run after it passed the gates.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    #[error(transparent)]
    Tuner(#[from] TunerError),
    #[error("{0}")]
    Data(String),
}

pub struct Job {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub tuner: Arc<dyn Tuner>,
    /// Show progress bars (a terminal, text logs).
    pub progress: bool,
}

/// The gates' findings, shared by `run` and `plan`.
struct Gates {
    inventory: Inventory,
    baseline: Option<Stored>,
    delta: u64,
}

fn new_run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", Utc::now().format("%Y%m%d-%H%M%S"), &id[..6])
}

fn counts_of(inv: &Inventory) -> Counts {
    Counts {
        pairs: inv.samples.len() as u64,
        ambiguous: inv.ambiguous.len() as u64,
        unpaired_raw: inv.unpaired_raw,
        unpaired_labels: inv.unpaired_labels,
        ignored: inv.ignored,
        ..Counts::default()
    }
}

impl Job {
    fn meta_folder(&self) -> &str {
        &self.settings.model_meta_folder
    }

    fn lock_key(&self) -> String {
        lease::lock_key(self.meta_folder())
    }

    /// Which past runs count as a baseline: a dry run stands in for a real one only for dry
    /// runs, so rehearsing on a bucket never makes a real run wait.
    fn baseline_statuses(&self) -> &'static [RunStatus] {
        if self.tuner.name() == "dry-run" {
            &[RunStatus::Success, RunStatus::DryRun]
        } else {
            &[RunStatus::Success]
        }
    }

    fn wait(&self, reason: String, gates: &Gates) -> Outcome {
        let mut o = Outcome::new(RunStatus::Waiting, reason, self.settings.min_samples);
        o.counts = counts_of(&gates.inventory);
        o.sample_delta = gates.delta;
        o.unpaired_examples
            .clone_from(&gates.inventory.unpaired_examples);
        o.baseline_run_id = gates.baseline.as_ref().map(|b| b.record.run_id.clone());
        o
    }

    async fn delta_against(
        &self,
        inv: &Inventory,
        baseline: Option<&Stored>,
    ) -> Result<u64, StoreError> {
        let Some(b) = baseline else {
            return Ok(inv.samples.len() as u64);
        };
        match crate::delta::read(&*self.store, &b.manifest_key()).await {
            Ok(m) => Ok(crate::delta::count(&inv.samples, &m)),
            // A record from the seed, without manifest: fall back to its count difference.
            Err(e) if e.is_not_found() => {
                tracing::warn!(record = %self.store.uri(&b.key), "baseline has no manifest; counting the difference in samples, as the seed did");
                Ok((inv.samples.len() as u64).saturating_sub(b.record.sample_size))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the temporary files that killed runs left in the output folders; the lock
    /// holder does it, before it writes its own.
    async fn clean_up(&self) {
        for folder in [
            &self.settings.jsonl_folder,
            &self.settings.model_meta_folder,
        ] {
            // "folder/", or "" for the bucket's root.
            let prefix = storage::join(folder, "");
            match self.store.clean_up(&prefix).await {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(removed, folder = %folder, "removed temporary files of interrupted runs");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for temporary files of interrupted runs");
                }
            }
        }
    }

    /// Gates 2 and 3, read-only. `Err(outcome)` when a gate says wait.
    async fn evaluate(&self) -> Result<Result<Gates, Outcome>, StoreError> {
        let rules = Rules::from_settings(&self.settings);
        let inventory = inventory::take(&*self.store, &rules).await?;
        let min = self.settings.min_samples;
        let pairs = inventory.samples.len() as u64;
        tracing::info!(
            pairs,
            unpaired_raw = inventory.unpaired_raw,
            unpaired_labels = inventory.unpaired_labels,
            ambiguous = inventory.ambiguous.len(),
            "inventory taken"
        );
        let baseline =
            record::latest(&*self.store, self.meta_folder(), self.baseline_statuses()).await?;
        let mut gates = Gates {
            inventory,
            baseline,
            delta: 0,
        };
        if pairs < min {
            let reason = format!("gate 2: {pairs} matched pairs, fewer than MIN_SAMPLES ({min})");
            return Ok(Err(self.wait(reason, &gates)));
        }
        gates.delta = self
            .delta_against(&gates.inventory, gates.baseline.as_ref())
            .await?;
        if gates.delta < min {
            let since = gates
                .baseline
                .as_ref()
                .map_or_else(String::new, |b| format!(" since run {}", b.record.run_id));
            let reason = format!(
                "gate 3: {} new or changed samples{since}, fewer than MIN_SAMPLES ({min})",
                gates.delta
            );
            return Ok(Err(self.wait(reason, &gates)));
        }
        Ok(Ok(gates))
    }

    fn split_seed(&self, baseline: Option<&Stored>) -> String {
        self.settings
            .split_seed
            .clone()
            .or_else(|| baseline.and_then(|b| b.record.split_seed.clone()))
            .unwrap_or_else(|| split::DEFAULT_SEED.to_owned())
    }

    /// Gate 1 as `plan` reports it; `Err` when the plan ends there.
    async fn lock_finding(&self) -> Result<String, Outcome> {
        let min = self.settings.min_samples;
        match lease::status(&*self.store, &self.lock_key()).await {
            Ok(lease::Status::Live(r)) => {
                let reason = format!(
                    "gate 1: run {} ({}) holds the lock until {}",
                    r.run_id, r.owner, r.expires_at
                );
                Err(Outcome::new(RunStatus::Skipped, reason, min))
            }
            Ok(lease::Status::Unreadable(e)) => Err(Outcome::new(
                RunStatus::Failed,
                format!("gate 1: lock unreadable: {e}"),
                min,
            )),
            Ok(lease::Status::Expired(r)) => Ok(format!(
                "expired lease of run {} (would be taken over)",
                r.run_id
            )),
            Ok(lease::Status::Free(r)) => {
                Ok(match r.as_ref().and_then(lease::LeaseRecord::pending_job) {
                    Some((job, _)) => format!("free; a run would first adopt tuning job {job}"),
                    None => "free".to_owned(),
                })
            }
            Err(e) => Err(Outcome::new(RunStatus::Failed, e.to_string(), min)),
        }
    }

    /// `autotune plan`: the gates, the split, the conversion (in memory), Vertex's rules and
    /// the token estimate, writing nothing.
    pub async fn plan(&self) -> Outcome {
        let min = self.settings.min_samples;
        let lock = match self.lock_finding().await {
            Ok(l) => l,
            Err(o) => return o,
        };
        let gates = match self.evaluate().await {
            Ok(Ok(g)) => g,
            Ok(Err(waiting)) => return waiting,
            Err(e) => return Outcome::new(RunStatus::Failed, e.to_string(), min),
        };
        let seed = self.split_seed(gates.baseline.as_ref());
        let split = Split::plan(
            &seed,
            self.settings.split_ratio,
            gates.inventory.samples.iter().map(|s| s.key.as_str()),
        );
        let (mut train, mut validate, mut hold) = (0, 0, 0);
        for s in gates.inventory.samples.iter() {
            match split.side(&s.key) {
                Side::Train => train += 1,
                Side::Validation => validate += 1,
                Side::HeldOut => hold += 1,
            }
        }
        // Convert into a throwaway in-memory store: the bucket is only read.
        let sink: Arc<dyn Store> = Arc::new(crate::storage::memory::MemoryStore::named(&format!(
            "plan-{}",
            uuid::Uuid::new_v4().simple()
        )));
        let (built, paths) = match self
            .convert("plan", &gates, &seed, Some(sink.clone()))
            .await
        {
            Ok(x) => x,
            Err(e) => return Outcome::new(RunStatus::Failed, e.to_string(), min),
        };
        let mut problems = Vec::new();
        if let Err(e) = self.check_rejects(&gates, &built) {
            problems.push(e.to_string());
        }
        let estimate = match self.estimate(&*sink, &paths, &built).await {
            Ok(e) => {
                if let Err(over) = self.check_budget(&e) {
                    problems.push(over.to_string());
                }
                Some(e)
            }
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let mut o = self.wait(String::new(), &gates);
        if problems.is_empty() {
            o.status = RunStatus::Success;
            o.reason = format!(
                "all gates pass: a run would convert {} pairs ({} new or changed) and start tuning with the {} tuner",
                gates.inventory.samples.len(),
                gates.delta,
                self.tuner.name()
            );
        } else {
            o.status = RunStatus::Failed;
            o.reason = format!("a run would stop before tuning: {}", problems.join("; "));
        }
        o.counts.train = built.train_examples;
        o.counts.validation = built.validation_examples;
        o.counts.held_out = built.held_out;
        o.counts.rejected = built.rejected;
        o.counts
            .rejected_by_category
            .clone_from(&built.rejected_by_category);
        o.plan = Some(Plan {
            lock,
            would_train: train,
            would_validate: validate,
            would_hold_out: hold,
            split_seed: seed,
            built,
            estimate,
            problems,
        });
        o
    }

    /// `autotune run`. `shutdown` resolves with the signal's name when the process is asked to
    /// stop. With `detach`, the run submits the tuning job, records it and exits; a later run
    /// follows it to its end.
    pub async fn run(&self, shutdown: impl Future<Output = &'static str>, detach: bool) -> Outcome {
        let min = self.settings.min_samples;
        let run_id = new_run_id();
        tracing::info!(%run_id, bucket = %self.settings.bucket_name, tuner = self.tuner.name(), "run starting");
        // Gate 1, read-only: do not even list when a run is in progress.
        let adopt = match lease::status(&*self.store, &self.lock_key()).await {
            Ok(lease::Status::Live(r)) => {
                let reason = format!(
                    "gate 1: run {} ({}) holds the lock until {}",
                    r.run_id, r.owner, r.expires_at
                );
                tracing::info!("{reason}");
                return Outcome::new(RunStatus::Skipped, reason, min);
            }
            Ok(lease::Status::Unreadable(e)) => {
                let reason = format!(
                    "gate 1: the lock {} is unreadable ({e}); inspect it and run `autotune unlock --force`",
                    self.store.uri(&self.lock_key())
                );
                tracing::error!("{reason}");
                return Outcome::new(RunStatus::Failed, reason, min);
            }
            Ok(lease::Status::Free(Some(r)) | lease::Status::Expired(r)) => {
                r.pending_job().is_some()
            }
            Ok(lease::Status::Free(None)) => false,
            Err(e) => return Outcome::new(RunStatus::Failed, e.to_string(), min),
        };
        let mut gates = if adopt {
            None
        } else {
            match self.evaluate().await {
                Ok(Ok(g)) => Some(g),
                Ok(Err(waiting)) => {
                    tracing::info!("{}", waiting.reason);
                    return waiting;
                }
                Err(e) => return Outcome::new(RunStatus::Failed, e.to_string(), min),
            }
        };
        // Gate 1, for real.
        let acquired = Lease::acquire(
            self.store.clone(),
            &self.lock_key(),
            &run_id,
            &lease::owner(),
            self.settings.lease_duration,
        )
        .await;
        let mut lease = match acquired {
            Ok(Acquired::Won(l)) => l,
            Ok(Acquired::Held(r)) => {
                let reason = format!("gate 1: run {} ({}) took the lock first", r.run_id, r.owner);
                tracing::info!("{reason}");
                return Outcome::new(RunStatus::Skipped, reason, min);
            }
            Err(e) => return Outcome::new(RunStatus::Failed, e.to_string(), min),
        };
        lease.start_heartbeat();
        tracing::info!(%run_id, "run lock taken");
        self.clean_up().await;
        if lease.record().await.pending_job().is_some() {
            return self.adopt(lease, shutdown).await;
        }
        let Some(gates) = gates.as_mut() else {
            // The job we meant to adopt was finalised by another run meanwhile.
            let _ = lease.release().await;
            return Outcome::new(
                RunStatus::Skipped,
                "gate 1: another run finished the pending tuning job first",
                min,
            );
        };

        // A run that finished between our look and our lock moved the baseline.
        match self.recheck(gates).await {
            Ok(None) => {}
            Ok(Some(waiting)) => {
                if let Err(e) = lease.release().await {
                    tracing::warn!(error = %e, "could not release the run lock");
                }
                return waiting;
            }
            Err(e) => {
                let _ = lease.release().await;
                return Outcome::new(RunStatus::Failed, e.to_string(), min);
            }
        }

        let started = Utc::now();
        let state = Mutex::new(State {
            record: self.initial_record(&run_id, gates, started, &lease).await,
            meta_key: None,
            job: None,
        });
        let result = tokio::select! {
            r = self.train(&run_id, gates, &state, &lease, detach) => r.map_err(|e| (RunStatus::Failed, e.to_string())),
            signal = shutdown => Err((RunStatus::Interrupted, format!("interrupted by {signal}"))),
            () = lease.lost() => Err((RunStatus::Failed, "the run lock was lost to another run; stopped".to_owned())),
        };
        let mut state = state.into_inner();
        self.finish(&mut state, result, started, lease).await
    }

    /// Follows a tuning job that a previous run submitted and could not see to its end (it was
    /// killed, timed out, stopped by SIGTERM, or detached), and finalises that run's record.
    async fn adopt(&self, lease: Lease, shutdown: impl Future<Output = &'static str>) -> Outcome {
        let held = lease.record().await;
        let (job, record_key) = held
            .pending_job()
            .expect("adopt is called with a pending job");
        let job = job.to_owned();
        let record_key = record_key.map(str::to_owned);
        let previous = match &record_key {
            Some(k) => match storage::get_bytes(&*self.store, k, 16 * 1024 * 1024).await {
                Ok(b) => serde_json::from_slice::<RunRecord>(&b).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "the adopted run's record is unreadable; starting a new one");
                    None
                }
            },
            None => None,
        };
        let started = previous
            .as_ref()
            .map_or_else(Utc::now, |r| r.training_start_time);
        let mut record = previous.unwrap_or_else(|| RunRecord {
            status: RunStatus::Running,
            training_start_time: started,
            run_id: held.run_id.clone(),
            tuner: self.tuner.name().to_owned(),
            ..RunRecord::empty()
        });
        tracing::info!(job = %job, run_id = %record.run_id, "adopting the tuning job of an earlier run");
        let result = tokio::select! {
            r = self.tuner.follow(&job) => match r {
                Ok(tuned) => {
                    merge(&mut record.model_details, &tuned.model_details);
                    record.status = tuned.status;
                    record.error = None;
                    if tuned.status == RunStatus::Failed {
                        Err((RunStatus::Failed, error_message(&tuned.model_details)))
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err((RunStatus::Failed, e.to_string())),
            },
            signal = shutdown => Err((RunStatus::Interrupted, format!("interrupted by {signal}"))),
            () = lease.lost() => Err((RunStatus::Failed, "the run lock was lost to another run; stopped".to_owned())),
        };
        let mut state = State {
            record,
            meta_key: record_key,
            job: Some(job.clone()),
        };
        let mut outcome = self.finish(&mut state, result, started, lease).await;
        outcome.reason = format!(
            "adopted tuning job {job} of run {}: {}",
            state.record.run_id, outcome.reason
        );
        outcome
    }

    async fn recheck(&self, gates: &mut Gates) -> Result<Option<Outcome>, StoreError> {
        let now =
            record::latest(&*self.store, self.meta_folder(), self.baseline_statuses()).await?;
        if now.as_ref().map(|s| &s.key) == gates.baseline.as_ref().map(|s| &s.key) {
            return Ok(None);
        }
        gates.baseline = now;
        gates.delta = self
            .delta_against(&gates.inventory, gates.baseline.as_ref())
            .await?;
        if gates.delta < self.settings.min_samples {
            let reason = format!(
                "gate 3: another run finished meanwhile; {} new or changed samples remain, fewer than MIN_SAMPLES ({})",
                gates.delta, self.settings.min_samples
            );
            return Ok(Some(self.wait(reason, gates)));
        }
        Ok(None)
    }

    async fn initial_record(
        &self,
        run_id: &str,
        gates: &Gates,
        started: DateTime<Utc>,
        lease: &Lease,
    ) -> RunRecord {
        let s = &self.settings;
        RunRecord {
            status: RunStatus::Failed,
            sample_size: gates.inventory.samples.len() as u64,
            previous_sample_size: gates.baseline.as_ref().map_or(0, |b| b.record.sample_size),
            sample_delta: gates.delta,
            training_start_time: started,
            trigger_bucket: s.trigger.trigger_bucket.clone(),
            trigger_object: s.trigger.trigger_object.clone(),
            trigger_generation: s.trigger.trigger_generation.clone(),
            trigger_event_id: s.trigger.trigger_event_id.clone(),
            run_id: run_id.to_owned(),
            tuner: self.tuner.name().to_owned(),
            source_model: s.model.source_model.clone(),
            counts: counts_of(&gates.inventory),
            split_ratio: Some(s.split_ratio),
            lock_generation: Some(lease.generation().await),
            baseline_run_id: gates.baseline.as_ref().map(|b| b.record.run_id.clone()),
            unpaired_examples: gates.inventory.unpaired_examples.clone(),
            ..RunRecord::empty()
        }
    }

    /// Build, check, submit, follow. Updates `state` as it goes, so an interruption still
    /// records what was done.
    async fn train(
        &self,
        run_id: &str,
        gates: &Gates,
        state: &Mutex<State>,
        lease: &Lease,
        detach: bool,
    ) -> Result<(), RunError> {
        let s = &self.settings;
        let seed = self.split_seed(gates.baseline.as_ref());
        state.lock().await.record.split_seed = Some(seed.clone());
        let built = self.build_datasets(run_id, gates, &seed, state).await?;
        let Some(train_uri) = built.train_uri.as_deref() else {
            return Err(RunError::Data(
                "no training example could be made".to_owned(),
            ));
        };

        // The manifest and the record's name exist before the job does, so that whoever adopts
        // the job can finalise this run.
        let manifest = crate::delta::encode(&gates.inventory.samples).await;
        let started = state.lock().await.record.training_start_time;
        let (meta_key, manifest_key) =
            record::claim_names(&*self.store, self.meta_folder(), started, Some(manifest)).await?;
        {
            let mut st = state.lock().await;
            st.record.manifest_uri = manifest_key.map(|k| self.store.uri(&k));
            st.meta_key = Some(meta_key.clone());
        }

        let run_key = job::run_key(s, &gates.inventory.samples, &seed);
        let mut request = job::Request::build(
            s,
            run_id,
            &run_key,
            train_uri,
            built.validation_uri.as_deref(),
        );
        self.continue_from_baseline(&mut request, gates, state)
            .await;
        merge(
            &mut state.lock().await.record.model_details,
            &serde_json::json!({ "request": request }),
        );

        let name = match self.tuner.find(&request.run_key).await? {
            Some(existing) => {
                tracing::info!(job = %existing, "re-attaching to the tuning job already created for this data");
                existing
            }
            None => self.tuner.submit(&request).await?,
        };
        {
            let mut st = state.lock().await;
            st.job = Some(name.clone());
            st.record.status = RunStatus::Running;
            merge(
                &mut st.record.model_details,
                &serde_json::json!({ "tuning_job": name }),
            );
            record::write(&*self.store, &meta_key, &st.record).await?;
        }
        lease.attach_job(&name, &meta_key).await?;
        if detach {
            tracing::info!(job = %name, "detached: a later run follows the job and finalises this run");
            return Ok(());
        }
        tracing::info!(job = %name, "following the tuning job");
        let tuned = self.tuner.follow(&name).await?;
        let mut st = state.lock().await;
        merge(&mut st.record.model_details, &tuned.model_details);
        st.record.status = tuned.status;
        if tuned.status == RunStatus::Failed {
            return Err(RunError::Data(error_message(&tuned.model_details)));
        }
        Ok(())
    }

    /// Converts and uploads the datasets, then the gates on what was written: too many
    /// rejects, Vertex's dataset rules, the token budget.
    async fn build_datasets(
        &self,
        run_id: &str,
        gates: &Gates,
        seed: &str,
        state: &Mutex<State>,
    ) -> Result<dataset::Built, RunError> {
        let folder = storage::join(&self.settings.jsonl_folder, run_id);
        let (built, paths) = self.convert(&folder, gates, seed, None).await?;
        {
            let r = &mut state.lock().await.record;
            r.counts.train = built.train_examples;
            r.counts.validation = built.validation_examples;
            r.counts.held_out = built.held_out;
            r.counts.rejected = built.rejected;
            r.counts
                .rejected_by_category
                .clone_from(&built.rejected_by_category);
            r.train_dataset_uri.clone_from(&built.train_uri);
            r.validation_dataset_uri.clone_from(&built.validation_uri);
            r.rejected_uri.clone_from(&built.rejected_uri);
            r.reject_examples = serde_json::to_value(&built.reject_examples).ok();
        }
        tracing::info!(
            train = built.train_examples,
            validation = built.validation_examples,
            rejected = built.rejected,
            held_out = built.held_out,
            "datasets written"
        );
        self.check_rejects(gates, &built)?;
        let estimate = self.estimate(&*self.store, &paths, &built).await?;
        tracing::info!(training_tokens = estimate.training_tokens, cost = ?estimate.cost, "token estimate");
        state.lock().await.record.estimate = serde_json::to_value(&estimate).ok();
        self.check_budget(&estimate)?;
        Ok(built)
    }

    /// Converts every sample into `folder` of `sink` (default: the bucket itself).
    async fn convert(
        &self,
        folder: &str,
        gates: &Gates,
        seed: &str,
        sink: Option<Arc<dyn Store>>,
    ) -> Result<(dataset::Built, Paths), RunError> {
        let s = &self.settings;
        let samples = gates.inventory.samples.clone();
        let split = Arc::new(Split::plan(
            seed,
            s.split_ratio,
            samples.iter().map(|x| x.key.as_str()),
        ));
        let paths = Paths {
            train: storage::join(folder, &s.train_file),
            validation: storage::join(folder, &s.val_file),
            rejected: storage::join(folder, "rejected.jsonl"),
        };
        let converter =
            Arc::new(Converter::from_settings(s).map_err(|e| RunError::Data(e.to_string()))?);
        let progress = crate::logging::progress_bar(samples.len() as u64, self.progress);
        let built = dataset::build(
            self.store.clone(),
            samples,
            &gates.inventory.ambiguous,
            split,
            converter,
            &dataset::Options {
                read_concurrency: usize::from(s.read_concurrency),
                max_text_bytes: s.max_text_bytes,
                max_bytes_in_flight: s.max_bytes_in_flight,
                paths: paths.clone(),
                sink,
            },
            &progress,
        )
        .await?;
        progress.finish_and_clear();
        Ok((built, paths))
    }

    /// Fails when more than MAX_REJECTED_RATIO of the samples were rejected.
    fn check_rejects(&self, gates: &Gates, built: &dataset::Built) -> Result<(), RunError> {
        let s = &self.settings;
        let considered =
            gates.inventory.samples.len() as u64 + gates.inventory.ambiguous.len() as u64;
        let ratio = built.rejected as f64 / considered.max(1) as f64;
        if ratio > s.max_rejected_ratio {
            return Err(RunError::Data(format!(
                "{} of {considered} samples rejected ({:.1}%), more than MAX_REJECTED_RATIO ({}); reasons in {}",
                built.rejected,
                ratio * 100.0,
                s.max_rejected_ratio,
                built.rejected_uri.as_deref().unwrap_or("rejected.jsonl")
            )));
        }
        Ok(())
    }

    /// The budget gate: MAX_TRAINING_TOKENS.
    fn check_budget(&self, estimate: &crate::validate::Estimate) -> Result<(), RunError> {
        match self.settings.max_training_tokens {
            Some(max) => estimate
                .exceeds(max)
                .map_or(Ok(()), |over| Err(RunError::Data(over))),
            None => Ok(()),
        }
    }

    /// The quality gate: the written files must pass Vertex's rules. Returns the token and
    /// cost estimate the validator made on the way.
    async fn estimate(
        &self,
        store: &dyn Store,
        paths: &Paths,
        built: &dataset::Built,
    ) -> Result<crate::validate::Estimate, RunError> {
        use crate::validate::{self, Dataset, Estimate, ModelTable, SetEstimate};
        let s = &self.settings;
        let table = ModelTable::load(s.model.model_limits_file.as_deref())
            .map_err(|e| RunError::Data(e.to_string()))?;
        let mut model = table.resolve(&s.model.source_model);
        model.limits.allow_local_uris =
            self.tuner.name() == "dry-run" && self.store.uri("x").starts_with("file://");
        if let Some(w) = model.warning() {
            tracing::warn!("{w}");
        }
        let config = |dataset| validate::Config {
            dataset,
            model: model.clone(),
            check_files: false,
            max_findings: 20,
            epochs: s.model.epochs,
            price_per_million_training_tokens: s.model.price_per_million_training_tokens,
        };
        let mut sets = Vec::new();
        for (key, uri, dataset) in [
            (&paths.train, &built.train_uri, Dataset::Training),
            (
                &paths.validation,
                &built.validation_uri,
                Dataset::Validation,
            ),
        ] {
            if uri.is_none() {
                continue;
            }
            let report = validate::validate_object(store, key, &config(dataset))
                .await
                .map_err(|e| RunError::Data(e.to_string()))?;
            if !report.valid {
                let first = report.findings.first().map_or_else(String::new, |f| {
                    format!("; first: line {:?} {}: {}", f.line, f.path, f.message)
                });
                return Err(RunError::Data(format!(
                    "{} breaks Vertex AI's dataset rules: {} errors{first}",
                    report.file, report.errors
                )));
            }
            sets.push((dataset, report.estimate));
        }
        let pick = |d: Dataset| {
            sets.iter()
                .find(|(x, _)| *x == d)
                .map_or_else(SetEstimate::default, |(_, e)| match d {
                    Dataset::Training => e.train.clone(),
                    Dataset::Validation => e.validation.clone(),
                })
        };
        Ok(Estimate::new(
            pick(Dataset::Training),
            pick(Dataset::Validation),
            s.model.epochs,
            s.model.price_per_million_training_tokens,
        ))
    }

    /// TUNING_MODE=continuous: tune the last successful run's model instead of SOURCE_MODEL.
    async fn continue_from_baseline(
        &self,
        request: &mut job::Request,
        gates: &Gates,
        state: &Mutex<State>,
    ) {
        if self.settings.vertex.tuning_mode != crate::tuner::vertex::TuningMode::Continuous {
            return;
        }
        let parent = gates
            .baseline
            .as_ref()
            .filter(|b| b.record.status == RunStatus::Success)
            .and_then(|b| b.record.model_details["tuned_model"].as_str());
        match parent {
            Some(parent) => {
                tracing::info!(
                    parent,
                    "continuous tuning from the last successful run's model"
                );
                request.continue_from(parent);
                merge(
                    &mut state.lock().await.record.model_details,
                    &serde_json::json!({ "parent_model": parent }),
                );
            }
            None => {
                tracing::info!(
                    "continuous tuning: no earlier tuned model yet, tuning SOURCE_MODEL"
                );
            }
        }
    }

    /// Writes the record, and frees the lock, handing a still-running job over to the next run.
    async fn finish(
        &self,
        state: &mut State,
        result: Result<(), (RunStatus, String)>,
        started: DateTime<Utc>,
        lease: Lease,
    ) -> Outcome {
        let record = &mut state.record;
        let end = Utc::now();
        if let Err((status, error)) = result {
            tracing::error!(run_id = %record.run_id, "run {status:?}: {error}");
            record.status = status;
            record.error = Some(error);
        }
        let job_pending = state.job.is_some()
            && matches!(record.status, RunStatus::Running | RunStatus::Interrupted);
        if !job_pending {
            record.training_end_time = Some(end);
            record.training_duration_seconds = Some((end - started).num_seconds());
        }
        let meta_key = match state.meta_key.clone() {
            Some(k) => Ok(k),
            None => record::claim_names(&*self.store, self.meta_folder(), started, None)
                .await
                .map(|(k, _)| k),
        };
        let metadata_uri = match meta_key {
            Ok(k) => match record::write(&*self.store, &k, record).await {
                Ok(uri) => Some(uri),
                Err(e) => {
                    tracing::error!(error = %e, "could not write the run record");
                    None
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "could not name the run record");
                None
            }
        };
        let released = if job_pending {
            lease.hand_over().await
        } else {
            lease.release().await
        };
        match released {
            Ok(()) if job_pending => {
                tracing::info!("run lock released; the next run adopts the tuning job");
            }
            Ok(()) => tracing::info!("run lock released"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the run lock; it expires on its own");
            }
        }
        let reason = match (&record.error, record.status) {
            (Some(e), _) => e.clone(),
            (None, RunStatus::DryRun) => {
                "dry run: datasets written, Vertex AI request recorded".to_owned()
            }
            (None, RunStatus::Running) => {
                "tuning job submitted; a later run follows it and finalises this run".to_owned()
            }
            (None, _) => "tuning succeeded".to_owned(),
        };
        tracing::info!(run_id = %record.run_id, status = ?record.status, metadata = ?metadata_uri, "run finished");
        Outcome {
            status: record.status,
            reason,
            run_id: Some(record.run_id.clone()),
            counts: record.counts.clone(),
            sample_delta: record.sample_delta,
            min_samples: self.settings.min_samples,
            unpaired_examples: record.unpaired_examples.clone(),
            metadata_uri,
            train_dataset_uri: record.train_dataset_uri.clone(),
            validation_dataset_uri: record.validation_dataset_uri.clone(),
            rejected_uri: record.rejected_uri.clone(),
            manifest_uri: record.manifest_uri.clone(),
            baseline_run_id: record.baseline_run_id.clone(),
            plan: None,
            model_details: record.model_details.clone(),
        }
    }
}

/// A run in progress, as far as it got.
struct State {
    record: RunRecord,
    /// The record's claimed object name, once claimed.
    meta_key: Option<String>,
    /// The tuning job, once submitted or found.
    job: Option<String>,
}

/// Google's error message in a tuner's details, or a generic one.
fn error_message(details: &serde_json::Value) -> String {
    details["error"]["message"].as_str().map_or_else(
        || "the tuning job failed".to_owned(),
        |m| format!("the tuning job failed: {m}"),
    )
}

/// Adds the fields of `extra` (an object) to `into`.
fn merge(into: &mut serde_json::Value, extra: &serde_json::Value) {
    if !into.is_object() {
        *into = serde_json::json!({});
    }
    if let (Some(into), Some(extra)) = (into.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// Picks the tuner the settings ask for.
pub fn tuner_for(s: &Settings) -> Result<Arc<dyn Tuner>, TunerError> {
    match s.tuner_kind() {
        TunerKind::DryRun => Ok(Arc::new(crate::tuner::dry_run::DryRun {
            duration: s.dry_run_duration,
        })),
        TunerKind::Vertex => Ok(Arc::new(crate::tuner::vertex::Vertex::from_settings(s)?)),
    }
}
