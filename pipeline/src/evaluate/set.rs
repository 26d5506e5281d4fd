//! The frozen evaluation set: rows no run trains or validates on, written once under
//! `MODEL_META_FOLDER/eval/<set id>.jsonl` and reused by every later run, so that every
//! candidate and champion are compared on the same rows.
//!
//! A sample belongs to the set by its identity as well as its content: by its content digest (a
//! renamed or copied evaluation sample stays out of training), by its key (a corrected label is
//! still the same sample: its row's reference is updated in a new version of the set, the old
//! content retired, never trained), and by any content a row had in an earlier version. The first run that evaluates picks the set: the
//! samples whose digest falls in the first EVAL_RATIO of the digest space, at most EVAL_MAX of
//! them (the smallest digests), never content an earlier run trained on. Later runs route the
//! set's members out of both files and leave every other sample to the train/validation split.
//! `--new-eval-set` picks a new set the same way and moves `eval/current.json` to it.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fingerprint::{Fingerprint, Index};
use crate::storage::{self, PutMode, Store, StoreError};

/// The folder of evaluation sets, under MODEL_META_FOLDER.
pub const FOLDER: &str = "eval";
/// The pointer to the set in use.
const CURRENT: &str = "current.json";
/// The largest set file read back.
pub const MAX_SET_BYTES: u64 = 256 * 1024 * 1024;
/// The largest set file written: a quarter of what the reader accepts, so that a set is always
/// read back (1,000 rows of long documents made 274 MB, and every later run failed). Rows
/// beyond it are left out of the set, the rows in the smallest digest positions kept.
pub const MAX_WRITE_BYTES: u64 = MAX_SET_BYTES / 4;
const _: () = assert!(MAX_WRITE_BYTES < MAX_SET_BYTES);

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
    /// The row's near-duplicate fingerprint: its turns and its reference, as the line it was
    /// made from ([`Fingerprint::of_line`]).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        let parts = || {
            self.contents
                .iter()
                .filter_map(|c| c.get("parts")?.as_array())
                .flatten()
        };
        if parts().any(|p| p.get("fileData").is_some() || p.get("inlineData").is_some()) {
            return None;
        }
        let turns = parts().filter_map(|p| p.get("text")?.as_str());
        Fingerprint::of_texts(turns.chain([self.reference.as_str()]))
    }

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
    /// Rows whose reference this version updated from the set it replaced (labels corrected).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revised: u64,
    /// Content digests (hex) rows had in earlier versions of this set: never trained or
    /// validated, as the rows themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
    /// Rows left out to keep the file under [`MAX_WRITE_BYTES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out_for_size: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// A set pointer that leads to no readable set: a damaged or unparsable pointer, a set file
