//! The job: three gates, then the datasets, tuning and the run record, one stage per file.
//!
//! ```text
//!  gates    gate 1 (peek)   lock live?                      ── yes ─▶ skipped   (nothing written)
//!           inventory       list raw + label folders, pair; on a remote store, read what
//!                           changed meanwhile (`crate::reads`)
//!           gate 2          pairs ≥ MIN_SAMPLES?            ── no ──▶ waiting   (nothing written)
//!           gate 3          new/changed since baseline ≥ MIN_SAMPLES?  ── no ──▶ waiting
//!  quiet    wait until nothing was added or changed for QUIET_PERIOD (at most MAX_QUIET_WAIT),
//!           then gates 2 and 3 again on the inventory the build uses
//!  lock     gate 1 (take)   create-only / compare-and-swap lease       ── lost ─▶ skipped
//!                           baseline moved meanwhile? re-check gate 3, while the build's
//!                           first reads (champion pointer, evaluation set) go on (`lock.rs`)
//!  build    read ▶ convert (rayon) ▶ split ▶ stream train / val / rejected, each line checked
//!  quality  rejects ≤ MAX_REJECTED_RATIO, Vertex's dataset rules, MAX_TRAINING_TOKENS
//!  tune     find or submit the job, record it in the lease, follow it (or adopt an earlier one)
//!  evaluate candidate vs champion on the frozen evaluation set, each called where Vertex
//!           serves it ▶ blessing.json (`evaluate.rs`)
//!  promote  a blessed candidate: champion.json by compare-and-swap, then the Vertex alias
//!           (`promote.rs`)
//!  notify   each step's event: log line, Pub/Sub, signed webhook (`crate::notify`)
//!  record   manifest + model_metadata_*.json, release the lease
//!  cycles   list again: another run if gate 3 passes, up to MAX_CYCLES, before TASK_DEADLINE
//! ```
//!
//! Each stage returns a typed decision ([`gates::Lock`], [`gates::Gate`], [`tune::Tuning`]) or a
//! [`RunError`] with one variant per way a run can fail; [`outcome`] turns the end of a run
//! into the JSON `run` and `plan` print. The gates are read-only until the lease is taken, so
//! waiting and skipped runs write nothing.
//!
//! Signals and the loss of the lease are answered in one place, [`stop`]: every step of a
//! stage that waits on something (a listing, the quiet wait, the build, the tuning job, the
//! evaluation) runs under `Watch::run`, which races it against the shutdown future (SIGTERM,
//! Ctrl-C) and, once the lease is taken, against its loss, and answers with a [`Stop`] that
//! names the [`Stage`] it stopped in. A step returns its results; the orchestration (`locked`
//! and `train` here, `tune` and `adopt` in `tune.rs`) writes them into the run's `Progress`
//! (what its record will say) before the next step, so a stopped run records what it had
//! committed: the job it submitted (which the next run adopts), the promotion once the champion
//! pointer moved. The one stage that commits part-way, the evaluation, updates a small
//! `evaluate::Judgement` of its own, which the record takes however the stage ended. The record
//! stage then writes the record and frees (or hands over) the lock. [`cycles`] runs the job
//! again in the same execution for data that arrived during a run.
//!
//! [`Config`] is all the job knows of the settings: the composition root
//! (`settings::Settings::job_config`) builds it, tests build it directly.

mod build;
mod checkpoints;
mod cycles;
mod evaluate;
mod gates;
mod lock;
mod outcome;
mod plan;
mod promote;
mod quality;
mod quiet;
mod record;
mod stop;
mod tune;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;

use crate::convert::Converter;
use crate::evaluate::contestants::{Contestants, RehearsalContestants};
use crate::inventory::Rules;
use crate::lease::{self, Lease, LeaseError};
use crate::notify::Notifier;
use crate::reads::ReadAhead;
use crate::registry::{NoRegistry, Registry};
use crate::status::RunStatus;
use crate::storage::{Store, StoreError};
use crate::tuner::{Tuner, TunerError, TunerKind, TuningMode, job};
use crate::validate::ModelTable;
use crate::validate::models::Resolved;

