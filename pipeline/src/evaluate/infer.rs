//! Paired inference: every evaluation row asked of the candidate and of the champion, with the
//! same request, at most `concurrency` calls at once, and every answer stored as it arrives so
//! that a crash resumes without paying twice.
//!
//! A bucket object cannot be appended to, so answers are stored as small chunk objects, each
//! written once (`PutMode::Create`):
//!
//! ```text
//! {folder}/candidate/000000.jsonl   one line per row: {"id", "model", "reply"}
//! {folder}/candidate/000001.jsonl
//! {folder}/champion/000000.jsonl
//! ```
//!
//! Whatever answers have arrived are written at once, as one chunk per model (at most
//! [`FLUSH_EVERY`] answers; a few chunks at once when answers come faster than one write),
//! also when the evaluation fails: a killed process loses only the answers being written. On start, [`paired`] reads the chunks already there and asks only for what
//! is missing. An answer stored under another model's name (the champion changed between a
//! crash and the resumption) is not reused. A row that fails (400, a candidate endpoint still
//! missing after its window, retries spent) stops new calls; the calls in flight finish and
//! are stored, and the evaluation fails naming the row and the model.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Row;
use super::model::{Generation, Model, ModelError, Reply};
use crate::storage::{PutMode, Store, StoreError, get_bytes, list_all};

/// Answers of one model stored per chunk object.
pub const FLUSH_EVERY: usize = 32;

/// Chunk writes under way at once when answers arrive faster than one write takes.
pub const WRITES_IN_FLIGHT: usize = 8;

/// Largest chunk object read back (a chunk holds [`FLUSH_EVERY`] answers).
const CHUNK_LIMIT: u64 = 64 << 20;

/// Which side of the pair a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Candidate,
    Champion,
}

impl Role {
    pub const BOTH: [Role; 2] = [Role::Candidate, Role::Champion];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Champion => "champion",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Candidate => 0,
            Self::Champion => 1,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Both models' replies to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    pub id: String,
    pub key: String,
    pub candidate: Reply,
    pub champion: Reply,
}

/// What one model's side of the evaluation cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Calls that answered in this invocation (retries of one call not counted).
    pub calls_made: u64,
    /// Answers read back from storage instead of asked again.
    pub calls_resumed: u64,
    /// Prompt tokens of every answer used (made and resumed): the evaluation's cost.
    pub prompt_tokens: u64,
    /// Output tokens (answer and thinking) of every answer used.
    pub answer_tokens: u64,
}

impl Totals {
    fn add(&mut self, reply: &Reply) {
        self.prompt_tokens += reply.prompt_tokens;
        self.answer_tokens += reply.answer_tokens;
    }
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            calls_made: self.calls_made + o.calls_made,
            calls_resumed: self.calls_resumed + o.calls_resumed,
            prompt_tokens: self.prompt_tokens + o.prompt_tokens,
            answer_tokens: self.answer_tokens + o.answer_tokens,
        }
    }
}

/// Every row's pair of replies, in the order of the rows, and what they cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub rows: Vec<Paired>,
    pub candidate: Totals,
    pub champion: Totals,
}

impl Answers {
    /// Both sides together.
    pub fn total(&self) -> Totals {
        self.candidate + self.champion
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A row one model could not answer; what arrived before was stored.
    #[error("evaluation row {key} (the {role}): {source}")]
    Row {
        key: String,
        id: String,
        role: Role,
        #[source]
        source: ModelError,
    },
    #[error("storing evaluation answers under {folder}: {source}")]
    Store {
        folder: String,
        #[source]
        source: StoreError,
    },
    /// A stored chunk that cannot be read back.
    #[error("{uri}: line {line}: {reason}")]
    Corrupt {
        uri: String,
        line: usize,
        reason: String,
    },
}

/// One stored answer.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: String,
    model: String,
    reply: Reply,
}

/// One model's stored answers, and the number the next chunk gets.
struct Stored {
    replies: HashMap<String, Reply>,
    next_chunk: u64,
}

fn chunk_prefix(folder: &str, role: Role) -> String {
    format!("{folder}/{}/", role.as_str())
}

