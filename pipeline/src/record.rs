//! Run records: `MODEL_META_FOLDER/model_metadata_YYYYMMDD_HHMMSS.json`, one per run that
//! passed the gates, with the seed's fields (so its users' tooling keeps working) and ours. The
//! newest successful record is the baseline of the next delta gate.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::champion::TunedModel;
use crate::evaluate::bless::{Test, Verdict};
use crate::evaluate::infer::Totals;
use crate::evaluate::metrics::Metric;
use crate::sample::Category;
pub(crate) use crate::status::RunStatus;
use crate::storage::{self, PutMode, Store, StoreError};

const METADATA_PREFIX: &str = "model_metadata_";
const MANIFEST_PREFIX: &str = "model_manifest_";

/// Sample counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub pairs: u64,
    pub train: u64,
    pub validation: u64,
    pub held_out: u64,
    pub rejected: u64,
    pub rejected_by_category: BTreeMap<Category, u64>,
    pub ambiguous: u64,
    /// Exact duplicates (same content under another key) written once.
    pub duplicates: u64,
    /// Training-side samples whose content validated before, kept on the validation side.
    pub pinned_to_validation: u64,
    /// Samples in the evaluation set (in neither file).
    pub eval: u64,
    /// Candidates for a new evaluation set beyond EVAL_MAX, in neither file in this run.
    pub eval_held_out: u64,
    /// Near-copies of evaluation rows, held out of both files (`eval_leak` in
    /// `rejected.jsonl`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eval_leaks: u64,
    /// Near-duplicates of a sample written before them, held out (`near_duplicate` in
    /// `rejected.jsonl`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub near_duplicates: u64,
    /// Rows picked for a new evaluation set that left it because a near-copy of theirs was
    /// written in the same build.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eval_rows_with_copies_trained: u64,
    /// Lines taken from the last successful run's line store: samples not read again.
    #[serde(default)]
    pub reused: u64,
    pub unpaired_raw: u64,
    pub unpaired_labels: u64,
    pub ignored: u64,
}

/// Counts added after records were first written are left out while zero, so a record of
/// an earlier version reads and writes back the same.
#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Writes a typed part of a record as its JSON value: keys in alphabetical order at every
/// depth, as records have always been written (a `serde_json::Value` object sorts its keys),
/// so that the typed record is byte-for-byte the record of earlier versions.
pub(crate) fn as_json<T: Serialize, S: serde::Serializer>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// Reads a typed part of a record leniently: a part this version cannot read (written by
/// another tool or version) is left out with a warning instead of making the whole record
/// unreadable (which would lose a baseline).
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let Some(value) = Option::<serde_json::Value>::deserialize(d)? else {
        return Ok(None);
    };
    match serde_json::from_value(value) {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            tracing::warn!(error = %e, "a part of a run record this version cannot read is left out");
            Ok(None)
        }
    }
}

/// Reads a field that is written as `null` when it has no value and left out of other shapes
/// of its object: `Some(None)` for `null`, `None` when absent, so that both are written back
/// as they were.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The record's `estimate`: tokens of both datasets, billed tokens and cost (the
/// `validate::Estimate` of the quality stage, as recorded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenEstimate {
    pub train: DatasetTokens,
    pub validation: DatasetTokens,
    pub epochs: u32,
    /// Training tokens times epochs: what Vertex bills.
    pub training_tokens: u64,
    pub price_per_million_training_tokens: Option<f64>,
    pub cost: Option<f64>,
}

/// Tokens of one dataset in the record's estimate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetTokens {
    pub examples: u64,
    pub tokens: u64,
    pub max_example_tokens: u64,
    /// The non-empty buckets of tokens per example, smallest first.
    pub histogram: Vec<crate::validate::estimate::Bucket>,
}

impl From<&crate::validate::estimate::SetEstimate> for DatasetTokens {
    fn from(e: &crate::validate::estimate::SetEstimate) -> Self {
        Self {
            examples: e.examples,
            tokens: e.tokens,
            max_example_tokens: e.max_example_tokens,
            histogram: e.histogram.buckets(),
        }
    }
}