pub use cycles::Cycles;
pub use evaluate::{EvalCost, EvalModel, Evaluation};
pub use gates::{FirstLook, Gate, Gates, Lock};
pub use outcome::{Outcome, Plan};
pub use promote::{ChampionInfo, RolledBack};
use quiet::ListingDigest;
pub use quiet::{Quiet, QuietEnd};
use stop::Watch;
pub use stop::{Stage, Stop};
pub use tune::Tuning;

/// The name of the rejects file in a run's dataset folder.
pub const REJECTED_FILE: &str = "rejected.jsonl";
/// The name of the index (file, line, sample key, content digest) in a run's dataset folder.
pub const INDEX_FILE: &str = "index.jsonl";
/// The verdict on a run's candidate, in its dataset folder.
pub const BLESSING_FILE: &str = "blessing.json";
/// The folder of the evaluation's stored answers, in a run's dataset folder.
pub const RESPONSES_FOLDER: &str = "eval_responses";
/// The run's line store (`model_lines_<run id>.bin.gz` beside the records), which the next
/// run takes unchanged samples' lines from. A run that ends a baseline (success, unchanged,
/// dry run) keeps it, as does an interrupted one (it may be adopted); one that waits, is
/// deferred or fails removes it.
pub const LINES_PREFIX: &str = "model_lines_";

/// The upload event that started this execution, recorded with the run.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    pub bucket: Option<String>,
    pub object: Option<String>,
    pub generation: Option<String>,
    pub event_id: Option<String>,
}

/// What the job needs to know, built once from the settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// BUCKET_NAME as given, for logs.
    pub bucket: String,
    pub jsonl_folder: String,
    pub model_meta_folder: String,
    pub train_file: String,
    pub val_file: String,
    /// Gates 2 and 3.
    pub min_samples: u64,
    pub split_ratio: f64,
    /// SPLIT_SEED; the last successful run's seed when unset.
    pub split_seed: Option<String>,
    /// RESPLIT: a split other than the baseline's is accepted.
    pub resplit: bool,
    /// FULL_REBUILD: every sample is read, none taken from the last run's line store.
    pub full_rebuild: bool,
    /// On a remote store, read what changed while the listing arrives (NO_READ_AHEAD turns
    /// it off).
    pub read_ahead: bool,
    pub rules: Rules,
    pub converter: Arc<Converter>,
    /// READ_CONCURRENCY: pinned; `None` adapts it.
    pub read_concurrency: Option<usize>,
    pub max_text_bytes: u64,
    /// NEAR_DUPLICATE_THRESHOLD: near-duplicates train once; `None`: off.
    pub near_duplicates: Option<f64>,
    /// Sample bytes in memory at once during the build (MAX_BYTES_IN_FLIGHT).
    pub max_bytes_in_flight: u64,
    /// PERSONAL_DATA: what personal data in a sample read does.
    pub personal_data: crate::screen::Mode,
    pub lease_duration: Duration,
    pub max_rejected_ratio: f64,
    pub max_training_tokens: Option<u64>,
    /// The base model's limits (Vertex's rules, the estimate).
    pub model: Resolved,
    pub epochs: Option<u32>,
    pub price_per_million_training_tokens: Option<f64>,
    /// The tuning job request, less the datasets.
    pub request: job::Template,
    /// Where Vertex AI calls go (the `autotune champion` call line).
    pub hosts: crate::locations::Hosts,
    pub tuning_mode: TuningMode,
    /// MAX_CONCURRENT_TUNING_JOBS: with this many jobs running, the run is deferred.
    pub max_concurrent_tuning_jobs: u32,
    /// Digest of every setting that shapes the datasets or the job (part of the run key).
    pub shape: String,
    /// The model table, for the base model of a parent in continuous tuning.
    pub table: ModelTable,
    /// The date retirement checks use.
    pub today: chrono::NaiveDate,
    pub trigger: Trigger,
    /// QUIET_PERIOD: how long nothing may have been added or changed under the input folders
    /// before a build takes its inventory; zero turns the wait off.
    pub quiet_period: Duration,
    /// MAX_QUIET_WAIT: the longest the quiet stage waits in all.
    pub max_quiet_wait: Duration,
    /// MAX_CYCLES: runs one execution makes at most (`run_cycles`).
    pub max_cycles: u32,
    /// TASK_DEADLINE: how long the execution may live; no cycle starts unless the longest cycle
    /// so far still fits. `None`: no limit but MAX_CYCLES.
    pub task_deadline: Option<Duration>,
    /// The evaluation set, the blessing and the promotion; `None`: off (`EVAL_RATIO=0`).
    pub evaluation: Option<Evaluation>,
}