/// Reads the chunks of `role` under `folder`, keeping the answers of `model`.
async fn load(
    store: &dyn Store,
    folder: &str,
    role: Role,
    model: &str,
) -> Result<Stored, InferError> {
    let prefix = chunk_prefix(folder, role);
    let store_error = |source| InferError::Store {
        folder: store.uri(folder),
        source,
    };
    let mut stored = Stored {
        replies: HashMap::new(),
        next_chunk: 0,
    };
    let mut other_model = 0usize;
    for meta in list_all(store, &prefix).await.map_err(store_error)? {
        let Some(n) = meta
            .key
            .strip_prefix(&prefix)
            .and_then(|k| k.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        stored.next_chunk = stored.next_chunk.max(n + 1);
        let data = get_bytes(store, &meta.key, CHUNK_LIMIT)
            .await
            .map_err(store_error)?;
        let uri = store.uri(&meta.key);
        let text = std::str::from_utf8(&data).map_err(|e| InferError::Corrupt {
            uri: uri.clone(),
            line: 0,
            reason: format!("not UTF-8: {e}"),
        })?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let line: Line = serde_json::from_str(line).map_err(|e| InferError::Corrupt {
                uri: uri.clone(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            if line.model == model {
                stored.replies.insert(line.id, line.reply);
            } else {
                other_model += 1;
            }
        }
    }
    if other_model > 0 {
        tracing::warn!(
            role = %role,
            model,
            answers = other_model,
            "stored evaluation answers of another model are not reused; asking again"
        );
    }
    Ok(stored)
}

/// Writes `lines` as the next chunk of `role` (create-only: a number another writer took is
/// skipped).
async fn flush(
    store: &dyn Store,
    folder: &str,
    role: Role,
    next_chunk: &AtomicU64,
    lines: Vec<Line>,
) -> Result<(), InferError> {
    let mut data = Vec::new();
    for l in &lines {
        serde_json::to_writer(&mut data, l).expect("answers serialise");
        data.push(b'\n');
    }
    let data = Bytes::from(data);
    loop {
        let n = next_chunk.fetch_add(1, Ordering::SeqCst);
        let key = format!("{}{n:06}.jsonl", chunk_prefix(folder, role));
        match store.put(&key, data.clone(), PutMode::Create).await {
            Ok(_) => return Ok(()),
            // Another writer took this number: take the next.
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(source) => {
                return Err(InferError::Store {
                    folder: store.uri(folder),
                    source,
                });
            }
        }
    }
}

/// A reply that arrived, on its way to storage.
type Arrived = (Role, String, Reply);

/// Asks each `(role, row)` of `units`, at most `concurrency` at once, sending replies to `tx`.
/// The first failure stops new calls (those in flight finish and are sent) and is returned.
async fn ask_all(
    units: Vec<(Role, &Row)>,
    models: [&dyn Model; 2],
    configs: &[Generation; 2],
    concurrency: usize,
    progress: &indicatif::ProgressBar,
    tx: tokio::sync::mpsc::Sender<Arrived>,
) -> Option<InferError> {
    let stop = AtomicBool::new(false);
    let mut answered = futures::stream::iter(units)
        .map(|(role, row)| {
            let stop = &stop;
            async move {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                let r = models[role.index()]
                    .generate(row, &configs[role.index()])
                    .await;
                Some((role, row, r))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut first_error = None;
    while let Some(done) = answered.next().await {
        let Some((role, row, result)) = done else {
            continue;
        };
        match result {
            Ok(reply) => {
                progress.inc(1);
                if tx.send((role, row.id.clone(), reply)).await.is_err() {
                    // The writer failed; it reports why.
                    stop.store(true, Ordering::SeqCst);
                }
            }
            Err(source) => {
                stop.store(true, Ordering::SeqCst);
                tracing::error!(row = %row.key, role = %role, error = %source, "evaluation row failed");
                first_error.get_or_insert(InferError::Row {
                    key: row.key.clone(),
                    id: row.id.clone(),
                    role,
                    source,
                });
            }
        }
    }
    first_error
}

/// Stores replies from `rx` as they arrive. When no write is under way, whatever has arrived
/// is written at once (one chunk per model), so a killed process loses only the answers being
/// written; while writes are under way, answers gather into full chunks ([`FLUSH_EVERY`]),
/// written up to [`WRITES_IN_FLIGHT`] at once, so a fast stream of answers is not held up by
/// one write after another. Returns the replies stored.
async fn write_all(
    store: &dyn Store,
    folders: [&str; 2],
    models: [&dyn Model; 2],
    next_chunk: [u64; 2],
    mut rx: tokio::sync::mpsc::Receiver<Arrived>,
) -> Result<[Vec<(String, Reply)>; 2], InferError> {
    let next_chunk = next_chunk.map(AtomicU64::new);
    let mut pending: [Vec<Line>; 2] = [Vec::new(), Vec::new()];
    let mut made: [Vec<(String, Reply)>; 2] = [Vec::new(), Vec::new()];
    let mut writes = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        for role in Role::BOTH {
            let i = role.index();
            let due = pending[i].len() >= FLUSH_EVERY || writes.is_empty() || !open;
            if !pending[i].is_empty() && due && writes.len() < WRITES_IN_FLIGHT {
                let lines = std::mem::take(&mut pending[i]);
                writes.push(flush(store, folders[i], role, &next_chunk[i], lines));
            }
        }
        if !open && writes.is_empty() && pending.iter().all(Vec::is_empty) {
            return Ok(made);
        }
        // Answers wait in the channel while a full chunk waits for a write.
        let room = pending.iter().all(|p| p.len() < FLUSH_EVERY);
        tokio::select! {
            arrived = rx.recv(), if open && room => match arrived {
                Some((role, id, reply)) => {
                    let i = role.index();
                    made[i].push((id.clone(), reply.clone()));
                    pending[i].push(Line {
                        id,
                        model: models[i].name().to_owned(),
                        reply,
                    });
                }
                None => open = false,
            },
            Some(written) = writes.next(), if !writes.is_empty() => written?,
        }
    }
}

/// Asks `candidate` and `champion` for every row not already answered under `folder`, at most
/// `concurrency` calls in flight, storing answers as they arrive. Both get the same request;
/// only the `autotune_role` label differs. Rows with the same id (the same content) are asked
/// once.
#[allow(clippy::too_many_arguments)]
pub async fn paired(
    store: &dyn Store,
    folder: &str,
    rows: &[Row],
    candidate: &dyn Model,
    champion: &dyn Model,
    config: &Generation,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Answers, InferError> {
    paired_apart(
        store,
        [folder, folder],
        rows,
        candidate,
        champion,
        config,
        concurrency,
        progress,
    )
    .await
}

/// [`paired`] with each model's answers under a folder of its own (`folders`: the
/// candidate's, the champion's): several candidates (the checkpoints of one tuned model) are
/// judged against one champion, whose answers are stored once and read back for each.
#[allow(clippy::too_many_arguments)]
pub async fn paired_apart(
    store: &dyn Store,
    folders: [&str; 2],
    rows: &[Row],
    candidate: &dyn Model,
    champion: &dyn Model,
    config: &Generation,
    concurrency: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Answers, InferError> {
    let folders = folders.map(|f| f.trim_end_matches('/'));
    let models: [&dyn Model; 2] = [candidate, champion];
    let configs = Role::BOTH.map(|r| config.for_role(r.as_str()));
    let mut stored = Vec::with_capacity(2);
    for role in Role::BOTH {
        let i = role.index();
        stored.push(load(store, folders[i], role, models[i].name()).await?);
    }

    let mut unique = HashSet::new();
    let distinct: Vec<&Row> = rows.iter().filter(|r| unique.insert(&r.id)).collect();
    let mut totals = [Totals::default(); 2];
    let mut units = Vec::new();
    // Row by row, both models: what a crash leaves is mostly complete pairs.
    for row in &distinct {
        for role in Role::BOTH {
            if stored[role.index()].replies.contains_key(&row.id) {
                totals[role.index()].calls_resumed += 1;
            } else {
                units.push((role, *row));
            }
        }
    }
    let resumed = totals[0].calls_resumed + totals[1].calls_resumed;
    progress.set_length(2 * distinct.len() as u64);
    progress.set_position(resumed);
    tracing::info!(
        rows = distinct.len(),
        calls = units.len(),
        resumed,
        concurrency,
        candidate = candidate.name(),
        champion = champion.name(),
        "paired inference"
    );

    let (tx, rx) = tokio::sync::mpsc::channel::<Arrived>(FLUSH_EVERY * 2);
    let next_chunk = [stored[0].next_chunk, stored[1].next_chunk];
    let (row_error, written) = futures::join!(
        ask_all(units, models, &configs, concurrency, progress, tx),
        write_all(store, folders, models, next_chunk, rx)
    );
    let made = match (row_error, written) {
        (Some(e), Err(w)) => {
            tracing::error!(error = %w, "could not store the answers that arrived");
            return Err(e);
        }
        (Some(e), Ok(_)) | (None, Err(e)) => return Err(e),
        (None, Ok(made)) => made,
    };
    for (i, made) in made.into_iter().enumerate() {
        totals[i].calls_made = made.len() as u64;
        stored[i].replies.extend(made);
    }
    // The cost: one answer of each model per distinct row.
    for row in &distinct {
        for role in Role::BOTH {
            let i = role.index();
            if let Some(reply) = stored[i].replies.get(&row.id) {
                totals[i].add(reply);
            }
        }
    }
    let reply = |role: Role, row: &Row| {
        stored[role.index()]
            .replies
            .get(&row.id)
            .cloned()
            .expect("every row answered by both models")
    };
    Ok(Answers {
        rows: rows
            .iter()
            .map(|row| Paired {
                id: row.id.clone(),
                key: row.key.clone(),
                candidate: reply(Role::Candidate, row),
                champion: reply(Role::Champion, row),
            })
            .collect(),
        candidate: totals[0],
        champion: totals[1],
    })
}