/// missing, damaged, or larger than [`MAX_SET_BYTES`].
#[derive(Debug, Clone)]
pub struct Damaged {
    /// The object at fault (URI).
    pub object: String,
    pub reason: String,
    /// The set's id, when the pointer could be read.
    pub id: Option<String>,
    /// The generation of `current.json`, for the compare-and-swap that replaces it.
    pub generation: String,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// What `eval/current.json` leads to.
#[derive(Debug, Clone)]
pub enum Opened {
    /// No run picked a set yet.
    None,
    InUse(Frozen),
    /// A set that cannot be read: a run replaces it.
    Damaged(Damaged),
}

/// The set a new version replaces: its id and the generation of the pointer.
#[derive(Debug, Clone)]
pub struct Replacing {
    pub id: String,
    pub generation: String,
}

impl From<&Frozen> for Replacing {
    fn from(f: &Frozen) -> Self {
        Self {
            id: f.info.id.clone(),
            generation: f.generation.clone(),
        }
    }
}

impl From<&Damaged> for Replacing {
    fn from(d: &Damaged) -> Self {
        Self {
            id: d.id.clone().unwrap_or_else(|| "damaged".to_owned()),
            generation: d.generation.clone(),
        }
    }
}

fn current_key(meta_folder: &str) -> String {
    storage::join(&storage::join(meta_folder, FOLDER), CURRENT)
}

/// The set in use, if a run picked one; an error for a set that cannot be read.
pub async fn current(store: &dyn Store, meta_folder: &str) -> Result<Option<Frozen>, SetError> {
    match open(store, meta_folder).await? {
        Opened::None => Ok(None),
        Opened::InUse(f) => Ok(Some(f)),
        Opened::Damaged(d) => Err(SetError::Corrupt {
            object: d.object,
            reason: d.reason,
        }),
    }
}

/// What `eval/current.json` leads to: no set, the set in use, or a damaged one. Only a store
/// that cannot answer (not a missing, oversized or unparsable object) is an error.
pub async fn open(store: &dyn Store, meta_folder: &str) -> Result<Opened, StoreError> {
    open_within(store, meta_folder, MAX_SET_BYTES).await
}

async fn open_within(
    store: &dyn Store,
    meta_folder: &str,
    limit: u64,
) -> Result<Opened, StoreError> {
    let key = current_key(meta_folder);
    let got = match store.get(&key).await {
        Ok(g) => g,
        Err(e) if e.is_not_found() => return Ok(Opened::None),
        Err(e) => return Err(e),
    };
    let generation = got.generation.clone();
    let damaged = |object: String, reason: String, id: Option<String>| {
        Ok(Opened::Damaged(Damaged {
            object,
            reason,
            id,
            generation: generation.clone(),
        }))
    };
    let body = match got.bytes_limited(&store.uri(&key), 1024 * 1024).await {
        Ok(b) => b,
        Err(e @ StoreError::TooLarge { .. }) => {
            return damaged(store.uri(&key), e.to_string(), None);
        }
        Err(e) => return Err(e),
    };
    let info: SetInfo = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => return damaged(store.uri(&key), format!("not a set pointer: {e}"), None),
    };
    let object = store.uri(&info.object);
    let id = Some(info.id.clone());
    let body = match storage::get_bytes(store, &info.object, limit).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return damaged(object, "the set file is missing".into(), id),
        Err(StoreError::TooLarge { size, limit, .. }) => {
            return damaged(
                object,
                format!("{size} bytes is more than the {limit} bytes a set may have"),
                id,
            );
        }
        Err(e) => return Err(e),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return damaged(object, "not UTF-8".into(), id);
    };
    let mut rows = Vec::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Row>(l) {
            Ok(r) => rows.push(r),
            Err(e) => return damaged(object, format!("line {}: {e}", i + 1), id),
        }
    }
    Ok(Opened::InUse(Frozen {
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
    /// Rows whose reference was updated from the set replaced.
    pub revised: u64,
    /// Content digests of earlier versions' rows, kept out of training.
    pub retired: Vec<String>,
    /// How many of the rows given first are rows of the version replaced (revised or grown):
    /// those the byte bound leaves out are retired, never trained, as every row that was
    /// ever in the set.
    pub previous: usize,
}

/// Writes `rows` as a new set and points `eval/current.json` at it: created when there is no
/// set, or moved from `replacing` (compare-and-swap on its generation). The rows are kept in
/// the order given while the file stays under `max_bytes` (at most [`MAX_WRITE_BYTES`]); the
/// others are left out.
pub async fn freeze(
    store: &dyn Store,
    meta_folder: &str,
    rows: Vec<Row>,
    picked: &Picked,
    replacing: Option<&Replacing>,
    max_bytes: u64,
) -> Result<Frozen, SetError> {
    freeze_within(
        store,
        meta_folder,
        rows,
        picked,
        replacing,
        max_bytes.min(MAX_WRITE_BYTES),
    )
    .await
}

/// Keeps `rows`, in the order given, while their lines fit in `budget` bytes; returns those
/// kept, sorted by row id, the bytes of their lines, how many were left out, and the ids of
/// those left out among the first `previous` (rows of the version replaced). One line is
/// held at a time: the file is written from the rows kept, so that freezing a set holds its
/// rows and its file, not a third copy of its lines.
fn bounded(rows: Vec<Row>, budget: u64, previous: usize) -> (Vec<Row>, u64, u64, Vec<String>) {
    let mut used = 0u64;
    let mut left_out = 0u64;
    let mut retired = Vec::new();
    let mut kept = Vec::with_capacity(rows.len());
    let mut line = Vec::new();
    for (i, r) in rows.into_iter().enumerate() {
        line.clear();
        serde_json::to_writer(&mut line, &r).expect("a row serialises");
        let size = line.len() as u64 + 1;
        if used + size > budget {
            left_out += 1;
            if i < previous {
                retired.push(r.id);
            }
            continue;
        }
        used += size;
        kept.push(r);
    }
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    (kept, used, left_out, retired)
}

async fn freeze_within(
    store: &dyn Store,
    meta_folder: &str,
    rows: Vec<Row>,
    picked: &Picked,
    replacing: Option<&Replacing>,
    budget: u64,
) -> Result<Frozen, SetError> {
    let (rows, used, left_out, dropped) = bounded(rows, budget, picked.previous);
    let mut retired = picked.retired.clone();
    retired.extend(dropped);
    retired.sort_unstable();
    retired.dedup();
    if left_out > 0 {
        tracing::warn!(
            left_out,
            kept = rows.len(),
            max_bytes = budget,
            "evaluation set rows left out to keep the set file readable"
        );
    }
    // Exactly the file's size: no buffer grown by doubling beside the rows.
    let mut body = Vec::with_capacity(usize::try_from(used).unwrap_or(0));
    for r in &rows {
        serde_json::to_writer(&mut body, r).expect("a row serialises");
        body.push(b'\n');
    }
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
    let body = Bytes::from(body);
    match store.put(&object, body.clone(), PutMode::Create).await {
        Ok(_) => {}
        // The same rows were written before (a retried run): the object is the same, unless
        // it is the damaged set this one replaces (the same rows picked again).
        Err(StoreError::AlreadyExists { .. }) => {
            let same = storage::get_bytes(store, &object, body.len() as u64)
                .await
                .is_ok_and(|b| b == body);
            if !same {
                tracing::warn!(object = %store.uri(&object), "rewriting a damaged evaluation set file");
                store.put(&object, body, PutMode::Overwrite).await?;
            }
        }
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
        replaced: replacing.map(|f| f.id.clone()),
        grown: picked.grown,
        revised: picked.revised,
        retired,
        left_out_for_size: left_out,
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
    /// The set in use: its rows' content, and the content its rows had in earlier versions;
    /// in neither file.
    members: HashSet<[u8; 32]>,
    /// The set in use by sample key: a sample of that key is a member whatever its content.
    keys: HashMap<Box<str>, [u8; 32]>,
    /// Picking a new set: digests under `threshold`, except content trained on before.
    pick: Option<Pick>,
    /// The set in use's rows by sample key, with their near-duplicate fingerprints: no
    /// near-copy of one trains or validates.
    guarded: Vec<(String, Fingerprint)>,
}

#[derive(Debug)]
struct Pick {
    threshold: u64,
    max: usize,
    /// The bytes of the rows held while picking (at most [`MAX_WRITE_BYTES`]).
    max_bytes: u64,
    exclude: crate::delta::Digests,
}

/// Where a build puts a sample, as far as the evaluation set goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A member of the set in use: in neither file.
    Member,
    /// A member of the set in use by its key whose content changed (a corrected label): in
    /// neither file, and its row's reference is updated in a new version of the set.
    Revised,
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
        let mut keys = HashMap::with_capacity(set.rows.len());
        let mut members = HashSet::with_capacity(set.rows.len() + set.info.retired.len());
        for r in &set.rows {
            if let Some(d) = crate::delta::unhex(&r.id) {
                members.insert(d);
                keys.insert(r.key.as_str().into(), d);
            }
        }
        members.extend(
            set.info
                .retired
                .iter()
                .filter_map(|id| crate::delta::unhex(id)),
        );
        let guarded = set
            .rows
            .iter()
            .filter_map(|r| Some((r.key.clone(), r.fingerprint()?)))
            .collect();
        Self {
            members,
            keys,
            pick: None,
            guarded,
        }
    }

    /// Picks a new set: EVAL_RATIO of the digest space, at most EVAL_MAX rows, never content
    /// in `exclude` (trained on before).
    pub fn pick(ratio: f64, max: u64, exclude: crate::delta::Digests) -> Self {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio.max(0.0) * 2f64.powi(64)) as u64
        };
        Self {
            members: HashSet::new(),
            keys: HashMap::new(),
            pick: (ratio > 0.0 && max > 0).then(|| Pick {
                threshold,
                max: usize::try_from(max).unwrap_or(usize::MAX),
                max_bytes: MAX_WRITE_BYTES,
                exclude,
            }),
            guarded: Vec::new(),
        }
    }

    /// Also keeps `set` (the set in use, which `--new-eval-set` replaces) out of both files:
    /// it stays in use when nothing new is picked, and the candidate of this run is judged
    /// on whichever set is in use when the build ends.
    #[must_use]
    pub fn holding_out(mut self, set: &Frozen) -> Self {
        let frozen = Self::frozen(set);
        self.members = frozen.members;
        self.keys = frozen.keys;
        self.guarded = frozen.guarded;
        self
    }

    /// Where sample `key` with content `digest` goes.
    pub fn route(&self, key: &str, digest: &[u8; 32]) -> Route {
        if let Some(row) = self.keys.get(key) {
            return if row == digest {
                Route::Member
            } else {
                Route::Revised
            };
        }
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

    /// Whether the build compares its lines with evaluation rows (a set in use, or one being
    /// picked), and so fingerprints them.
    pub fn guards(&self) -> bool {
        !self.guarded.is_empty() || self.picking()
    }

    /// The rows of the set in use, indexed for their near-copies (by sample key).
    pub fn leak_guard(&self) -> Index<String> {
        let mut index = Index::new(crate::fingerprint::DEFAULT_THRESHOLD);
        for (key, f) in &self.guarded {
            index.insert(key.clone(), f.clone());
        }
        index
    }

    /// Holds the rows picked within `max_bytes` of lines (at most [`MAX_WRITE_BYTES`]): the
    /// evaluation's share of MAX_BYTES_IN_FLIGHT.
    #[must_use]
    pub fn within(mut self, max_bytes: u64) -> Self {
        if let Some(p) = &mut self.pick {
            p.max_bytes = max_bytes.min(MAX_WRITE_BYTES);
        }
        self
    }

    /// Whether the build holds rows of a set: the set in use, or one it picks.
    pub fn holds_rows(&self) -> bool {
        self.pick.is_some() || !self.keys.is_empty()
    }

    /// Keeps the smallest EVAL_MAX candidates.
    pub fn picker(&self) -> Picker {
        Picker {
            max: self.pick.as_ref().map_or(0, |p| p.max),
            heap: BinaryHeap::new(),
            dropped: 0,
            bytes: 0,
            budget: self.pick.as_ref().map_or(0, |p| p.max_bytes),
        }
    }
}