/// Why a run that passed the gates failed: one variant per kind of failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bucket failed (after retries).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Tuner(#[from] TunerError),
    #[error("no training example could be made")]
    NoTrainingExamples,
    #[error(
        "{rejected} of {considered} samples rejected ({percent:.1}%), more than MAX_REJECTED_RATIO ({max}); reasons in {where_}"
    )]
    TooManyRejects {
        rejected: u64,
        considered: u64,
        percent: f64,
        max: f64,
        where_: String,
    },
    #[error("{file} breaks Vertex AI's dataset rules: {errors} errors{first}")]
    BreaksRules {
        file: String,
        errors: u64,
        first: String,
    },
    #[error("{0}")]
    OverBudget(String),
    /// The tuning job ended without success; Google's message when it gave one.
    #[error("the tuning job failed{}", .0.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    JobFailed(Option<String>),
    #[error(transparent)]
    LeaseLost(lease::Lost),
    /// The champion pointer could not be read or written.
    #[error("champion: {0}")]
    Champion(String),
    /// The evaluation set could not be read or written.
    #[error("evaluation set: {0}")]
    EvalSet(String),
    /// Continuous tuning from a model in another location than the job's.
    #[error(
        "TUNING_MODE=continuous: the parent model {parent} is not in LOCATION ({location}) or its multi-region; Vertex AI tunes a model where it lives: set LOCATION to the parent's, or copy the model"
    )]
    ParentElsewhere { parent: String, location: String },
    /// Continuous tuning from a model whose base Vertex no longer tunes.
    #[error("TUNING_MODE=continuous: the base model of the parent model {parent}: {reason}")]
    ParentRetired { parent: String, reason: String },
}

pub struct Job {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub tuner: Arc<dyn Tuner>,
    /// Who answers the evaluation rows (Vertex AI, or the rehearsal stand-ins).
    pub contestants: Arc<dyn Contestants>,
    /// The Vertex Model Registry the champion alias lives in (none for the dry-run tuner).
    pub registry: Arc<dyn Registry>,
    /// Where notices go (always a structured log line; Pub/Sub and a webhook when set).
    pub notifier: Arc<Notifier>,
    /// Show progress bars (a terminal, text logs).
    pub progress: bool,
    /// When the execution must have ended (TASK_DEADLINE from its start), set by
    /// [`Job::run_cycles`]; the quiet wait leaves the run time inside it.
    deadline: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What a run that holds the lease has done, as its record will say: the orchestration
/// (`train`, `tune`, `adopt`) writes each step's result into it as the step returns, and the
/// record stage writes it, however the run ended.
struct Progress {
    record: crate::record::RunRecord,
    /// The record's claimed object name, once claimed.
    meta_key: Option<String>,
    /// The tuning job, once submitted or found.
    job: Option<String>,
    /// The evaluation set of this run, once the build routed it.
    eval_set: Option<evaluate::HeldSet>,
    /// The job was seen to end (or cannot be followed): it is not handed to the next run.
    job_ended: bool,
}

impl Progress {
    /// The record's name, and the manifest claimed beside it ([`Job::claim_record`]).
    fn claimed(&mut self, (meta_key, manifest_uri): (String, Option<String>)) {
        self.record.manifest_uri = manifest_uri;
        self.meta_key = Some(meta_key);
    }
}

fn new_run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", Utc::now().format("%Y%m%d-%H%M%S"), &id[..6])
}

impl Job {
    /// A job with the rehearsal stand-ins, no model registry and notices in the log only;
    /// the settings (or a test) replace what they need.
    pub fn new(config: Config, store: Arc<dyn Store>, tuner: Arc<dyn Tuner>) -> Self {
        Self {
            config,
            store,
            tuner,
            contestants: Arc::new(RehearsalContestants),
            registry: Arc::new(NoRegistry),
            notifier: Arc::new(Notifier::log_only()),
            progress: false,
            deadline: std::sync::Mutex::new(None),
        }
    }