impl From<&crate::validate::Estimate> for TokenEstimate {
    fn from(e: &crate::validate::Estimate) -> Self {
        Self {
            train: (&e.train).into(),
            validation: (&e.validation).into(),
            epochs: e.epochs,
            training_tokens: e.training_tokens,
            price_per_million_training_tokens: e.price_per_million_training_tokens,
            cost: e.cost,
        }
    }
}

/// The record's `evaluation`: the candidate against the champion, as `autotune history`
/// shows it. A full evaluation fills every field; one recognised as promoted before, or
/// one that could not finish, has the verdict and the reasons (and the error).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Rows judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateScores>,
    /// Whether both models sampled (temperature above 0, or the model's own default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<ChampionScores>,
    /// The candidate's primary score less the champion's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Test>,
    /// Why not blessed (or why blessed without a judgement).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// `blessing.json`; `Some(None)` when it could not be written.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub blessing_uri: Option<Option<String>>,
    /// Why `blessing.json` could not be written (the verdict and its numbers are here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blessing_error: Option<String>,
    /// What the evaluation cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<EvalSpend>,
    /// Google's own metrics (EVAL_GOOGLE_METRICS) word for word; `Some(Null)` when not asked.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub google_metrics: Option<serde_json::Value>,
    /// Why the evaluation could not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every checkpoint judged (EVAL_CHECKPOINTS), with its score and interval, and the one
    /// that won; the fields above are the winner's (or, none winning, the best one's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<crate::evaluate::checkpoints::CheckpointsSummary>,
}

impl EvaluationSummary {
    /// Whether the candidate was blessed; `None` when the record says no verdict.
    pub fn blessed(&self) -> Option<bool> {
        self.verdict.map(|v| v == Verdict::Blessed)
    }

    /// As JSON, for a notice.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an evaluation summary serialises")
    }
}

/// The candidate's side of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CandidateScores {
    pub model: String,
    /// The name it answered under, when not its endpoint.
    pub serving: Option<String>,
    pub primary: f64,
    pub metrics: BTreeMap<String, f64>,
}

/// The champion's side of an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChampionScores {
    pub model: String,
    pub primary: f64,
    pub metrics: BTreeMap<String, f64>,
}

/// What an evaluation cost: each model's calls and tokens, and the sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalSpend {
    pub candidate: Totals,
    pub champion: Totals,
    /// Answers used, made and resumed.
    pub calls: u64,
    pub calls_made: u64,
    pub calls_resumed: u64,
    pub prompt_tokens: u64,
    pub answer_tokens: u64,
}

impl EvalSpend {
    pub fn new(candidate: Totals, champion: Totals) -> Self {
        let total = candidate + champion;
        Self {
            candidate,
            champion,
            calls: total.calls_made + total.calls_resumed,
            calls_made: total.calls_made,
            calls_resumed: total.calls_resumed,
            prompt_tokens: total.prompt_tokens,
            answer_tokens: total.answer_tokens,
        }
    }
}

/// The record's `promotion`: whether the candidate became the champion, and why not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    #[serde(default)]
    pub promoted: bool,
    /// Why it was not promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The champion now (the candidate when promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<String>,
    /// The champion it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// What happened to the Vertex alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The pointer already named the candidate: promoted by an earlier attempt of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recognised: Option<String>,
    /// The winning checkpoint made the model version's default (`models.patch`
    /// `defaultCheckpointId`), or why it could not be (the next run sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_checkpoint: Option<String>,
}