/// A candidate row, its position and the bytes of its line; ordered by position alone.
struct Candidate(u64, Row, u64);

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

/// Collects a new set's rows as a build streams, holding at most EVAL_MAX of them and at most
/// [`MAX_WRITE_BYTES`] of their lines. Candidates beyond are held out of both files in this
/// run (and go to the split in later runs, which route by the frozen set).
pub struct Picker {
    max: usize,
    heap: BinaryHeap<Candidate>,
    dropped: u64,
    /// The bytes of the lines held, and the most held ([`MAX_WRITE_BYTES`]).
    bytes: u64,
    budget: u64,
}

impl Picker {
    pub fn offer(&mut self, position: u64, row: Row) {
        let size = serde_json::to_vec(&row).map_or(u64::MAX, |l| l.len() as u64 + 1);
        if self.max == 0 || size > self.budget {
            self.dropped += 1;
            return;
        }
        if self.heap.len() < self.max {
            self.heap.push(Candidate(position, row, size));
            self.bytes += size;
        } else if self.heap.peek().is_some_and(|top| position < top.0) {
            if let Some(top) = self.heap.pop() {
                self.bytes -= top.2;
            }
            self.heap.push(Candidate(position, row, size));
            self.bytes += size;
            self.dropped += 1;
        } else {
            self.dropped += 1;
        }
        // Within the bytes a set may hold: the largest positions go first.
        while self.bytes > self.budget {
            let Some(top) = self.heap.pop() else { break };
            self.bytes -= top.2;
            self.dropped += 1;
        }
    }