    /// The time left before TASK_DEADLINE, when [`Job::run_cycles`] set one.
    fn time_left(&self) -> Option<Duration> {
        let deadline = *self
            .deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    fn lock_key(&self) -> String {
        lease::lock_key(&self.config.model_meta_folder)
    }

    /// Which past runs count as a baseline: a dry run stands in for a real one only for dry
    /// runs, so rehearsing on a bucket never makes a real run wait.
    /// A run that found its datasets unchanged moves the baseline too: what it would have
    /// tuned is what the run before it tuned.
    fn baseline_statuses(&self) -> &'static [RunStatus] {
        match self.tuner.kind() {
            TunerKind::DryRun => &[RunStatus::Success, RunStatus::Unchanged, RunStatus::DryRun],
            TunerKind::Vertex => &[RunStatus::Success, RunStatus::Unchanged],
        }
    }

    /// `autotune run`, one cycle. `shutdown` resolves with the signal's name when the process
    /// is asked to stop. With `detach`, the run submits the tuning job, records it and exits; a
    /// later run follows it to its end. [`Job::run_cycles`] repeats this for data that arrived
    /// meanwhile, and waits (within its bounds) for the notices the runs posted, which `run`
    /// leaves to the notifier's background delivery.
    pub async fn run(&self, shutdown: impl Future<Output = &'static str>, detach: bool) -> Outcome {
        Box::pin(self.cycle(shutdown.shared(), detach, None, FirstLook::default())).await
    }

    /// One run. `retry`: the previous cycle of this execution failed on these inputs; the run
    /// waits unless something was added or changed since. `first`: what was just read for it.
    async fn cycle<S>(
        &self,
        shutdown: S,
        detach: bool,
        retry: Option<&cycles::Retry>,
        first: FirstLook,
    ) -> Outcome
    where
        S: Future<Output = &'static str> + Clone,
    {
        let run_id = new_run_id();
        tracing::info!(%run_id, bucket = %self.config.bucket, tuner = %self.tuner.kind(), "run starting");
        // Every phase answers a signal: the read-only gates too (a listing can be long).
        let watch = Watch::signal(shutdown);
        let mut outcome = match self.take_lock(&run_id, &watch, retry, first).await {
            Ok((lease, gates)) => {
                Box::pin(self.locked(&run_id, &watch, lease, gates, detach)).await
            }
            Err(outcome) => {
                if outcome.status == RunStatus::Waiting {
                    self.repair_champion_alias().await;
                }
                *outcome
            }
        };
        // The one place the outcome learns MIN_SAMPLES, whichever stage ended the run.
        outcome.min_samples = self.config.min_samples;
        outcome
    }

    /// The stages of a run that took the lease, to the outcome that ends it. `gates`: `None`
    /// when the run adopts a pending job.
    async fn locked<S>(
        &self,
        run_id: &str,
        watch: &Watch<'_, S>,
        mut lease: Lease,
        mut gates: Option<Gates>,
        detach: bool,
    ) -> Outcome
    where
        S: Future<Output = &'static str> + Clone,
    {
        lease.start_heartbeat();
        tracing::info!(%run_id, "run lock taken");
        let adopting = lease.record().await.pending_job().is_some();
        let building = !adopting && gates.is_some();
        // The reads a build starts with go on while the lock is settled (read-only; `train`
        // takes their verdicts in its order).
        let mut ready = std::pin::pin!(futures::future::maybe_done(async {
            if building {
                Some(self.ready().await)
            } else {
                None
            }
        }));
        let settled = self.settle_lock(gates.as_mut().filter(|_| !adopting), ready.as_mut(), watch);
        let rechecked = match settled.await {
            Ok(r) => r,
            Err(stop) => {
                release_quietly(lease).await;
                return Outcome::new(stop.status(), stop.to_string());
            }
        };
        if adopting {
            return self.adopt(lease, watch, detach).await;
        }
        let Some(gates) = gates.as_mut() else {
            // The job we meant to adopt was finalised by another run meanwhile.
            release_quietly(lease).await;
            return Outcome::new(
                RunStatus::Skipped,
                "gate 1: another run finished the pending tuning job first",
            );
        };
        match rechecked.expect("gates are rechecked unless adopting") {
            Ok(None) => {}
            Ok(Some(reason)) => {
                release_quietly(lease).await;
                tracing::info!("{reason}");
                return Outcome::waiting(reason, gates);
            }
            Err(e) => {
                release_quietly(lease).await;
                return Outcome::failed(RunError::from(e).to_string());
            }
        }

        let ready = async move {
            ready.as_mut().await;
            ready
                .as_mut()
                .take_output()
                .flatten()
                .expect("a build's first reads are read")
        };
        let started = Utc::now();
        let mut progress = Progress {
            record: self.initial_record(run_id, gates, started, &lease).await,
            meta_key: None,
            job: None,
            eval_set: None,
            job_ended: false,
        };
        let result = Box::pin(self.train(
            &mut progress,
            &watch.with_lease(&lease),
            gates,
            &lease,
            detach,
            ready,
        ))
        .await;
        self.conclude(progress, result, gates, started, lease).await
    }

