//! Run records: `MODEL_META_FOLDER/model_metadata_YYYYMMDD_HHMMSS.json`, one per run that
//! passed the gates, with the seed's fields (so its users' tooling keeps working) and ours. The
//! newest successful record is the baseline of the next delta gate.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::sample::Category;
pub use crate::status::RunStatus;
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
    /// Lines taken from the last successful run's line store: samples not read again.
    #[serde(default)]
    pub reused: u64,
    pub unpaired_raw: u64,
    pub unpaired_labels: u64,
    pub ignored: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<serde_json::Value>,
    /// The first few unpaired files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpaired_examples: Vec<String>,
    /// The first few rejects of each category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_examples: Option<serde_json::Value>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<serde_json::Value>,
    /// Whether the candidate became the champion, and why not when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<serde_json::Value>,
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
        self.key
            .replacen(METADATA_PREFIX, MANIFEST_PREFIX, 1)
            .replace(".json", &format!(".jsonl.{extension}"))
    }
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
pub async fn latest(
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
pub async fn all(
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
pub async fn claim_names(
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
        let manifest_key = storage::join(
            meta_folder,
            &format!(
                "{MANIFEST_PREFIX}{suffix}.jsonl.{}",
                crate::compress::EXTENSION
            ),
        );
        if store.get(&meta_key).await.is_ok() {
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

/// Writes a record under a claimed name.
pub async fn write(store: &dyn Store, key: &str, record: &RunRecord) -> Result<String, StoreError> {
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