    /// Candidates beyond EVAL_MAX (held out of both files).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The rows kept, the smallest position first.
    pub fn into_rows(self) -> Vec<Row> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| c.1)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::Digests;
    use crate::storage::memory::MemoryStore;

    /// A first set's pick, by run r1 (5 %, at most 1,000 rows).
    fn first_pick() -> Picked {
        Picked {
            run_id: "r1".into(),
            grown: false,
            ratio: 0.05,
            max: 1000,
            revised: 0,
            retired: Vec::new(),
            previous: 0,
        }
    }

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
        let routing = Routing::pick(0.05, 1, [[1u8; 32]].into_iter().collect());
        assert_eq!(routing.route("a", &low), Route::Candidate(0));
        assert_eq!(
            routing.route("b", &[1u8; 32]),
            Route::Split,
            "trained before"
        );
        assert_eq!(routing.route("c", &high), Route::Split);
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
        let picked = first_pick();
        let first = freeze(
            &store,
            "meta",
            vec![row(2), row(1)],
            &picked,
            None,
            MAX_WRITE_BYTES,
        )
        .await
        .unwrap();
        let read = current(&store, "meta").await.unwrap().unwrap();
        assert_eq!(read.info, first.info);
        assert_eq!(read.rows, vec![row(1), row(2)]);
        let routing = Routing::frozen(&read);
        assert_eq!(routing.route("renamed", &[1u8; 32]), Route::Member);
        assert_eq!(routing.route("k9", &[3u8; 32]), Route::Split);
        assert_eq!(routing.route("k2", &[2u8; 32]), Route::Member);
        assert_eq!(
            routing.route("k2", &[7u8; 32]),
            Route::Revised,
            "the same key, a corrected label"
        );
        // A second first-time freeze loses: one set at a time.
        assert!(matches!(
            freeze(&store, "meta", vec![row(3)], &picked, None, MAX_WRITE_BYTES).await,
            Err(SetError::Store(StoreError::AlreadyExists { .. }))
        ));
        let second = freeze(
            &store,
            "meta",
            vec![row(3)],
            &picked,
            Some(&Replacing::from(&read)),
            MAX_WRITE_BYTES,
        )
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

    /// Issue 20 item 4: 1,000 rows of long documents made a 274 MB set that no later run
    /// could read back. A set is bounded in bytes where it is written, under what the reader
    /// accepts, the rows first in the order given kept.
    #[tokio::test]
    async fn a_set_is_bounded_in_bytes_where_it_is_written() {
        let store = MemoryStore::named("eval-bounded");
        let long = |id: u8| Row {
            reference: "x".repeat(1000),
            ..row(id)
        };
        let picked = first_pick();
        // Room for two of the three rows.
        let line = serde_json::to_vec(&long(1)).unwrap().len() as u64 + 1;
        let frozen = freeze_within(
            &store,
            "meta",
            vec![long(3), long(1), long(2)],
            &picked,
            None,
            2 * line + 10,
        )
        .await
        .unwrap();
        assert_eq!(frozen.info.rows, 2);
        assert_eq!(frozen.info.left_out_for_size, 1);
        let read = current(&store, "meta").await.unwrap().unwrap();
        assert_eq!(
            read.rows,
            vec![long(1), long(3)],
            "the first given are kept"
        );
        let size = storage::get_bytes(&store, &read.info.object, 1 << 20)
            .await
            .unwrap()
            .len() as u64;
        assert!(size <= 2 * line + 10, "{size}");
        const { assert!(MAX_WRITE_BYTES < MAX_SET_BYTES) };
    }

    /// Issue 20: a new version of a set (labels revised, or grown) bounded in bytes left rows of
    /// the version it replaced out of the file, and out of `retired`: their samples trained in
    /// the next run. Rows of the replaced version that the bound leaves out are retired.
    #[tokio::test]
    async fn rows_of_the_replaced_version_left_out_for_size_never_train() {
        let store = MemoryStore::named("eval-bounded-revised");
        let long = |id: u8| Row {
            reference: "x".repeat(1000),
            ..row(id)
        };
        let picked = Picked {
            run_id: "r2".into(),
            grown: true,
            retired: vec![format!("{:064x}", 99)],
            previous: 2,
            ..first_pick()
        };
        let line = serde_json::to_vec(&long(1)).unwrap().len() as u64 + 1;
        // Rows 1 and 2 were in the set replaced, 3 is new; room for one row.
        let frozen = freeze(
            &store,
            "meta",
            vec![long(1), long(2), long(3)],
            &picked,
            None,
            line + 10,
        )
        .await
        .unwrap();
        assert_eq!(frozen.info.rows, 1);
        assert_eq!(frozen.info.left_out_for_size, 2);
        let read = current(&store, "meta").await.unwrap().unwrap();
        assert_eq!(read.rows, vec![long(1)]);
        assert!(
            read.info.retired.contains(&long(2).id),
            "the replaced version's row left out is retired: {:?}",
            read.info.retired
        );
        assert!(
            !read.info.retired.contains(&long(3).id),
            "a new candidate left out may train later"
        );
        assert!(read.info.retired.contains(&format!("{:064x}", 99)));
        let routing = Routing::frozen(&read);
        let digest = crate::delta::unhex(&long(2).id).unwrap();
        assert_eq!(routing.route("elsewhere", &digest), Route::Member);
    }

    /// A set the reader cannot take (too large, cut short, missing, a garbage pointer) is
    /// damaged, not an error that fails every run.
    #[tokio::test]
    async fn an_oversized_damaged_or_missing_set_opens_as_damaged() {
        let store = MemoryStore::named("eval-damaged");
        let picked = first_pick();
        let frozen = freeze(
            &store,
            "meta",
            vec![row(1), row(2)],
            &picked,
            None,
            MAX_WRITE_BYTES,
        )
        .await
        .unwrap();
        let Opened::Damaged(d) = open_within(&store, "meta", 10).await.unwrap() else {
            panic!("a set larger than the reader accepts is damaged");
        };
        assert!(d.object.ends_with(&frozen.info.object), "{d}");
        assert!(d.reason.contains("bytes"), "{d}");
        assert_eq!(d.id.as_deref(), Some(frozen.info.id.as_str()));
        store
            .put(
                &frozen.info.object,
                Bytes::from("{\"id\""),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        assert!(matches!(
            open(&store, "meta").await.unwrap(),
            Opened::Damaged(_)
        ));
        store.delete(&frozen.info.object).await.unwrap();
        let Opened::Damaged(d) = open(&store, "meta").await.unwrap() else {
            panic!("a missing set file is damaged");
        };
        assert!(d.reason.contains("missing"), "{d}");
        // Replacing it with the same rows rewrites the file.
        let again = freeze(
            &store,
            "meta",
            vec![row(1), row(2)],
            &picked,
            Some(&Replacing::from(&d)),
            MAX_WRITE_BYTES,
        )
        .await
        .unwrap();
        assert_eq!(again.info.id, frozen.info.id);
        assert_eq!(
            current(&store, "meta").await.unwrap().unwrap().rows.len(),
            2
        );
        store
            .put(
                "meta/eval/current.json",
                Bytes::from("nope"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let Opened::Damaged(d) = open(&store, "meta").await.unwrap() else {
            panic!("a garbage pointer is damaged");
        };
        assert!(d.object.ends_with("current.json"), "{d}");
    }

    /// A build holds at most what a set may hold: candidates beyond the write budget are
    /// dropped as they stream (the largest positions first), not held until the freeze.
    #[test]
    fn the_picker_holds_at_most_the_write_budget() {
        let long = |id: u8| Row {
            reference: "x".repeat(1000),
            ..row(id)
        };
        let line = serde_json::to_vec(&long(1)).unwrap().len() as u64 + 1;
        let routing = Routing::pick(1.0, 1000, Digests::default());
        let mut picker = routing.picker();
        picker.budget = 2 * line;
        for id in [5, 3, 9, 1] {
            picker.offer(u64::from(id), long(id));
            assert!(picker.bytes <= 2 * line, "{} bytes held", picker.bytes);
        }
        assert_eq!(picker.dropped(), 2);
        assert_eq!(picker.into_rows(), vec![long(1), long(3)]);
    }
}