impl Promotion {
    /// Not promoted, and why.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::default()
        }
    }

    /// Promoted: `champion` replaced `previous`; `alias` says what happened to the alias.
    pub fn promoted(champion: &str, previous: &str, alias: impl Into<String>) -> Self {
        Self {
            promoted: true,
            champion: Some(champion.to_owned()),
            previous: Some(previous.to_owned()),
            alias: Some(alias.into()),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub status: RunStatus,
    // The seed's fields.
    #[serde(default)]
    pub sample_size: u64,
    #[serde(default)]
    pub previous_sample_size: u64,
    #[serde(default)]
    pub sample_delta: u64,
    pub training_start_time: DateTime<Utc>,
    #[serde(default)]
    pub training_end_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub training_duration_seconds: Option<i64>,
    #[serde(default)]
    pub model_details: serde_json::Value,
    #[serde(default)]
    pub trigger_bucket: Option<String>,
    #[serde(default)]
    pub trigger_object: Option<String>,
    #[serde(default)]
    pub trigger_generation: Option<String>,
    #[serde(default)]
    pub trigger_event_id: Option<String>,
    // Ours.
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub tuner: String,
    #[serde(default)]
    pub source_model: String,
    #[serde(default)]
    pub train_dataset_uri: Option<String>,
    #[serde(default)]
    pub validation_dataset_uri: Option<String>,
    #[serde(default)]
    pub rejected_uri: Option<String>,
    /// Which sample made which line (`index.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_uri: Option<String>,
    #[serde(default)]
    pub counts: Counts,
    #[serde(default)]
    pub split_seed: Option<String>,
    #[serde(default)]
    pub split_ratio: Option<f64>,
    /// The run accepted a split other than the last run's (RESPLIT).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resplit: bool,
    #[serde(default)]
    pub manifest_uri: Option<String>,
    /// The run's line store (`lines.bin.gz`): the next run's incremental build takes the
    /// lines of unchanged samples from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines_uri: Option<String>,
    #[serde(default)]
    pub lock_generation: Option<String>,
    #[serde(default)]
    pub baseline_run_id: Option<String>,
    /// SHA-256 over the training and validation files: a run whose datasets equal its
    /// baseline's has nothing new to tune (`unchanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Token and cost estimate of the datasets, to compare with Vertex's billable tokens in
    /// `model_details.tuning_data_stats`.
    #[serde(
        default,
        deserialize_with = "lenient",
        serialize_with = "as_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub estimate: Option<TokenEstimate>,
    /// The first few unpaired files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpaired_examples: Vec<String>,
    /// The first few rejects of each category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_examples: Option<serde_json::Value>,
    /// What the personal-data screening found (`PERSONAL_DATA`): kinds and counts, never a
    /// value.
    #[serde(
        default,
        deserialize_with = "lenient",
        serialize_with = "as_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub personal_data: Option<crate::screen::Tally>,
    /// How long the run waited for uploads to settle before its inventory (QUIET_PERIOD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_wait_seconds: Option<f64>,
    /// How that wait ended: `settled`, `max_wait` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_end: Option<String>,
    /// Why it stopped waiting, as a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_reason: Option<String>,
    /// The evaluation set the run was evaluated on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_set_id: Option<String>,
    /// The run picked a new evaluation set (the first evaluating run, or `--new-eval-set`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_eval_set: bool,
    /// Rows of the evaluation set whose reference the run updated (labels corrected): a new
    /// version of the set, the samples still out of both files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_set_revised: Option<u64>,
    /// The evaluation set in use could not be read, and what the run did about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_set_repaired: Option<String>,
    /// The candidate against the champion: verdict, scores, cost, the blessing's object.
    #[serde(
        default,
        deserialize_with = "lenient",
        serialize_with = "as_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub evaluation: Option<EvaluationSummary>,
    /// Whether the candidate became the champion, and why not when it did not.
    #[serde(
        default,
        deserialize_with = "lenient",
        serialize_with = "as_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub promotion: Option<Promotion>,
    #[serde(default)]
    pub error: Option<String>,
}

impl RunRecord {
    /// A record with nothing filled in, for struct-update syntax.
    pub fn empty() -> Self {
        Self {
            status: RunStatus::Failed,
            sample_size: 0,
            previous_sample_size: 0,
            sample_delta: 0,
            training_start_time: Utc::now(),
            training_end_time: None,
            training_duration_seconds: None,
            model_details: serde_json::Value::Null,
            trigger_bucket: None,
            trigger_object: None,
            trigger_generation: None,
            trigger_event_id: None,
            run_id: String::new(),
            tuner: String::new(),
            source_model: String::new(),
            train_dataset_uri: None,
            validation_dataset_uri: None,
            rejected_uri: None,
            index_uri: None,
            counts: Counts::default(),
            split_seed: None,
            split_ratio: None,
            resplit: false,
            manifest_uri: None,
            lines_uri: None,
            lock_generation: None,
            baseline_run_id: None,
            dataset_digest: None,
            estimate: None,
            reject_examples: None,
            personal_data: None,
            unpaired_examples: Vec::new(),
            quiet_wait_seconds: None,
            quiet_end: None,
            quiet_reason: None,
            eval_set_id: None,
            new_eval_set: false,
            eval_set_revised: None,
            eval_set_repaired: None,
            evaluation: None,
            promotion: None,
            error: None,
        }
    }
}

impl RunRecord {
    /// The model the run's tuner reported, if any.
    pub fn tuned_model(&self) -> Option<TunedModel> {
        TunedModel::of(&self.model_details)
    }

    /// The tuning jobs that held every concurrent slot when the run was deferred.
    pub fn busy_tuning_jobs(&self) -> Vec<String> {
        self.model_details
            .get("busy_tuning_jobs")
            .and_then(serde_json::Value::as_array)
            .map(|jobs| {
                jobs.iter()
                    .filter_map(|j| j.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A run record and its object key.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub record: RunRecord,
}

impl Stored {
    /// The manifest written beside this record: `.jsonl.zst`, or `.jsonl.gz` as records of
    /// earlier versions name it (`manifest_uri`).
    pub fn manifest_key(&self) -> String {
        let zstd = self
            .record
            .manifest_uri
            .as_deref()
            .is_some_and(|u| u.ends_with(&format!(".{}", crate::compress::EXTENSION)));
        let extension = if zstd {
            crate::compress::EXTENSION
        } else {
            "gz"
        };
        manifest_key_beside(&self.key, extension)
    }
}

/// The manifest's key beside the record key `meta_key` (`model_metadata_<stamp>.json` beside
/// `model_manifest_<stamp>.jsonl.<extension>`), as [`claim_names`] pairs them.
fn manifest_key_beside(meta_key: &str, extension: &str) -> String {
    let (folder, name) = meta_key.rsplit_once('/').unwrap_or(("", meta_key));
    let stamp = name.strip_prefix(METADATA_PREFIX).unwrap_or(name);
    let stamp = stamp.strip_suffix(".json").unwrap_or(stamp);
    storage::join(
        folder,
        &format!("{MANIFEST_PREFIX}{stamp}.jsonl.{extension}"),
    )
}

/// The run records' keys, oldest first (names embed the start time).
async fn keys(store: &dyn Store, meta_folder: &str) -> Result<Vec<String>, StoreError> {
    let prefix = storage::join(meta_folder, METADATA_PREFIX);
    let mut keys: Vec<String> = store
        .list(&prefix)
        .map_ok(|m| m.key)
        .try_filter(|k| {
            let json = std::path::Path::new(k)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            futures::future::ready(json)
        })
        .try_collect()
        .await?;
    keys.sort_unstable();
    Ok(keys)
}

/// Finds the newest record whose status is one of `accepted`.
pub(crate) async fn latest(
    store: &dyn Store,
    meta_folder: &str,
    accepted: &[RunStatus],
) -> Result<Option<Stored>, StoreError> {
    for key in keys(store, meta_folder).await?.into_iter().rev() {
        let body = storage::get_bytes(store, &key, 16 * 1024 * 1024).await?;
        match serde_json::from_slice::<RunRecord>(&body) {
            Ok(record) if accepted.contains(&record.status) => {
                return Ok(Some(Stored { key, record }));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(object = %store.uri(&key), error = %e, "unreadable run record skipped");
            }
        }
    }
    Ok(None)
}

/// Every readable run record, newest first (`autotune history`); unreadable ones are logged
/// and skipped. At most `limit` records are read.
pub(crate) async fn all(
    store: &dyn Store,
    meta_folder: &str,
    limit: usize,
) -> Result<Vec<Stored>, StoreError> {
    let mut out = Vec::new();
    for key in keys(store, meta_folder)
        .await?
        .into_iter()
        .rev()
        .take(limit)
    {
        let body = storage::get_bytes(store, &key, 16 * 1024 * 1024).await?;
        match serde_json::from_slice::<RunRecord>(&body) {
            Ok(record) => out.push(Stored { key, record }),
            Err(e) => {
                tracing::warn!(object = %store.uri(&key), error = %e, "unreadable run record skipped");
            }
        }
    }
    Ok(out)
}

/// Claims a fresh pair of names (record and manifest) for a run that started at `start`,
/// creating the manifest first with `manifest` so that two runs in one second never collide.
pub(crate) async fn claim_names(
    store: &dyn Store,
    meta_folder: &str,
    start: DateTime<Utc>,
    manifest: Option<Bytes>,
) -> Result<(String, Option<String>), StoreError> {
    let stamp = start.format("%Y%m%d_%H%M%S").to_string();
    for n in 0.. {
        let suffix = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}_{n}")
        };
        let meta_key = storage::join(meta_folder, &format!("{METADATA_PREFIX}{suffix}.json"));
        let manifest_key = manifest_key_beside(&meta_key, crate::compress::EXTENSION);
        if store.head(&meta_key).await.is_ok() {
            continue;
        }
        let Some(body) = &manifest else {
            return Ok((meta_key, None));
        };
        match store
            .put(&manifest_key, body.clone(), PutMode::Create)
            .await
        {
            Ok(_) => return Ok((meta_key, Some(manifest_key))),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    unreachable!("some suffix is free")
}

/// The manifest a run claimed beside the record name `meta_key` ([`claim_names`]), as a URI,
/// if it exists: what a run killed before its first record write leaves for its adopter.
pub(crate) async fn manifest_beside(store: &dyn Store, meta_key: &str) -> Option<String> {
    for extension in [crate::compress::EXTENSION, "gz"] {
        let key = manifest_key_beside(meta_key, extension);
        if store.head(&key).await.is_ok() {
            return Some(store.uri(&key));
        }
    }
    None
}

/// Writes a record under a claimed name.
pub(crate) async fn write(
    store: &dyn Store,
    key: &str,
    record: &RunRecord,
) -> Result<String, StoreError> {
    let body = serde_json::to_vec_pretty(record).expect("a record serialises");
    // The key was claimed by this run; a record is rewritten as the run progresses.
    store
        .put(key, Bytes::from(body), PutMode::Overwrite)
        .await?;
    Ok(store.uri(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed `evaluation`, `promotion` and `estimate` read every shape earlier versions
    /// wrote (`serde_json::json!` objects, keys sorted) and write it back byte for byte.
    #[test]
    fn typed_parts_of_a_record_are_written_as_earlier_versions_wrote_them() {
        use serde_json::json;
        let totals =
            json!({"answer_tokens": 7, "calls_made": 2, "calls_resumed": 1, "prompt_tokens": 30});
        let evaluations = [
            json!({
                "verdict": "BLESSED",
                "metric": "exact_match",
                "rows": 60,
                "candidate": { "model": "m@1", "serving": null, "primary": 0.75, "metrics": {"exact_match": 0.75, "blocked_rate": 0.0} },
                "sampled": false,
                "champion": { "model": "base", "primary": 0.5, "metrics": {"exact_match": 0.5} },
                "delta": 0.25,
                "test": {"name": "mcnemar_exact", "candidate_only_right": 20, "champion_only_right": 2, "p_value": 0.0001},
                "reasons": [],
                "blessing_uri": null,
                "cost": {"candidate": totals, "champion": totals, "calls": 6, "calls_made": 4, "calls_resumed": 2, "prompt_tokens": 60, "answer_tokens": 14},
                "google_metrics": null,
            }),
            json!({
                "verdict": "NOT_BLESSED",
                "metric": "rouge_l",
                "rows": 50,
                "candidate": { "model": "m@1", "serving": "projects/p/locations/us/endpoints/1", "primary": 0.25, "metrics": {"rouge_l": 0.25} },
                "sampled": true,
                "champion": { "model": "base", "primary": 0.5, "metrics": {"rouge_l": 0.5} },
                "delta": -0.25,
                "test": {"name": "paired_bootstrap", "resamples": 2000, "seed": 7, "interval": [-0.3, -0.2]},
                "reasons": ["worse"],
                "blessing_uri": "gs://b/d/r/blessing.json",
                "cost": {"candidate": totals, "champion": totals, "calls": 6, "calls_made": 4, "calls_resumed": 2, "prompt_tokens": 60, "answer_tokens": 14},
                "google_metrics": {"exactMatchMetricValues": [{"score": 1}]},
            }),
            json!({"verdict": "BLESSED", "reasons": ["blessed and promoted by an earlier attempt"]}),
            json!({"verdict": "NOT_BLESSED", "reasons": ["evaluation incomplete: x"], "error": "x"}),
        ];
        let promotions = [
            json!({"promoted": false, "reason": "r"}),
            json!({"promoted": false, "reason": "not blessed: r", "champion": "base"}),
            json!({"promoted": true, "champion": "m@1", "previous": "base", "alias": "moved"}),
            json!({"promoted": true, "champion": "m@1", "previous": "base", "alias": "moved", "recognised": "champion.json already named run r's candidate"}),
        ];
        let estimate = json!({
            "train": {"examples": 3, "tokens": 30, "max_example_tokens": 12, "histogram": [{"from": 8, "to": 16, "count": 3}]},
            "validation": {"examples": 0, "tokens": 0, "max_example_tokens": 0, "histogram": []},
            "epochs": 2,
            "training_tokens": 60,
            "price_per_million_training_tokens": null,
            "cost": null,
        });
        for (evaluation, promotion) in evaluations.iter().zip(&promotions) {
            let old = RunRecord {
                model_details: json!({"tuned_model": "m@1"}),
                ..RunRecord::empty()
            };
            let mut old = serde_json::to_value(&old).unwrap();
            old["evaluation"] = evaluation.clone();
            old["promotion"] = promotion.clone();
            old["estimate"] = estimate.clone();
            // As an earlier version wrote it: the parts as `Value`s, keys sorted.
            let written = serde_json::to_string_pretty(&old).unwrap();
            let record: RunRecord = serde_json::from_str(&written).unwrap();
            assert!(record.evaluation.is_some() && record.promotion.is_some());
            assert_eq!(
                record.estimate.as_ref().map(|e| e.training_tokens),
                Some(60)
            );
            let again = serde_json::to_string_pretty(&record).unwrap();
            let reread: serde_json::Value = serde_json::from_str(&again).unwrap();
            assert_eq!(reread, old, "{again}");
            for part in ["evaluation", "promotion", "estimate"] {
                let text = |v: &serde_json::Value| serde_json::to_string_pretty(&v[part]).unwrap();
                assert!(
                    again.contains(&text(&old).replace('\n', "\n  ")),
                    "{part} is not written as before: {again}"
                );
            }
        }
    }

    #[test]
    fn a_records_manifest_is_found_by_the_name_its_version_gave_it() {
        let stored = |uri: Option<&str>| Stored {
            key: "trained_model/model_metadata_20261207_101010.json".to_owned(),
            record: RunRecord {
                manifest_uri: uri.map(str::to_owned),
                ..RunRecord::empty()
            },
        };
        assert_eq!(
            stored(Some(
                "gs://b/trained_model/model_manifest_20261207_101010.jsonl.zst"
            ))
            .manifest_key(),
            "trained_model/model_manifest_20261207_101010.jsonl.zst"
        );
        for earlier in [
            Some("gs://b/trained_model/model_manifest_20261207_101010.jsonl.gz"),
            None,
        ] {
            assert_eq!(
                stored(earlier).manifest_key(),
                "trained_model/model_manifest_20261207_101010.jsonl.gz"
            );
        }
    }
}
