//! The frozen evaluation set: rows no run trains or validates on, written once under
//! `MODEL_META_FOLDER/eval/<set id>.jsonl` and reused by every later run, so that every
//! candidate and champion are compared on the same rows.
//!
//! A sample belongs to the set by its content digest, never by its name: a renamed or copied
//! evaluation sample stays out of training. The first run that evaluates picks the set: the
//! samples whose digest falls in the first EVAL_RATIO of the digest space, at most EVAL_MAX of
//! them (the smallest digests), never content an earlier run trained on. Later runs route the
//! set's members out of both files and leave every other sample to the train/validation split.
//! `--new-eval-set` picks a new set the same way and moves `eval/current.json` to it.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::{self, PutMode, Store, StoreError};

/// The folder of evaluation sets, under MODEL_META_FOLDER.
pub const FOLDER: &str = "eval";
/// The pointer to the set in use.
const CURRENT: &str = "current.json";
/// The largest set file read back (1,000 rows of long prompts fit many times over).
const MAX_SET_BYTES: u64 = 256 * 1024 * 1024;

/// One evaluation row: a tuning example split into the request and the expected answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The sample's content digest (hex): the row's identity across runs and renames.
    pub id: String,
    /// The sample key it was made from, for reports.
    pub key: String,
    /// `systemInstruction`, when the example has one (a Vertex `Content`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "systemInstruction"
    )]
    pub system_instruction: Option<Value>,
    /// The example's `contents` less its last `model` turn (Vertex `Content`s).
    pub contents: Vec<Value>,
    /// The text of the last `model` turn: the expected answer.
    pub reference: String,
}

impl Row {
    /// Splits a tuning example (one line of a dataset) into a row; `None` for a line that does
    /// not end with a `model` turn with text.
    pub fn from_line(key: &str, id: &str, line: &str) -> Option<Self> {
        let mut example: Value = serde_json::from_str(line).ok()?;
        let Value::Array(mut contents) = example.get_mut("contents")?.take() else {
            return None;
        };
        let last = contents.pop()?;
        if last["role"] != "model" || contents.is_empty() {
            return None;
        }
        let reference: String = last["parts"]
            .as_array()?
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect();
        Some(Self {
            id: id.to_owned(),
            key: key.to_owned(),
            system_instruction: example
                .get_mut("systemInstruction")
                .map(Value::take)
                .filter(|v| !v.is_null()),
            contents,
            reference,
        })
    }
}

/// What `eval/current.json` says of the set in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetInfo {
    /// The first 16 hex digits of the SHA-256 of the set's sorted row ids.
    pub id: String,
    pub rows: u64,
    /// The set file, relative to the bucket.
    pub object: String,
    pub created_by_run: String,
    pub created_at: DateTime<Utc>,
    /// EVAL_RATIO and EVAL_MAX when it was picked.
    pub ratio: f64,
    pub max: u64,
    /// The set this one replaced (`--new-eval-set`), or grew from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    /// This set is the one it replaced plus rows picked since (a set smaller than
    /// EVAL_MIN_ROWS grows from content no run trained on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grown: bool,
}

/// The set in use, read back.
#[derive(Debug, Clone)]
pub struct Frozen {
    pub info: SetInfo,
    pub rows: Vec<Row>,
    /// The generation of `current.json`, for the compare-and-swap of `--new-eval-set`.
    pub generation: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{object}: not an evaluation set: {reason}")]
    Corrupt { object: String, reason: String },
}

fn current_key(meta_folder: &str) -> String {
    storage::join(&storage::join(meta_folder, FOLDER), CURRENT)
}

/// The set in use, if a run picked one.
pub async fn current(store: &dyn Store, meta_folder: &str) -> Result<Option<Frozen>, SetError> {
    let key = current_key(meta_folder);
    let Some((body, generation)) = storage::get_versioned(store, &key, 1024 * 1024).await? else {
        return Ok(None);
    };
    let corrupt = |reason: String| SetError::Corrupt {
        object: store.uri(&key),
        reason,
    };
    let info: SetInfo = serde_json::from_slice(&body).map_err(|e| corrupt(e.to_string()))?;
    let body = storage::get_bytes(store, &info.object, MAX_SET_BYTES).await?;
    let corrupt = |line: usize, reason: String| SetError::Corrupt {
        object: store.uri(&info.object),
        reason: format!("line {line}: {reason}"),
    };
    let text = std::str::from_utf8(&body).map_err(|e| corrupt(0, e.to_string()))?;
    let rows = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str::<Row>(l).map_err(|e| corrupt(i + 1, e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Frozen {
        info,
        rows,
        generation,
    }))
}