    /// The end of a run that took the lease: its record (or none, for a late wait) and the
    /// lease freed.
    async fn conclude(
        &self,
        mut run: Progress,
        result: Result<Trained, Stop>,
        gates: &Gates,
        started: chrono::DateTime<Utc>,
        lease: Lease,
    ) -> Outcome {
        let mut outcome = match result {
            Ok(Trained::Waiting(reason)) => {
                self.discard(&run.record).await;
                self.drop_lines(&mut run.record).await;
                release_quietly(lease).await;
                tracing::info!("{reason}");
                Outcome::waiting(reason, gates)
            }
            Ok(Trained::Unchanged) => {
                self.discard(&run.record).await;
                let baseline = gates.baseline.as_ref().map(|b| &b.record);
                let r = &mut run.record;
                r.status = RunStatus::Unchanged;
                r.train_dataset_uri = baseline.and_then(|b| b.train_dataset_uri.clone());
                r.validation_dataset_uri = baseline.and_then(|b| b.validation_dataset_uri.clone());
                self.finish(&mut run, Ok(()), started, lease).await
            }
            Ok(Trained::Tuned) => self.finish(&mut run, Ok(()), started, lease).await,
            Ok(Trained::Deferred(busy)) => {
                // A deferred run is no baseline: the next run builds again.
                self.drop_lines(&mut run.record).await;
                let r = &mut run.record;
                r.status = RunStatus::Deferred;
                merge(
                    &mut r.model_details,
                    &serde_json::json!({ "busy_tuning_jobs": busy }),
                );
                self.finish(&mut run, Ok(()), started, lease).await
            }
            Err(e) => {
                // An interrupted run may still be adopted and succeed: it keeps its lines.
                if e.status() == RunStatus::Failed {
                    self.drop_lines(&mut run.record).await;
                }
                self.finish(&mut run, Err(e), started, lease).await
            }
        };
        outcome.inputs = Some(ListingDigest::of_samples(&gates.inventory.samples));
        outcome
    }

    /// Gates 2 and 3, then the quiet stage. `Err` is the outcome of a run that ends there.
    async fn gates_for_build<S>(
        &self,
        watch: &Watch<'_, S>,
        retry: Option<&cycles::Retry>,
        baseline: gates::Baseline,
    ) -> Result<Gates, Box<Outcome>>
    where
        S: Future<Output = &'static str> + Clone,
    {
        let ahead = self.read_ahead();
        let gate = watch
            .run(Stage::Gates, self.evaluate(ahead.as_ref(), baseline))
            .await
            .map_err(|s| stopped_before_lock(&s))?;
        match gate {
            Ok(Gate::Pass(g)) => {
                if let Some(r) =
                    retry.filter(|r| r.inputs == ListingDigest::of_samples(&g.inventory.samples))
                {
                    let reason = format!(
                        "run {} failed and nothing was added or changed since; it is not retried in this execution",
                        r.run_id
                    );
                    tracing::info!("{reason}");
                    return Err(Box::new(Outcome::waiting(reason, &g)));
                }
                self.settle(watch, g).await
            }
            Ok(Gate::Wait { reason, gates }) => {
                tracing::info!("{reason}");
                Err(Box::new(Outcome::waiting(reason, &gates)))
            }
            Err(e) => Err(Box::new(Outcome::failed(RunError::from(e).to_string()))),
        }
    }

