//! What `run` and `plan` print on stdout: one JSON object, made from a stage's decision or from
//! the run record at the end.

use serde::Serialize;

use crate::dataset;
use crate::record::{Counts, EvaluationSummary, Promotion, RunRecord};
use crate::status::RunStatus;

use super::record::counts_of;
use super::{Gates, ListingDigest, Lock, Quiet, QuietEnd};

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
    /// How long the quiet stage waited for uploads to settle (absent when it did not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_wait_seconds: Option<f64>,
    /// How it ended: `settled`, `max_wait` or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_end: Option<QuietEnd>,
    /// Why it stopped waiting, as a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub model_details: serde_json::Value,
    /// The candidate against the champion (verdict, scores, cost), when the run evaluated.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::record::as_json"
    )]
    pub evaluation: Option<EvaluationSummary>,
    /// Whether the candidate became the champion, and why not.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::record::as_json"
    )]
    pub promotion: Option<Promotion>,
    /// The digest of the samples the run built from (follow-up cycles compare it).
    #[serde(skip)]
    pub(crate) inputs: Option<ListingDigest>,
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
    /// What evaluating the candidate would cost: rows, calls, tokens (absent when off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<super::evaluate::EvalCost>,
}

impl Outcome {
    /// An outcome saying only its status and why; `min_samples` is filled in once, by the
    /// job that returns it ([`super::Job::run`], [`super::Job::plan`]).
    pub fn new(status: RunStatus, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            run_id: None,
            counts: Counts::default(),
            sample_delta: 0,
            min_samples: 0,
            unpaired_examples: Vec::new(),
            metadata_uri: None,
            train_dataset_uri: None,
            validation_dataset_uri: None,
            rejected_uri: None,
            manifest_uri: None,
            baseline_run_id: None,
            quiet_wait_seconds: None,
            quiet_end: None,
            quiet_reason: None,
            plan: None,
            model_details: serde_json::Value::Null,
            evaluation: None,
            promotion: None,
            inputs: None,
        }
    }

    /// Adds what the quiet stage did.
    pub(super) fn with_quiet(mut self, quiet: Option<&Quiet>) -> Self {
        if let Some(q) = quiet {
            self.quiet_wait_seconds = Some(q.waited_seconds());
            self.quiet_end = Some(q.end);
            self.quiet_reason = Some(q.reason.clone());
        }
        self
    }

    pub(super) fn failed(reason: impl Into<String>) -> Self {
        Self::new(RunStatus::Failed, reason)
    }

    /// A lock that ends the run before it starts (live, unreadable or failing).
    pub(super) fn of_lock(lock: &Lock) -> Self {
        match lock {
            Lock::Live(r) => {
                let damage = r.damage(chrono::Utc::now()).map_or_else(String::new, |d| {
                    format!(
                        "; the lease looks damaged ({d}): it is taken over once it has gone unrenewed for its duration, or free it now with `autotune unlock --force` if no run holds it"
                    )
                });
                Self::new(
                    RunStatus::Skipped,
                    format!(
                        "gate 1: run {} ({}) holds the lock until {}{damage}",
                        r.run_id, r.owner, r.expires_at
                    ),
                )
            }
            Lock::Unreadable { uri, reason } => Self::failed(format!(
                "gate 1: the lock {uri} is unreadable ({reason}); inspect it and run `autotune unlock --force`"
            )),
            Lock::Failed(e) => Self::failed(format!("gate 1: {e}")),
            Lock::Free { .. } | Lock::Expired { .. } => {
                Self::new(RunStatus::Success, "gate 1: the lock is free")
            }
        }
    }

    /// Gate 2 or 3 says wait.
    pub(super) fn waiting(reason: String, gates: &Gates) -> Self {
        let mut o = Self::new(RunStatus::Waiting, reason);
        o.counts = counts_of(&gates.inventory);
        o.sample_delta = gates.delta;
        o.unpaired_examples
            .clone_from(&gates.inventory.unpaired_examples);
        o.baseline_run_id = gates.baseline.as_ref().map(|b| b.record.run_id.clone());
        o.with_quiet(gates.quiet.as_ref())
    }

    /// The end of a run that took the lease, from its record.
    pub(super) fn of_record(record: &RunRecord, metadata_uri: Option<String>) -> Self {
        let reason = match (&record.error, record.status) {
            (Some(e), _) => e.clone(),
            (None, RunStatus::DryRun) => {
                "dry run: datasets written, Vertex AI request recorded".to_owned()
            }
            (None, RunStatus::Deferred) => format!(
                "deferred: every concurrent tuning slot of the project is busy (Google's quota counts every region): {}; a later run goes on",
                record
                    .busy_tuning_jobs()
                    .iter()
                    .map(|j| match crate::locations::location_of(j) {
                        Some(region) => format!("{j} in {region}"),
                        None => j.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, RunStatus::Running) => {
                "tuning job submitted; a later run follows it and finalises this run".to_owned()
            }
            (None, RunStatus::Unchanged) => format!(
                "unchanged: the datasets equal those of run {}; nothing was tuned",
                record.baseline_run_id.as_deref().unwrap_or("the last run")
            ),
            (None, _) => "tuning succeeded".to_owned(),
        };
        let reason = match (&record.evaluation, &record.promotion) {
            (Some(e), p) => {
                let verdict = e
                    .verdict
                    .unwrap_or(crate::evaluate::bless::Verdict::NotBlessed);
                let promoted = p.as_ref().is_some_and(|p| p.promoted);
                let why = e
                    .reasons
                    .first()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                format!(
                    "{reason}; candidate {verdict}{why}{}",
                    if promoted {
                        ", promoted to champion"
                    } else {
                        ", not promoted"
                    }
                )
            }
            (None, Some(p)) if p.promoted => {
                format!("{reason}; promoted to champion (evaluation off)")
            }
            _ => reason,
        };
        Self {
            status: record.status,
            reason,
            run_id: Some(record.run_id.clone()),
            counts: record.counts.clone(),
            sample_delta: record.sample_delta,
            min_samples: 0,
            unpaired_examples: record.unpaired_examples.clone(),
            metadata_uri,
            train_dataset_uri: record.train_dataset_uri.clone(),
            validation_dataset_uri: record.validation_dataset_uri.clone(),
            rejected_uri: record.rejected_uri.clone(),
            manifest_uri: record.manifest_uri.clone(),
            baseline_run_id: record.baseline_run_id.clone(),
            quiet_wait_seconds: record.quiet_wait_seconds,
            quiet_end: record.quiet_end.as_deref().and_then(QuietEnd::from_name),
            quiet_reason: record.quiet_reason.clone(),
            plan: None,
            model_details: record.model_details.clone(),
            evaluation: record.evaluation.clone(),
            promotion: record.promotion.clone(),
            inputs: None,
        }
    }
}