/// What picking a set records.
#[derive(Debug, Clone)]
pub struct Picked {
    pub run_id: String,
    /// The rows extend the set replaced rather than replace it.
    pub grown: bool,
    pub ratio: f64,
    pub max: u64,
}

/// Writes `rows` as a new set and points `eval/current.json` at it: created when there is no
/// set, or moved from `replacing` (compare-and-swap on its generation).
pub async fn freeze(
    store: &dyn Store,
    meta_folder: &str,
    mut rows: Vec<Row>,
    picked: &Picked,
    replacing: Option<&Frozen>,
) -> Result<Frozen, SetError> {
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let id = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for r in &rows {
            h.update(r.id.as_bytes());
            h.update(b"\n");
        }
        crate::delta::hex(&h.finalize())[..16].to_owned()
    };
    let object = storage::join(&storage::join(meta_folder, FOLDER), &format!("{id}.jsonl"));
    let mut body = Vec::new();
    for r in &rows {
        serde_json::to_writer(&mut body, r).expect("a row serialises");
        body.push(b'\n');
    }
    match store.put(&object, Bytes::from(body), PutMode::Create).await {
        // The same rows were written before (a retried run): the object is the same.
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let info = SetInfo {
        id,
        rows: rows.len() as u64,
        object,
        created_by_run: picked.run_id.clone(),
        created_at: Utc::now(),
        ratio: picked.ratio,
        max: picked.max,
        replaced: replacing.map(|f| f.info.id.clone()),
        grown: picked.grown,
    };
    let mode = replacing.map_or(PutMode::Create, |f| PutMode::Update(f.generation.clone()));
    let pointer = serde_json::to_vec_pretty(&info).expect("set info serialises");
    let meta = store
        .put(&current_key(meta_folder), Bytes::from(pointer), mode)
        .await?;
    Ok(Frozen {
        info,
        rows,
        generation: meta.generation,
    })
}

/// A digest's place in the digest space, for picking a set.
fn position(digest: &[u8; 32]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("32 bytes"))
}

/// Which samples a build routes to the evaluation set.
#[derive(Debug, Default)]
pub struct Routing {
    /// The set in use: its members are in neither file.
    members: HashSet<[u8; 32]>,
    /// Picking a new set: digests under `threshold`, except content trained on before.
    pick: Option<Pick>,
}

#[derive(Debug)]
struct Pick {
    threshold: u64,
    max: usize,
    exclude: HashSet<[u8; 32]>,
}

/// Where a build puts a sample, as far as the evaluation set goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A member of the set in use: in neither file.
    Member,
    /// A candidate for the new set, at this position (the smallest EVAL_MAX are kept).
    Candidate(u64),
    /// Train or validation, as the split says.
    Split,
}

impl Routing {
    /// No evaluation set: every sample goes to the split.
    pub fn none() -> Self {
        Self::default()
    }

    /// The set in use.
    pub fn frozen(set: &Frozen) -> Self {
        Self {
            members: set
                .rows
                .iter()
                .filter_map(|r| crate::delta::unhex(&r.id))
                .collect(),
            pick: None,
        }
    }

    /// Picks a new set: EVAL_RATIO of the digest space, at most EVAL_MAX rows, never content
    /// in `exclude` (trained on before).
    pub fn pick(ratio: f64, max: u64, exclude: HashSet<[u8; 32]>) -> Self {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio.max(0.0) * 2f64.powi(64)) as u64
        };
        Self {
            members: HashSet::new(),
            pick: (ratio > 0.0 && max > 0).then(|| Pick {
                threshold,
                max: usize::try_from(max).unwrap_or(usize::MAX),
                exclude,
            }),
        }
    }

    /// Also keeps `set` (the set in use, which `--new-eval-set` replaces) out of both files:
    /// it stays in use when nothing new is picked, and the candidate of this run is judged
    /// on whichever set is in use when the build ends.
    #[must_use]
    pub fn holding_out(mut self, set: &Frozen) -> Self {
        self.members = Self::frozen(set).members;
        self
    }

    pub fn route(&self, digest: &[u8; 32]) -> Route {
        if self.members.contains(digest) {
            return Route::Member;
        }
        match &self.pick {
            Some(p) if position(digest) < p.threshold && !p.exclude.contains(digest) => {
                Route::Candidate(position(digest))
            }
            _ => Route::Split,
        }
    }

    /// Whether this build picks a new set.
    pub fn picking(&self) -> bool {
        self.pick.is_some()
    }

    /// Keeps the smallest EVAL_MAX candidates.
    pub fn picker(&self) -> Picker {
        Picker {
            max: self.pick.as_ref().map_or(0, |p| p.max),
            heap: BinaryHeap::new(),
            dropped: 0,
        }
    }
}