    /// On a remote store, what reads the objects of new or changed samples as the listing
    /// arrives (see [`crate::reads`]); the build takes them, and reads the rest itself.
    fn read_ahead(&self) -> Option<Arc<ReadAhead>> {
        if !(self.config.read_ahead && self.store.remote()) {
            return None;
        }
        let min = usize::try_from(self.config.min_samples).unwrap_or(usize::MAX);
        Some(Arc::new(ReadAhead::new(
            self.store.clone(),
            Arc::new(crate::limit::Limiter::new(self.config.read_concurrency)),
            crate::reads::Options {
                // Gate 3 needs MIN_SAMPLES samples, of one or two objects each.
                start_after: min.saturating_mul(2),
                max_bytes: self.config.max_bytes_in_flight,
                max_text_bytes: self.config.max_text_bytes,
            },
        )))
    }

    /// The quiet stage, then gates 2 and 3 again on the inventory the build will use. `Err`
    /// is the outcome of a run that ends there.
    async fn settle<S>(&self, watch: &Watch<'_, S>, first: Gates) -> Result<Gates, Box<Outcome>>
    where
        S: Future<Output = &'static str> + Clone,
    {
        let quiet = watch
            .run(Stage::Quiet, self.quiet())
            .await
            .map_err(|s| stopped_before_lock(&s))?;
        let quiet = match quiet {
            Ok(q) => q,
            Err(e) => {
                return Err(Box::new(Outcome::failed(RunError::from(e).to_string())));
            }
        };
        tracing::info!(
            waited_seconds = quiet.waited_seconds(),
            end = quiet.end.as_str(),
            polls = quiet.polls,
            changes = quiet.changes,
            "{}",
            quiet.reason
        );
        let mut gates = if quiet.end == QuietEnd::Off {
            first
        } else {
            let gate = watch
                .run(
                    Stage::Gates,
                    self.evaluate(first.ahead.as_ref(), gates::Baseline::Unread),
                )
                .await
                .map_err(|s| stopped_before_lock(&s))?;
            match gate {
                Ok(Gate::Pass(g)) => g,
                Ok(Gate::Wait { reason, mut gates }) => {
                    gates.quiet = Some(quiet);
                    tracing::info!("{reason}");
                    return Err(Box::new(Outcome::waiting(reason, &gates)));
                }
                Err(e) => {
                    return Err(Box::new(Outcome::failed(RunError::from(e).to_string())));
                }
            }
        };
        gates.quiet = Some(quiet);
        Ok(gates)
    }

    /// Removes the temporary files that killed runs left in the output folders; the lock
    /// holder does it, before it writes its own.
    async fn clean_up(&self) {
        for folder in [&self.config.jsonl_folder, &self.config.model_meta_folder] {
            // "folder/", or "" for the bucket's root.
            let prefix = crate::storage::join(folder, "");
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

    /// Removes the line store of a run that will be no baseline, and its mention.
    async fn drop_lines(&self, record: &mut crate::record::RunRecord) {
        let Some(uri) = record.lines_uri.take() else {
            return;
        };
        let key = uri
            .strip_prefix(&self.store.uri(""))
            .unwrap_or(uri.as_str());
        if let Err(e) = self.store.delete(key).await {
            tracing::warn!(object = %uri, error = %e, "could not remove the line store of a run that is no baseline");
        }
    }

    /// Removes the datasets of a run that will not tune them.
    async fn discard(&self, record: &crate::record::RunRecord) {
        for uri in [
            &record.train_dataset_uri,
            &record.validation_dataset_uri,
            &record.index_uri,
        ]
        .into_iter()
        .flatten()
        {
            let key = uri
                .strip_prefix(&self.store.uri(""))
                .unwrap_or(uri.as_str());
            if let Err(e) = self.store.delete(key).await {
                tracing::warn!(object = %uri, error = %e, "could not remove a dataset that will not be tuned");
            }
        }
    }

    /// What a build reads first, at once: the champion pointer and the evaluation set in use.
    async fn ready(&self) -> Ready {
        let (pointer, eval_set) = tokio::join!(self.check_pointer(), self.open_eval_set());
        Ready { pointer, eval_set }
    }

    /// Build, check, submit, follow, judge: each step watched, its result written into `run`
    /// as it returns. `ready`: [`Job::ready`].
    async fn train<S>(
        &self,
        run: &mut Progress,
        watch: &Watch<'_, S>,
        gates: &Gates,
        lease: &Lease,
        detach: bool,
        ready: impl Future<Output = Ready>,
    ) -> Result<Trained, Stop>
    where
        S: Future<Output = &'static str> + Clone,
    {
        let Ready { pointer, eval_set } = watch.run(Stage::Train, ready).await?;
        // A champion pointer no run can read would stop every promotion in silence: fail now,
        // before anything is paid for.
        pointer?;
        // The project's concurrent tuning quota: build nothing a busy project cannot tune.
        let busy = watch.step(Stage::Train, self.tuner.busy()).await?;
        if busy.len() >= self.config.max_concurrent_tuning_jobs as usize && !busy.is_empty() {
            tracing::info!(jobs = %busy.join(", "), "every concurrent tuning slot is busy; deferred");
            return Ok(Trained::Deferred(busy));
        }
        let run_id = run.record.run_id.clone();
        let seed = self.split_seed(gates.baseline.as_ref());
        run.record.split_seed = Some(seed.clone());
        let made = watch
            .step(
                Stage::Train,
                Box::pin(self.build_datasets(&run_id, gates, &seed, eval_set)),
            )
            .await?;
        made.record_into(&mut run.record);
        run.eval_set = made.eval_set;
        let built = made.built;
        let estimate = self.quality(gates, &built)?;
        tracing::info!(
            training_tokens = estimate.training_tokens,
            cost = estimate
                .cost
                .map_or_else(|| "no price set".to_owned(), |c| format!("{c:.2}")),
            "token estimate"
        );
        run.record.estimate = Some((&estimate).into());
        self.check_budget(&estimate)?;
        let digest = self.dataset_digest(&built);
        run.record.dataset_digest = Some(digest.clone());
        if gates
            .baseline
            .as_ref()
            .and_then(|b| b.record.dataset_digest.as_ref())
            == Some(&digest)
        {
            tracing::info!("the datasets equal the last run's: nothing new to tune");
            let claimed = watch
                .step(
                    Stage::Train,
                    self.claim_record(gates, &built, run.record.training_start_time),
                )
                .await?;
            run.claimed(claimed);
            return Ok(Trained::Unchanged);
        }
        if let Some(reason) = self.too_few_changed(gates, &built) {
            return Ok(Trained::Waiting(reason));
        }
        let Some(train_uri) = built.train_uri.as_deref() else {
            return Err(RunError::NoTrainingExamples.into());
        };
        let datasets = tune::Datasets {
            built: &built,
            digest: &digest,
            train_uri,
            validation_uri: built.validation_uri.as_deref(),
        };
        match Box::pin(self.tune(run, watch, gates, datasets, lease, detach)).await? {
            Tuning::Submitted { job } => {
                tracing::info!(%job, "detached: a later run follows the job and finalises this run");
            }
            Tuning::Finished => {
                if matches!(run.record.status, RunStatus::Success | RunStatus::DryRun) {
                    Box::pin(self.judge_into(run, watch)).await?;
                }
            }
        }
        Ok(Trained::Tuned)
    }

    /// The evaluate stage, watched: what it decided is written into the record also when it
    /// was stopped (after the champion pointer moved, say).
    async fn judge_into<S>(&self, run: &mut Progress, watch: &Watch<'_, S>) -> Result<(), Stop>
    where
        S: Future<Output = &'static str> + Clone,
    {
        let mut judgement = evaluate::Judgement::default();
        let judged = watch
            .run(
                Stage::Evaluate,
                Box::pin(self.judge(
                    &run.record,
                    evaluate::set_to_judge(run.eval_set.as_ref()),
                    &mut judgement,
                )),
            )
            .await;
        judgement.record_into(&mut run.record);
        judged
    }

    /// Gate 3 on what the build read: a sample counts as new when it was written and its
    /// content differs from the baseline's sample of the same key (a rejected sample, an exact
    /// duplicate or a re-upload of the same bytes does not count).
    fn too_few_changed(&self, gates: &Gates, built: &crate::dataset::Built) -> Option<String> {
        let min = self.config.min_samples;
        let written = |i: usize| built.outcomes[i].validation.is_some();
        let all = 0..built.outcomes.len();
        // Of the changed samples: new content written, content already seen, not written.
        let (new, seen, unwritten) = match &gates.comparison {
            Some(c) => {
                let changed = || all.clone().filter(|&i| c.changed[i]);
                let same = |i: usize| built.outcomes[i].digest == c.previous[i];
                (
                    changed().filter(|&i| written(i) && !same(i)).count() as u64,
                    changed().filter(|&i| written(i) && same(i)).count() as u64,
                    changed().filter(|&i| !written(i)).count() as u64,
                )
            }
            None if gates.baseline.is_none() => {
                let n = all.clone().filter(|&i| written(i)).count() as u64;
                (n, 0, all.len() as u64 - n)
            }
            // A seed baseline without manifest: only the count difference is known.
            None => return None,
        };
        (new < min).then(|| {
            let mut why = Vec::new();
            if seen > 0 {
                why.push(format!("{seen} had content already seen"));
            }
            if unwritten > 0 {
                why.push(format!(
                    "{unwritten} were not written (rejected, duplicates or evaluation rows; rejects in {})",
                    built
                        .rejected_uri
                        .as_deref()
                        .unwrap_or("the run's rejected.jsonl")
                ));
            }
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join(", "))
            };
            format!(
                "gate 3: {new} of {} new or changed samples have new content and converted{why}, fewer than MIN_SAMPLES ({min})",
                gates.delta,
            )
        })
    }

    /// What is tuned, as one digest: the two files' bytes and the settings of the job.
    fn dataset_digest(&self, built: &crate::dataset::Built) -> String {
        job::digest(&serde_json::json!([
            built.train_digest,
            built.validation_digest,
            self.config.shape,
        ]))
    }
}

/// The reads a build starts with ([`Job::ready`]), read while gate 3 is checked again; `train`
/// takes their verdicts in its order.
struct Ready {
    /// The champion pointer can be read.
    pointer: Result<(), RunError>,
    /// The evaluation set in use, and the one that cannot be read (`open_eval_set`).
    eval_set: Result<
        (
            Option<crate::evaluate::set::Frozen>,
            Option<crate::evaluate::set::Damaged>,
        ),
        RunError,
    >,
}

/// How a run that took the lease ended, short of failing.
enum Trained {
    /// Tuned, or submitted with `--detach`.
    Tuned,
    /// Too few new samples converted: the run stops as if gate 3 had said wait.
    Waiting(String),
    /// The datasets equal the baseline's.
    Unchanged,
    /// MAX_CONCURRENT_TUNING_JOBS jobs (these) are running: nothing was built.
    Deferred(Vec<String>),
}

/// The outcome of a run stopped before it took the lease: nothing was written.
fn stopped_before_lock(stop: &Stop) -> Box<Outcome> {
    let reason = stop.to_string();
    tracing::info!("{reason}");
    Box::new(Outcome::new(stop.status(), reason))
}

/// Releases a lease whose run ends before it started work, within [`record::LAST_WRITE`]
/// (a lock that cannot be released expires on its own).
async fn release_quietly(lease: Lease) {
    free_quietly(lease.release()).await;
}

/// Frees a lease keeping the job it carries for the next run, within [`record::LAST_WRITE`].
async fn hand_over_quietly(lease: Lease) {
    free_quietly(lease.hand_over()).await;
}

async fn free_quietly(free: impl Future<Output = Result<(), StoreError>>) {
    match tokio::time::timeout(record::LAST_WRITE, free).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not release the run lock; it expires on its own");
        }
        Err(_) => tracing::warn!(
            "could not release the run lock within {} s; it expires on its own",
            record::LAST_WRITE.as_secs()
        ),
    }
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