/// A candidate row and its position; ordered by position alone.
struct Candidate(u64, Row);

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Collects a new set's rows as a build streams, holding at most EVAL_MAX of them. Candidates
/// beyond EVAL_MAX are held out of both files in this run (and go to the split in later runs,
/// which route by the frozen set).
pub struct Picker {
    max: usize,
    heap: BinaryHeap<Candidate>,
    dropped: u64,
}

impl Picker {
    pub fn offer(&mut self, position: u64, row: Row) {
        if self.max == 0 {
            self.dropped += 1;
            return;
        }
        if self.heap.len() < self.max {
            self.heap.push(Candidate(position, row));
        } else if self.heap.peek().is_some_and(|top| position < top.0) {
            self.heap.pop();
            self.heap.push(Candidate(position, row));
            self.dropped += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// Candidates beyond EVAL_MAX (held out of both files).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn into_rows(self) -> Vec<Row> {
        self.heap.into_iter().map(|c| c.1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn row(id: u8) -> Row {
        Row {
            id: format!("{id:02x}").repeat(32),
            key: format!("k{id}"),
            system_instruction: None,
            contents: vec![serde_json::json!({"role": "user", "parts": [{"text": "q"}]})],
            reference: format!("a{id}"),
        }
    }

    #[test]
    fn a_line_splits_into_request_and_reference() {
        let line = r#"{"systemInstruction":{"role":"system","parts":[{"text":"be brief"}]},"contents":[{"role":"user","parts":[{"text":"2+2?"}]},{"role":"model","parts":[{"text":"4"}]}]}"#;
        let r = Row::from_line("k", "d", line).unwrap();
        assert_eq!(r.reference, "4");
        assert_eq!(r.contents.len(), 1);
        assert_eq!(
            r.system_instruction.unwrap()["parts"][0]["text"],
            "be brief"
        );
        let no_answer = r#"{"contents":[{"role":"user","parts":[{"text":"q"}]}]}"#;
        assert!(Row::from_line("k", "d", no_answer).is_none());
    }

    #[test]
    fn picking_is_by_digest_bounded_and_skips_trained_content() {
        let low = [0u8; 32];
        let high = [0xffu8; 32];
        let routing = Routing::pick(0.05, 1, HashSet::from([[1u8; 32]]));
        assert_eq!(routing.route(&low), Route::Candidate(0));
        assert_eq!(routing.route(&[1u8; 32]), Route::Split, "trained before");
        assert_eq!(routing.route(&high), Route::Split);
        let mut picker = routing.picker();
        picker.offer(5, row(5));
        picker.offer(3, row(3));
        picker.offer(9, row(9));
        assert_eq!(picker.dropped(), 2);
        assert_eq!(
            picker.into_rows(),
            vec![row(3)],
            "the smallest position is kept"
        );
    }

    #[tokio::test]
    async fn a_set_is_frozen_read_back_and_replaced_by_compare_and_swap() {
        let store = MemoryStore::named("eval-test");
        assert!(current(&store, "meta").await.unwrap().is_none());
        let picked = Picked {
            run_id: "r1".into(),
            grown: false,
            ratio: 0.05,
            max: 1000,
        };
        let first = freeze(&store, "meta", vec![row(2), row(1)], &picked, None)
            .await
            .unwrap();
        let read = current(&store, "meta").await.unwrap().unwrap();
        assert_eq!(read.info, first.info);
        assert_eq!(read.rows, vec![row(1), row(2)]);
        let routing = Routing::frozen(&read);
        assert_eq!(routing.route(&[1u8; 32]), Route::Member);
        assert_eq!(routing.route(&[3u8; 32]), Route::Split);
        // A second first-time freeze loses: one set at a time.
        assert!(matches!(
            freeze(&store, "meta", vec![row(3)], &picked, None).await,
            Err(SetError::Store(StoreError::AlreadyExists { .. }))
        ));
        let second = freeze(&store, "meta", vec![row(3)], &picked, Some(&read))
            .await
            .unwrap();
        assert_eq!(
            second.info.replaced.as_deref(),
            Some(first.info.id.as_str())
        );
        assert_eq!(
            current(&store, "meta").await.unwrap().unwrap().rows,
            vec![row(3)]
        );
    }
}
