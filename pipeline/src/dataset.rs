//! Dataset building: reads the samples with bounded concurrency, converts them on rayon, and
//! streams each line to the training or validation file as its split side says.
//!
//! ```text
//!  samples ──read (async, READ_CONCURRENCY at once)──▶ batches ──convert (rayon)──▶ writers
//!                                                                   │            ├─ train.jsonl
//!                                                                   └ rejects ──▶├─ val.jsonl
//!                                                                                └─ rejected.jsonl
//! ```
//! Batches keep their order, so the same inventory always yields the same files. Each line is
//! checked against Vertex's dataset rules on the rayon worker that made it (when
//! [`Options::check`] is set), so the run validates its files without reading them back; on
//! the same worker, before its line is made, a sample read is screened for personal data
//! ([`crate::screen`], [`Options::personal`]).
//! Nothing is held whole: the sample bytes in memory are bounded by a byte budget
//! (`max_bytes_in_flight`), and the writers upload in parts. A sample takes its share of the
//! budget before it is read (its objects' sizes, or for a `.gz` what it may inflate to, at most
//! MAX_TEXT_BYTES) and gives it back once its line is written. Shares are granted in sample
//! order, and batches go to conversion as soon as their samples are read, so a budget smaller
//! than a batch never stalls the stream. An upload that does not complete (an error, a signal)
//! leaves nothing under the final names.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt, stream};
use rayon::prelude::*;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::convert::{Converter, Loaded, Uris};
use crate::delta::{self, hex};
use crate::evaluate::set::{Picker, Route, Routing, Row};
use crate::fingerprint::{Admitted, Fingerprint, Index};
use crate::inventory::Ambiguity;
use crate::limit::Limiter;
use crate::lines;
use crate::modality::Modality;
use crate::reads::{self, ReadAhead, read_object};
use crate::sample::{Category, Reject, Sample};
use crate::screen;
use crate::split::{Side, Split};
use crate::storage::{self, MultipartUpload, Store, StoreError};
use crate::validate::{self, Tally};

const BATCH: usize = 64;
const WRITE_BUFFER: usize = 1 << 20;

/// A JSONL file being uploaded line by line.
pub(crate) struct JsonlWriter {
    upload: Box<dyn MultipartUpload>,
    buf: Vec<u8>,
    /// SHA-256 of every byte written, so runs can tell identical datasets apart cheaply.
    digest: sha2::Sha256,
    pub lines: u64,
    pub bytes: u64,
    pub uri: String,
}

impl JsonlWriter {
    pub(crate) async fn create(store: &dyn Store, key: &str) -> Result<Self, StoreError> {
        Ok(Self {
            upload: store.put_multipart(key).await?,
            buf: Vec::with_capacity(WRITE_BUFFER),
            digest: sha2::Sha256::default(),
            lines: 0,
            bytes: 0,
            uri: store.uri(key),
        })
    }

    pub(crate) async fn write_line(&mut self, line: &str) -> Result<(), StoreError> {
        use sha2::Digest;
        self.digest.update(line.as_bytes());
        self.digest.update(b"\n");
        // The line that crosses WRITE_BUFFER grows the buffer by itself, not to twice its size.
        self.buf.reserve_exact(line.len() + 1);
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        if self.buf.len() >= WRITE_BUFFER {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_BUFFER));
            self.upload.put_part(Bytes::from(chunk)).await?;
        }
        Ok(())
    }

    /// The SHA-256 of the lines written so far, in hex.
    pub(crate) fn digest(&self) -> String {
        use sha2::Digest;
        hex(&self.digest.clone().finalize())
    }

    /// Publishes the file if it has lines; an empty file is discarded and gives `None`.
    pub(crate) async fn finish(mut self) -> Result<Option<String>, StoreError> {
        if self.lines == 0 {
            self.upload.abort().await?;
            return Ok(None);
        }
        if !self.buf.is_empty() {
            self.upload.put_part(Bytes::from(self.buf)).await?;
        }
        self.upload.complete().await?;
        Ok(Some(self.uri))
    }
}

/// Where a run's files go.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub train: String,
    pub validation: String,
    pub rejected: String,
    /// Which sample made which line: a Vertex line cannot say it itself.
    pub index: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Built {
    pub train_examples: u64,
    pub validation_examples: u64,
    /// Validation-side samples beyond Vertex's 5,000, in neither file.
    pub held_out: u64,
    pub rejected: u64,
    pub rejected_by_category: BTreeMap<Category, u64>,
    /// The first few rejects of each category, for reports.
    pub reject_examples: BTreeMap<Category, Vec<RejectExample>>,
    pub train_uri: Option<String>,
    pub validation_uri: Option<String>,
    pub rejected_uri: Option<String>,
    /// `index.jsonl`: file, line, sample key and content digest of every line written.
    pub index_uri: Option<String>,
    pub train_bytes: u64,
    /// SHA-256 of the training and validation files' bytes.
    pub train_digest: String,
    pub validation_digest: String,
    /// Exact duplicates of a sample written before them (same content digest), skipped.
    pub duplicates: u64,
    /// Samples on the training side whose content validated in an earlier run: validated.
    pub pinned_to_validation: u64,
    /// Members of the evaluation set in use: in neither file.
    pub eval_members: u64,
    /// Candidates for a new evaluation set beyond EVAL_MAX: in neither file in this run.
    pub eval_held_out: u64,
    /// Near-copies of evaluation rows, held out of both files (reported as `eval_leak`).
    pub eval_leaks: u64,
    /// The first few of them, for reports.
    pub eval_leak_examples: Vec<RejectExample>,
    /// Near-duplicates of a sample written before them, held out (NEAR_DUPLICATE_THRESHOLD).
    pub near_duplicates: u64,
    /// The first few of them, for reports.
    pub near_duplicate_examples: Vec<RejectExample>,
    /// Rows picked for a new set that left it because a near-copy of theirs was written in
    /// the same build (before the row came).
    pub eval_rows_with_copies_trained: u64,
    /// Rows of the set in use whose content changed under the same key (corrected labels):
    /// the updated rows, held out as members.
    #[serde(skip)]
    pub eval_revised: Vec<Row>,
    /// A new evaluation set's rows, when the build picked one (at most EVAL_MAX).
    #[serde(skip)]
    pub eval_rows: Vec<Row>,
    /// Lines taken from the last run's line store, their samples not read.
    #[serde(skip)]
    pub reused: u64,
    /// This build's line store, for the next run.
    #[serde(skip)]
    pub lines_uri: Option<String>,
    /// Samples read at once when the build ended (adapted unless READ_CONCURRENCY pins it).
    #[serde(skip)]
    pub read_concurrency: usize,
    /// Per sample (inventory order): its content digest and file; `digest: None` for a
    /// rejected or held-out sample.
    #[serde(skip)]
    pub outcomes: Vec<delta::Outcome>,
    /// Vertex's rules checked on every line written, per file (with [`Options::check`]).
    #[serde(skip)]
    pub train_tally: Option<Tally>,
    #[serde(skip)]
    pub validation_tally: Option<Tally>,
    /// What the personal-data screening found (kinds and counts, never values).
    #[serde(skip)]
    pub personal_data: screen::Tally,
}

/// How many rejects of each category reports show.
const REJECT_EXAMPLES: usize = 3;

/// One reject, as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct RejectExample {
    pub key: String,
    pub reason: String,
}

/// Settings of the build stage.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Samples read at once: `Some(n)` pins it (READ_CONCURRENCY), `None` adapts it between
    /// 16 and 256 ([`crate::limit`]).
    pub read_concurrency: Option<usize>,
    pub max_text_bytes: u64,
    /// NEAR_DUPLICATE_THRESHOLD: a sample this similar to one written before it (by key) is
    /// held out as `near_duplicate`; `None`: off.
    pub near_duplicates: Option<f64>,
    /// Bytes of sample content held at once: read, being converted, or waiting to be written
    /// (see the module docs). A sample larger than the whole budget takes all of it.
    pub max_bytes_in_flight: u64,
    pub paths: Paths,
    /// Where the files go, when not to the store the samples come from (`plan` converts into
    /// a throwaway in-memory store).
    pub sink: Option<Arc<dyn Store>>,
    /// Check every line written against these rules.
    pub check: Option<Arc<validate::Options>>,
    /// Content digests that validated in an earlier run: such a sample validates again.
    pub pinned: Arc<HashSet<[u8; 32]>>,
    /// The evaluation set's members (in neither file), or the picking of a new set.
    pub eval: Arc<Routing>,
    /// The line stores of incremental builds; `None`: every sample is read, none is kept.
    pub lines: Option<Incremental>,
    /// Objects read while the listing arrived; the build takes what it can from them (and
    /// stops the read-ahead: its reads have their own limiter, which the listing's load may
    /// have driven down).
    pub ahead: Option<Arc<ReadAhead>>,
    /// What personal data in a sample read does (PERSONAL_DATA).
    pub personal: screen::Mode,
}

/// Where an incremental build keeps its lines, and where it finds the last run's (see
/// [`crate::lines`]).
#[derive(Debug, Clone)]
pub(crate) struct Incremental {
    /// This build's line store, written into the sink.
    pub out: String,
    /// What the last successful run kept; `None` for a full rebuild.
    pub previous: Option<PreviousLines>,
}

/// The last successful run's line store, and what is known of the samples it may hold.
#[derive(Debug, Clone)]
pub(crate) struct PreviousLines {
    /// The store's key in the bucket.
    pub key: String,
    /// Per sample (inventory order), the content digest the run's manifest gives when the
    /// sample's raw and label generations are the ones that run read.
    pub known: Arc<Vec<Option<[u8; 32]>>>,
}

/// The byte budget of the reads. Permits count KiB, so that one share of any size fits the
/// semaphore's `u32` acquisitions; the semaphore is fair, so shares are granted in the order
/// the samples ask for them.
#[derive(Clone)]
struct Budget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl Budget {
    fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, u32::MAX >> 4);
        Self {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits for `bytes` of the budget (all of it, if it is smaller).
    async fn take(&self, bytes: u64) -> OwnedSemaphorePermit {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        self.kib
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("the budget is never closed")
    }
}

/// What reading a sample may hold in memory: its text objects' sizes, or for a `.gz` what it
/// may inflate to; never more than MAX_TEXT_BYTES an object, since reads stop there.
fn bytes_needed(sample: &Sample, max_text_bytes: u64) -> u64 {
    let object = |size: u64, gzip: bool| reads::bytes_needed(size, gzip, max_text_bytes);
    let raw = if sample.raw.modality == Modality::Text {
        object(sample.raw.meta.size, sample.raw.gzip)
    } else {
        0
    };
    raw.saturating_add(object(sample.label.meta.size, sample.label.gzip))
}

/// Runs a closure on the rayon pool and awaits its result.
async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.await.expect("rayon task ran") {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// What was read ahead of an object, in the version listed.
async fn ahead(opts: &Options, meta: &storage::ObjectMeta, gzip: bool) -> Option<Bytes> {
    opts.ahead
        .as_ref()?
        .take(&meta.key, &meta.generation, gzip)
        .await
}

/// Reads a sample's objects, its raw text and its label at once (media are never read: what
/// their line needs comes from the listing), taking first what was read ahead. Only reads of
/// its own take a slot of `limiter`: the wait for a read-ahead's read is no read latency.
async fn load<'a>(
    store: &dyn Store,
    sample: &'a Sample,
    uris: &Uris,
    opts: &Options,
    limiter: &Limiter,
) -> Result<Loaded, Reject> {
    Converter::precheck(sample, uris)?;
    let fail = |object: &str| {
        let key = sample.key.clone();
        let object = object.to_owned();
        move |(category, reason): (Category, String)| Reject::new(&key, &object, category, reason)
    };
    let text = sample.raw.modality == Modality::Text;
    let raw_ahead = if text {
        ahead(opts, &sample.raw.meta, sample.raw.gzip).await
    } else {
        None
    };
    let label_ahead = ahead(opts, &sample.label.meta, sample.label.gzip).await;
    let slot = if (text && raw_ahead.is_none()) || label_ahead.is_none() {
        Some(limiter.start().await)
    } else {
        None
    };
    let throttled = AtomicBool::new(false);
    // What was read ahead, or the object read now.
    let read = |meta: &'a storage::ObjectMeta, gzip: bool, got: Option<Bytes>| {
        let throttled = &throttled;
        async move {
            match got {
                Some(bytes) => Ok(bytes),
                None => read_object(store, &meta.key, gzip, opts.max_text_bytes, throttled).await,
            }
        }
    };
    let (raw, label) = (&sample.raw, &sample.label);
    let raw = async {
        if text {
            Some(read(&raw.meta, raw.gzip, raw_ahead).await)
        } else {
            None
        }
    };
    let label = read(&label.meta, label.gzip, label_ahead);
    let (raw_text, label) = tokio::join!(raw, label);
    if let Some(slot) = slot {
        limiter.done(slot, throttled.load(Ordering::Relaxed));
    }
    // The raw file's failure first, as when the raw file was read first.
    let raw_text = raw_text.transpose().map_err(fail(&uris.raw))?;
    let label = label.map_err(fail(&uris.label))?;
    Ok(Loaded { raw_text, label })
}

pub(crate) fn uris(store: &dyn Store, sample: &Sample) -> Uris {
    Uris {
        raw: store.uri(&sample.raw.meta.key),
        label: store.uri(&sample.label.meta.key),
    }
}

/// One line of the run's `index.jsonl`.
#[derive(Serialize)]
struct IndexEntry<'a> {
    /// The dataset file, by name.
    file: &'a str,
    /// 1-based line number in that file.
    line: u64,
    key: &'a str,
    /// SHA-256 of the sample's content: the label's bytes and the raw text (media: its size
    /// and version, as listed; media are never read).
    digest: &'a str,
}

/// The content digest of a loaded sample (see [`IndexEntry::digest`]).
fn content_digest(sample: &Sample, loaded: &Loaded) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"label\0");
    h.update(&loaded.label);
    if let Some(text) = &loaded.raw_text {
        h.update(b"\0text\0");
        h.update(text);
    } else {
        // Media are never read: the listing's checksum stands for the bytes (the same under
        // any name); without one, the object's version.
        h.update(b"\0media\0");
        h.update(sample.raw.meta.size.to_be_bytes());
        match &sample.raw.meta.checksum {
            Some(sum) => h.update(sum.as_bytes()),
            None => h.update(sample.raw.meta.generation.as_bytes()),
        }
    }
    h.finalize().into()
}

/// A sample converted on rayon (or taken from the last run's line store): its line, its
/// content digest, and the line's check.
struct Line {
    text: String,
    digest: [u8; 32],
    check: Option<validate::LineCheck>,
    /// Its key in the line store.
    key: [u8; 32],
    /// Taken from the last run's line store.
    reused: bool,
    /// Its near-duplicate fingerprint, when the build compares lines with evaluation rows.
    fingerprint: Option<Fingerprint>,
}

/// A sample's bytes as read, or its line as the last run made it (with its content digest).
enum Got {
    Read(Result<Loaded, Reject>),
    Stored { text: String, digest: [u8; 32] },
}

/// What screening found in a sample read: the kinds, and whether they rejected it; `None`
/// for a sample not screened in this build (not read, or screening off).
type Screened = Option<(screen::Kinds, bool)>;

/// Converts a batch on rayon, each sample read screened first; each sample's budget share
/// travels with it to the writer.
fn convert_batch(
    batch: Vec<(usize, Uris, Got, OwnedSemaphorePermit)>,
    samples: &[Sample],
    converter: &dyn crate::convert::SampleConverter,
    check: Option<&validate::Options>,
    personal: screen::Mode,
    fingerprints: bool,
) -> Vec<(usize, Result<Line, Reject>, Screened, OwnedSemaphorePermit)> {
    batch
        .into_par_iter()
        .map(|(i, u, got, share)| {
            let line = |text: String, digest: [u8; 32], reused: bool| Line {
                check: check.map(|opts| validate::check_line(text.as_bytes(), opts)),
                key: lines::line_key(&samples[i], &u, &digest),
                digest,
                fingerprint: fingerprints.then(|| Fingerprint::of_line(&text)).flatten(),
                text,
                reused,
            };
            let mut screened = None;
            let line = match got {
                Got::Read(loaded) => loaded.and_then(|l| {
                    // The digest of the sample as uploaded: screening changes no identity.
                    let digest = content_digest(&samples[i], &l);
                    let (l, found) = screen::sample(personal, &samples[i], &u, l);
                    if personal != screen::Mode::Off {
                        screened = Some((found.kinds(), l.is_err()));
                    }
                    let text = converter.convert(&samples[i], &u, &l?)?;
                    Ok(line(text, digest, false))
                }),
                Got::Stored { text, digest } => Ok(line(text, digest, true)),
            };
            (i, line, screened, share)
        })
        .collect()
}

/// The files a build writes, and what it has written so far.
struct Writers {
    train: JsonlWriter,
    validation: JsonlWriter,
    rejected: JsonlWriter,
    index: JsonlWriter,
    train_name: String,
    validation_name: String,
    /// Vertex's rules on each file's lines (with [`Options::check`]).
    tallies: Option<(Tally, Tally)>,
    /// Content digests written: an exact duplicate (the same content under two keys) is
    /// written once, the first by key.
    seen: HashSet<[u8; 32]>,
    /// A new evaluation set's rows, when the build picks one.
    picker: Option<Picker>,
    /// The evaluation rows no near-copy may train on: the set in use, and the candidates
    /// for a new one as they come (by sample key).
    leaks: Index<String>,
    /// The fingerprints of the lines written while a new set is picked: a row picked after
    /// a near-copy of it was written leaves the new set.
    written: Vec<Fingerprint>,
    /// The samples written, one per cluster of near-duplicates (NEAR_DUPLICATE_THRESHOLD),
    /// by position in the inventory.
    near: Option<Index<u32>>,
    built: Built,
}

impl Writers {
    async fn create(sink: &dyn Store, opts: &Options, n: usize) -> Result<Self, StoreError> {
        let paths = &opts.paths;
        let file_name = |key: &str| key.rsplit('/').next().unwrap_or(key).to_owned();
        Ok(Self {
            train: JsonlWriter::create(sink, &paths.train).await?,
            validation: JsonlWriter::create(sink, &paths.validation).await?,
            rejected: JsonlWriter::create(sink, &paths.rejected).await?,
            index: JsonlWriter::create(sink, &paths.index).await?,
            train_name: file_name(&paths.train),
            validation_name: file_name(&paths.validation),
            tallies: opts
                .check
                .as_ref()
                .map(|c| (Tally::new(c.max_findings), Tally::new(c.max_findings))),
            seen: HashSet::new(),
            picker: opts.eval.picking().then(|| opts.eval.picker()),
            leaks: opts.eval.leak_guard(),
            written: Vec::new(),
            near: opts.near_duplicates.map(|t| Index::with_capacity(t, n)),
            built: Built {
                outcomes: vec![delta::Outcome::default(); n],
                personal_data: screen::Tally::new(opts.personal),
                ..Built::default()
            },
        })
    }

    /// Counts what screening found in a sample read.
    fn screened(&mut self, screened: Screened) {
        if let Some((kinds, rejected)) = screened {
            self.built.personal_data.add(kinds, rejected);
        }
    }

    async fn reject(&mut self, r: Reject) -> Result<(), StoreError> {
        tracing::warn!(sample = %r.key, objects = %r.objects.join(", "), category = %r.category, "sample rejected: {}", r.reason);
        let built = &mut self.built;
        *built.rejected_by_category.entry(r.category).or_default() += 1;
        let examples = built.reject_examples.entry(r.category).or_default();
        if examples.len() < REJECT_EXAMPLES {
            examples.push(RejectExample {
                key: r.key.clone(),
                reason: r.reason.clone(),
            });
        }
        built.rejected += 1;
        self.rejected
            .write_line(&serde_json::to_string(&r).expect("a reject serialises"))
            .await
    }

    /// Holds out a near-copy, reported in `rejected.jsonl` (counted apart from the rejects):
    /// of evaluation row `of` (`eval_leak`), or of sample `of` written before it
    /// (`near_duplicate`).
    async fn hold_out(
        &mut self,
        sample: &Sample,
        category: Category,
        of: &str,
        similarity: f64,
    ) -> Result<(), StoreError> {
        let (reason, count, examples) = match category {
            Category::EvalLeak => (
                format!(
                    "a near-copy (similarity {similarity:.2}) of evaluation row {of}: held out of both files, so that no blessing rests on a row the model trained on"
                ),
                &mut self.built.eval_leaks,
                &mut self.built.eval_leak_examples,
            ),
            _ => (
                format!(
                    "a near-duplicate (similarity {similarity:.2}) of sample {of}, which trains in its place (NEAR_DUPLICATE_THRESHOLD)"
                ),
                &mut self.built.near_duplicates,
                &mut self.built.near_duplicate_examples,
            ),
        };
        *count += 1;
        if examples.len() < REJECT_EXAMPLES {
            examples.push(RejectExample {
                key: sample.key.clone(),
                reason: reason.clone(),
            });
        }
        let r = Reject {
            key: sample.key.clone(),
            objects: vec![sample.raw.meta.key.clone(), sample.label.meta.key.clone()],
            category,
            reason,
        };
        tracing::info!(sample = %r.key, of = %of, category = %category, "{}", r.reason);
        self.rejected
            .write_line(&serde_json::to_string(&r).expect("a reject serialises"))
            .await
    }

    /// Writes sample `i`'s line to the file of its side (validation when its content ever
    /// validated), with its index entry; skips an exact duplicate.
    async fn write(
        &mut self,
        i: usize,
        line: Line,
        samples: &[Sample],
        split: &Split,
        opts: &Options,
    ) -> Result<(), StoreError> {
        let sample = &samples[i];
        let built = &mut self.built;
        if !self.seen.insert(line.digest) {
            built.duplicates += 1;
            built.outcomes[i].digest = Some(line.digest);
            return Ok(());
        }
        match opts.eval.route(&sample.key, &line.digest) {
            Route::Member => {
                built.eval_members += 1;
                built.outcomes[i].digest = Some(line.digest);
                return Ok(());
            }
            Route::Revised => {
                built.eval_members += 1;
                built.outcomes[i].digest = Some(line.digest);
                if let Some(row) = Row::from_line(&sample.key, &hex(&line.digest), &line.text) {
                    built.eval_revised.push(row);
                }
                return Ok(());
            }
            Route::Candidate(position) => {
                if let (Some(picker), Some(row)) = (
                    self.picker.as_mut(),
                    Row::from_line(&sample.key, &hex(&line.digest), &line.text),
                ) {
                    picker.offer(position, row);
                    built.outcomes[i].digest = Some(line.digest);
                    if let Some(f) = line.fingerprint {
                        self.leaks.insert(sample.key.clone(), f);
                    }
                    return Ok(());
                }
            }
            Route::Split => {}
        }
        if let Some(f) = line.fingerprint {
            if let Some((row, similarity)) = self.leaks.matches(&f) {
                let row = row.clone();
                // Known content (not new to the next run), in neither file.
                self.built.outcomes[i].digest = Some(line.digest);
                return self
                    .hold_out(sample, Category::EvalLeak, &row, similarity)
                    .await;
            }
            let at = u32::try_from(i).expect("fewer than 2^32 samples");
            if let Some(Admitted::Duplicate(&j, similarity)) =
                self.near.as_mut().map(|n| n.admit(at, f.clone()))
            {
                self.built.outcomes[i].digest = Some(line.digest);
                let of = samples[j as usize].key.clone();
                return self
                    .hold_out(sample, Category::NearDuplicate, &of, similarity)
                    .await;
            }
            if self.picker.is_some() {
                self.written.push(f);
            }
        }
        let built = &mut self.built;
        let pinned = &opts.pinned;
        let mut side = split.side(i);
        if side == Side::Train && pinned.contains(&line.digest) {
            side = Side::Validation;
            built.pinned_to_validation += 1;
        }
        built.outcomes[i] = delta::Outcome {
            digest: Some(line.digest),
            validation: Some(side == Side::Validation),
        };
        let (writer, name, tally) = match side {
            Side::Train => (
                &mut self.train,
                &self.train_name,
                self.tallies.as_mut().map(|t| &mut t.0),
            ),
            Side::Validation => (
                &mut self.validation,
                &self.validation_name,
                self.tallies.as_mut().map(|t| &mut t.1),
            ),
            Side::HeldOut => unreachable!("held-out samples are not converted"),
        };
        writer.write_line(&line.text).await?;
        if let (Some(tally), Some(check)) = (tally, line.check) {
            tally.add(check);
        }
        let entry = IndexEntry {
            file: name,
            line: writer.lines,
            key: &sample.key,
            digest: &hex(&line.digest),
        };
        self.index
            .write_line(&serde_json::to_string(&entry).expect("an entry serialises"))
            .await
    }

    /// Publishes the files (an empty one is discarded) and returns what was built.
    async fn finish(self) -> Result<Built, StoreError> {
        let mut built = self.built;
        if let Some(picker) = self.picker {
            built.eval_held_out = picker.dropped();
            let rows = picker.into_rows();
            let before = rows.len();
            built.eval_rows = without_near_copies_of(rows, &self.written);
            built.eval_rows_with_copies_trained = (before - built.eval_rows.len()) as u64;
        }
        if let Some((t, v)) = self.tallies {
            built.train_tally = Some(t);
            built.validation_tally = Some(v);
        }
        built.train_digest = self.train.digest();
        built.validation_digest = self.validation.digest();
        built.train_examples = self.train.lines;
        built.train_bytes = self.train.bytes;
        built.validation_examples = self.validation.lines;
        // Published at once (a round trip each on a remote store); a failure is told in this
        // order.
        let (train, validation, rejected, index) = tokio::join!(
            self.train.finish(),
            self.validation.finish(),
            self.rejected.finish(),
            self.index.finish()
        );
        built.train_uri = train?;
        built.validation_uri = validation?;
        built.rejected_uri = rejected?;
        built.index_uri = index?;
        Ok(built)
    }
}

/// The picked rows of which no near-copy was written (`written`: the fingerprints of the
/// lines written in the build that picked them, before the row came). A row whose near-copy
/// trains cannot judge; it leaves the set and trains in a later run.
fn without_near_copies_of(rows: Vec<Row>, written: &[Fingerprint]) -> Vec<Row> {
    if written.is_empty() {
        return rows;
    }
    let mut index = Index::new(crate::fingerprint::DEFAULT_THRESHOLD);
    for (i, row) in rows.iter().enumerate() {
        if let Some(f) = row.fingerprint() {
            index.insert(i, f);
        }
    }
    let mut copied = vec![false; rows.len()];
    for f in written {
        if let Some((&i, _)) = index.matches(f) {
            copied[i] = true;
        }
    }
    rows.into_iter()
        .zip(copied)
        .filter_map(|(row, copied)| (!copied).then_some(row))
        .collect()
}

/// Sample `i` with the line the last run made of it, if its store has one for this content.
async fn stored_line(
    stored: Arc<tokio::sync::Mutex<Option<lines::Reader>>>,
    samples: Arc<Vec<Sample>>,
    i: usize,
    uris: Uris,
    digest: Option<[u8; 32]>,
) -> (usize, Uris, Option<(String, [u8; 32])>) {
    let Some(digest) = digest else {
        return (i, uris, None);
    };
    let mut stored = stored.lock().await;
    let Some(reader) = stored.as_mut() else {
        return (i, uris, None);
    };
    let sample = &samples[i];
    let key = lines::line_key(sample, &uris, &digest);
    let found = reader
        .take(&sample.key, &key)
        .await
        .map(|text| (text, digest));
    (i, uris, found)
}

/// Builds the run's files. `progress` is told of every sample done.
pub(crate) async fn build(
    store: Arc<dyn Store>,
    samples: Arc<Vec<Sample>>,
    ambiguous: &[Ambiguity],
    split: Arc<Split>,
    converter: Arc<Converter>,
    opts: &Options,
    progress: &indicatif::ProgressBar,
) -> Result<Built, StoreError> {
    let n = samples.len();
    if let Some(ahead) = &opts.ahead {
        // From here the build reads what was not read ahead, at its own pace.
        ahead.stop();
    }
    let sink = opts.sink.clone().unwrap_or_else(|| store.clone());
    // Boxed: the writers and their tallies would make this future large.
    let mut files = Box::new(Writers::create(&*sink, opts, n).await?);
    for a in ambiguous {
        let r = Reject {
            key: a.key.clone(),
            objects: a.objects.clone(),
            category: a.category,
            reason: a.reason.clone(),
        };
        files.reject(r).await?;
    }

    let indices: Vec<usize> = (0..n).filter(|&i| split.side(i) != Side::HeldOut).collect();
    files.built.held_out = (n - indices.len()) as u64;
    progress.inc(files.built.held_out);

    let settings = lines::settings_digest(&converter, opts.max_text_bytes, opts.personal);
    let mut kept = match &opts.lines {
        Some(l) => Some(lines::Writer::create(&*sink, &l.out, &settings).await?),
        None => None,
    };
    let (known, stored) = match opts.lines.as_ref().and_then(|l| l.previous.as_ref()) {
        Some(p) => (
            Some(p.known.clone()),
            lines::Reader::open(&*store, &p.key, &settings).await,
        ),
        None => (None, None),
    };
    let stored = Arc::new(tokio::sync::Mutex::new(stored));

    let budget = Budget::new(opts.max_bytes_in_flight);
    let limiter = Arc::new(Limiter::new(opts.read_concurrency));
    let reads = stream::iter(indices)
        // One sample at a time, in sample order: the line store is read as one stream.
        .then(|i| {
            let u = uris(&*store, &samples[i]);
            let digest = known.as_ref().and_then(|k| k.get(i).copied().flatten());
            stored_line(stored.clone(), samples.clone(), i, u, digest)
        })
        .map(|(i, u, found)| {
            let (store, samples, opts) = (store.clone(), samples.clone(), opts.clone());
            let (budget, limiter) = (budget.clone(), limiter.clone());
            async move {
                let s = &samples[i];
                // Asked for first thing, so in sample order; held until the line is written.
                let need = found.as_ref().map_or_else(
                    || bytes_needed(s, opts.max_text_bytes),
                    |(text, _)| text.len() as u64,
                );
                let share = budget.take(need).await;
                let got = match found {
                    Some((text, digest)) if Converter::precheck(s, &u).is_ok() => {
                        Got::Stored { text, digest }
                    }
                    _ => Got::Read(load(&*store, s, &u, &opts, &limiter).await),
                };
                (i, u, got, share)
            }
        })
        .buffered(limiter.ceiling());
    let (check, personal) = (opts.check.clone(), opts.personal);
    let fingerprints = opts.eval.guards() || opts.near_duplicates.is_some();
    // `ready_chunks`, not `chunks`: a batch waiting to fill up would keep the shares of its
    // samples while the samples it waits for wait for shares.
    let batches = reads
        .ready_chunks(BATCH)
        .map(|batch| {
            let (samples, converter, check) = (samples.clone(), converter.clone(), check.clone());
            on_rayon(move || {
                convert_batch(
                    batch,
                    &samples,
                    &*converter,
                    check.as_deref(),
                    personal,
                    fingerprints,
                )
            })
        })
        .buffered(2);
    let mut batches = std::pin::pin!(batches);
    while let Some(batch) = batches.next().await {
        for (i, line, screened, share) in batch {
            files.screened(screened);
            match line {
                Ok(line) => {
                    if let Some(kept) = kept.as_mut() {
                        kept.add(&line.key, &samples[i].key, &line.text).await?;
                    }
                    files.built.reused += u64::from(line.reused);
                    files.write(i, line, &samples, &split, opts).await?;
                }
                Err(r) => files.reject(r).await?,
            }
            drop(share);
            progress.inc(1);
        }
    }
    let mut built = publish(files, kept, &*sink, opts).await?;
    built.read_concurrency = limiter.limit();
    Ok(built)
}

/// Publishes the files and the line store at once (a round trip each on a remote store).
async fn publish(
    files: Box<Writers>,
    kept: Option<lines::Writer>,
    sink: &dyn Store,
    opts: &Options,
) -> Result<Built, StoreError> {
    let (built, lines) = tokio::join!(files.finish(), async {
        match kept {
            Some(kept) => Some(kept.finish().await),
            None => None,
        }
    });
    let mut built = match built {
        Ok(built) => built,
        Err(e) => {
            // No record names a line store published beside files that were not: removed,
            // as if it had never been published.
            if let (Some(Ok(_)), Some(l)) = (&lines, &opts.lines)
                && let Err(d) = sink.delete(&l.out).await
            {
                tracing::warn!(object = %sink.uri(&l.out), error = %d, "could not remove the line store of a build that failed");
            }
            return Err(e);
        }
    };
    if let Some(lines) = lines {
        built.lines_uri = Some(lines?);
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{self, Rules};
    use crate::storage::PutMode;
    use crate::storage::local::LocalStore;
    use tokio::io::AsyncReadExt;

    fn options(max_text_bytes: u64) -> Options {
        Options {
            read_concurrency: Some(32),
            max_text_bytes,
            near_duplicates: None,
            max_bytes_in_flight: 64 << 20,
            paths: Paths {
                train: "out/train.jsonl".into(),
                validation: "out/val.jsonl".into(),
                rejected: "out/rejected.jsonl".into(),
                index: "out/index.jsonl".into(),
            },
            sink: None,
            check: None,
            pinned: Arc::default(),
            eval: Arc::default(),
            lines: None,
            ahead: None,
            personal: screen::Mode::Off,
        }
    }

    async fn text_samples(store: &dyn Store, n: usize) {
        for i in 0..n {
            for (ext, body) in [("txt", format!("q{i}")), ("json", format!("\"a{i}\""))] {
                let key = format!("raw_training_data/s{i:03}.{ext}");
                store
                    .put(&key, Bytes::from(body), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
        }
    }

    /// Builds every sample of `inv` into training.
    async fn build_all(store: Arc<dyn Store>, inv: &inventory::Inventory, opts: &Options) -> Built {
        let split = Arc::new(Split::assign(
            "seed",
            1.0,
            inv.samples.iter().map(|s| s.key.as_str()),
        ));
        Box::pin(build(
            store,
            inv.samples.clone(),
            &inv.ambiguous,
            split,
            Arc::new(Converter::default()),
            opts,
            &indicatif::ProgressBar::hidden(),
        ))
        .await
        .unwrap()
    }

    /// Lists the bucket, lets `meanwhile` change it, then builds; the rejects' lines.
    async fn build_after(
        store: Arc<dyn Store>,
        opts: &Options,
        meanwhile: impl FnOnce(),
    ) -> (Built, Vec<serde_json::Value>) {
        let rules = Rules::new(autotune_layout::Layout::default());
        let inv = inventory::take(&*store, &rules).await.unwrap();
        meanwhile();
        let built = build_all(store.clone(), &inv, opts).await;
        let rejects = match storage::get_bytes(&*store, &opts.paths.rejected, u64::MAX).await {
            Ok(b) => String::from_utf8(b.to_vec())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        (built, rejects)
    }

    /// Review 12: the evaluation set routes by content digest "so renames cannot leak
    /// them"; a media sample's digest takes its object's generation, which a rename (a copy)
    /// changes, so a renamed evaluation image goes to training.
    #[tokio::test]

    async fn a_renamed_media_sample_keeps_its_content_digest() {
        let store: Arc<dyn Store> = Arc::new(crate::storage::memory::MemoryStore::named(
            "review12-media-digest",
        ));
        let put = |key: &'static str, body: &'static str| {
            let store = store.clone();
            async move {
                store
                    .put(key, Bytes::from(body), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
        };
        put("raw_training_data/m000.png", "\u{89}PNG one picture").await;
        put("raw_training_data/m000.json", "\"a cat\"").await;
        let opts = options(1 << 20);
        let (before, _) = build_after(store.clone(), &opts, || {}).await;
        let d1 = before.outcomes[0].digest.expect("converted");
        // The same bytes under another name.
        for ext in ["png", "json"] {
            let from = format!("raw_training_data/m000.{ext}");
            let body = storage::get_bytes(&*store, &from, 1 << 20).await.unwrap();
            store.delete(&from).await.unwrap();
            store
                .put(
                    &format!("raw_training_data/renamed.{ext}"),
                    body,
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
        let (after, _) = build_after(store.clone(), &opts, || {}).await;
        assert_eq!(
            after.outcomes[0].digest.expect("converted"),
            d1,
            "a rename changed the content digest"
        );
    }

    /// Personal data is redacted in the written line (the default), or rejects its sample
    /// naming the kinds, never the values; the tally counts kinds, and nothing personal
    /// reaches `rejected.jsonl` or `index.jsonl`.
    #[tokio::test]
    async fn personal_data_is_redacted_or_rejected_before_a_line_is_written() {
        for mode in [
            screen::Mode::Redact,
            screen::Mode::Reject,
            screen::Mode::Off,
        ] {
            let store: Arc<dyn Store> = Arc::new(crate::storage::memory::MemoryStore::named(
                &uuid::Uuid::new_v4().to_string(),
            ));
            text_samples(&*store, 3).await;
            for (key, body) in [
                (
                    "raw_training_data/p.txt",
                    "Mail dana@example.org, card 4111 1111 1111 1111",
                ),
                (
                    "raw_training_data/p.json",
                    r#"{"reply": "call +44 20 7946 0958"}"#,
                ),
            ] {
                store
                    .put(key, Bytes::from(body), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
            let mut opts = options(1 << 20);
            opts.personal = mode;
            let (built, rejects) = build_after(store.clone(), &opts, || {}).await;
            let train = storage::get_bytes(&*store, &opts.paths.train, u64::MAX)
                .await
                .unwrap();
            let train = String::from_utf8(train.to_vec()).unwrap();
            let rejected = storage::get_bytes(&*store, &opts.paths.rejected, u64::MAX)
                .await
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .unwrap_or_default();
            let tally = &built.personal_data;
            assert_eq!(tally.mode, mode);
            match mode {
                screen::Mode::Redact => {
                    assert_eq!(built.train_examples, 4);
                    assert!(
                        train.contains("Mail [EMAIL_ADDRESS], card [CREDIT_CARD_NUMBER]"),
                        "{train}"
                    );
                    assert!(
                        train.contains(r#"{\"reply\":\"call [PHONE_NUMBER]\"}"#),
                        "{train}"
                    );
                    assert_eq!((tally.screened, tally.redacted, tally.rejected), (4, 1, 0));
                }
                screen::Mode::Reject => {
                    assert_eq!(built.train_examples, 3);
                    assert_eq!(rejects.len(), 1);
                    assert_eq!(rejects[0]["category"], "personal_data");
                    assert_eq!(
                        rejects[0]["reason"],
                        "personal data in the raw text and the label (EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD_NUMBER); PERSONAL_DATA=reject keeps it out of training"
                    );
                    assert_eq!(built.rejected_by_category[&Category::PersonalData], 1);
                    assert_eq!((tally.screened, tally.redacted, tally.rejected), (4, 0, 1));
                }
                screen::Mode::Off => {
                    assert!(train.contains("dana@example.org"), "{train}");
                    assert_eq!(tally.screened, 0);
                }
            }
            if mode != screen::Mode::Off {
                for written in [&train, &rejected] {
                    for value in ["dana@", "4111", "7946"] {
                        assert!(!written.contains(value), "{mode:?}: {written}");
                    }
                }
                assert_eq!(
                    tally.kinds.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
                    ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD_NUMBER"]
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fifo_swapped_in_after_listing_is_rejected_and_the_rest_train() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(LocalStore::new(dir.path().to_str().unwrap()).unwrap());
        text_samples(&*store, 5).await;
        let raw = dir.path().join("raw_training_data/s002.txt");
        let opts = options(1 << 20);
        let building = build_after(store.clone(), &opts, || {
            std::fs::remove_file(&raw).unwrap();
            let made = std::process::Command::new("mkfifo").arg(&raw).status();
            assert!(made.unwrap().success());
        });
        let (built, rejects) = tokio::time::timeout(std::time::Duration::from_secs(20), building)
            .await
            .expect("a FIFO never blocks the build");
        assert_eq!(built.train_examples, 4);
        assert_eq!(built.rejected, 1);
        assert_eq!(rejects[0]["key"], "s002");
        assert_eq!(rejects[0]["category"], "not_a_regular_file");
        assert!(
            rejects[0]["objects"][0]
                .as_str()
                .unwrap()
                .ends_with("raw_training_data/s002.txt"),
            "{}",
            rejects[0]
        );
        assert!(
            rejects[0]["reason"].as_str().unwrap().contains("FIFO"),
            "{}",
            rejects[0]
        );
    }

    async fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        async_compression::tokio::bufread::GzipEncoder::new(data)
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn every_gzip_member_is_read_and_a_truncated_gzip_is_rejected_naming_it() {
        let store: Arc<dyn Store> = Arc::new(crate::storage::memory::MemoryStore::named(
            &uuid::Uuid::new_v4().to_string(),
        ));
        text_samples(&*store, 3).await;
        // `cat a.gz b.gz > ab.gz` is a valid gzip file: `zcat` prints both.
        let mut two = gzip(b"first member, ").await;
        two.extend(gzip(b"second member").await);
        let long: Vec<u8> = (0..50_000u32)
            .map(|i| b"abcdefgh"[(i % 8) as usize])
            .collect();
        let mut cut = gzip(b"the first of two members, ").await;
        let second = gzip(&long).await;
        cut.extend_from_slice(&second[..second.len() / 2]);
        for (key, body) in [
            ("raw_training_data/multi.txt.gz", two),
            ("raw_training_data/multi.json", b"\"ok\"".to_vec()),
            ("raw_training_data/cut.txt", b"question".to_vec()),
            ("raw_training_data/cut.json.gz", cut),
            ("raw_training_data/end.txt.gz", {
                let mut whole = gzip(b"cut before its trailer").await;
                whole.truncate(whole.len() - 4);
                whole
            }),
            ("raw_training_data/end.json", b"\"x\"".to_vec()),
        ] {
            store
                .put(key, Bytes::from(body), PutMode::Overwrite)
                .await
                .unwrap();
        }
        let opts = options(1 << 20);
        let (built, rejects) = build_after(store.clone(), &opts, || {}).await;
        let train = storage::get_bytes(&*store, &opts.paths.train, u64::MAX)
            .await
            .unwrap();
        let train = String::from_utf8(train.to_vec()).unwrap();
        assert!(
            train.contains("first member, second member"),
            "every member is decoded: {train}"
        );
        assert_eq!(built.train_examples, 4, "{rejects:?}");
        let mut rejected: Vec<(&str, &str)> = rejects
            .iter()
            .map(|r| {
                let object = r["objects"][0].as_str().unwrap();
                (
                    object.rsplit_once('/').unwrap().1,
                    r["category"].as_str().unwrap(),
                )
            })
            .collect();
        rejected.sort_unstable();
        assert_eq!(
            rejected,
            [("cut.json.gz", "read_error"), ("end.txt.gz", "read_error")],
            "{rejects:?}"
        );
        for r in &rejects {
            assert!(r["reason"].as_str().unwrap().contains("gzip"), "{r}");
        }
    }

    /// A memory bucket whose reads wait until the test opens a gate and then take `delay(key)`
    /// (on the paused clock), and the count of reads begun.
    fn gated(
        open: tokio::sync::watch::Receiver<bool>,
        delay: fn(&str) -> std::time::Duration,
    ) -> (
        Arc<crate::storage::hooked::Hooked>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let begun = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = begun.clone();
        let inner = crate::storage::memory::MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        let store = crate::storage::hooked::Hooked::new(inner).on_read(move |key| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut open = open.clone();
            let delay = delay(key);
            Box::pin(async move {
                open.wait_for(|o| *o).await.unwrap();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            })
        });
        (Arc::new(store), begun)
    }

    /// Builds 20 samples of 2,010 bytes (2 KiB of the budget each) with reads held at a gate;
    /// how many reads had begun when everything else waited, and the lines made.
    async fn reads_begun(budget: u64, read_concurrency: usize) -> (usize, u64) {
        let (gate, open) = tokio::sync::watch::channel(false);
        let (store, begun) = gated(open, |_| std::time::Duration::ZERO);
        for i in 0..20 {
            let raw = format!("{i:02}") + &"x".repeat(1998);
            for (key, body) in [
                (format!("raw_training_data/s{i:02}.txt"), raw),
                (
                    format!("raw_training_data/s{i:02}.json"),
                    "\"answer\"".to_owned(),
                ),
            ] {
                store
                    .put(&key, Bytes::from(body), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
        }
        let mut opts = options(1 << 20);
        opts.read_concurrency = Some(read_concurrency);
        opts.max_bytes_in_flight = budget;
        let building = tokio::spawn({
            let store: Arc<dyn Store> = store.clone();
            async move { build_after(store, &opts, || {}).await }
        });
        // With the clock paused, this returns once every task waits: at the gate or for budget.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let begun = begun.load(std::sync::atomic::Ordering::SeqCst);
        gate.send(true).unwrap();
        let (built, rejects) = building.await.unwrap();
        assert!(rejects.is_empty(), "{rejects:?}");
        (begun, built.train_examples)
    }

    #[tokio::test(start_paused = true)]
    async fn reads_hold_no_more_than_max_bytes_in_flight() {
        // A sample's two objects are read at once.
        // 6 KiB: three samples of 2 KiB are read at once, however many reads may run.
        assert_eq!(reads_begun(6 * 1024, 32).await, (6, 20));
        assert_eq!(reads_begun(7 * 1024, 32).await, (6, 20));
        // A budget smaller than one sample lets one sample through at a time.
        assert_eq!(reads_begun(100, 32).await, (2, 20));
        // A large budget leaves READ_CONCURRENCY as the bound.
        assert_eq!(reads_begun(64 << 20, 8).await, (16, 20));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_read_ahead_read_is_not_read_latency() {
        use crate::limit::{self, Limiter};
        use crate::reads::{self, ReadAhead, Want};
        // The build reads s000..s099 itself, at 100 ms a read; s100..s199 are being read
        // ahead, slowly (5 s a read). Waiting for the read-ahead must not count as a slow read
        // of the build's: its limit rises and never halves.
        let (_gate, open) = tokio::sync::watch::channel(true);
        let (store, begun) = gated(open, |key| {
            let slow = key.strip_prefix("raw_training_data/s1").is_some();
            std::time::Duration::from_millis(if slow { 5000 } else { 100 })
        });
        text_samples(&*store, 200).await;
        let rules = Rules::new(autotune_layout::Layout::default());
        let inv = inventory::take(&*store, &rules).await.unwrap();
        let ahead = Arc::new(ReadAhead::new(
            store.clone(),
            Arc::new(Limiter::new(Some(256))),
            reads::Options {
                start_after: 1,
                max_bytes: 64 << 20,
                max_text_bytes: 1 << 20,
            },
        ));
        for s in &inv.samples[100..] {
            for meta in [&s.raw.meta, &s.label.meta] {
                ahead.want(Want {
                    key: meta.key.clone(),
                    generation: meta.generation.clone(),
                    size: meta.size,
                    gzip: false,
                });
            }
        }
        // Every read-ahead read begins (they end 5 s later).
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 200);
        let mut opts = options(1 << 20);
        opts.read_concurrency = None;
        opts.ahead = Some(ahead);
        let built = build_all(store.clone(), &inv, &opts).await;
        assert_eq!(built.train_examples, 200);
        // Each object read once: 200 ahead, 200 by the build.
        assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 400);
        assert!(
            built.read_concurrency > limit::START,
            "the build's limit fell to {}",
            built.read_concurrency
        );
    }

    #[test]
    fn a_gzip_object_counts_as_what_it_may_inflate_to() {
        use crate::sample::{LabelFile, LabelFormat, RawFile};
        let sample = |raw: u64, raw_gzip: bool, label: u64, label_gzip: bool| Sample {
            key: "k".into(),
            raw: RawFile {
                meta: storage::ObjectMeta {
                    key: "r".into(),
                    size: raw,
                    generation: "1".into(),
                    checksum: None,
                },
                modality: Modality::Text,
                ext: "txt".into(),
                gzip: raw_gzip,
            },
            label: LabelFile {
                meta: storage::ObjectMeta {
                    key: "l".into(),
                    size: label,
                    generation: "1".into(),
                    checksum: None,
                },
                format: LabelFormat::Json,
                gzip: label_gzip,
            },
        };
        let max = 4 << 20;
        assert_eq!(bytes_needed(&sample(1000, false, 20, false), max), 1020);
        assert_eq!(bytes_needed(&sample(100, true, 20, false), max), 103_220);
        assert_eq!(
            bytes_needed(&sample(16_000, true, 30, true), max),
            (max + 1) + 30 * 1032
        );
        // Reads stop past MAX_TEXT_BYTES: a bigger object holds no more than that.
        assert_eq!(
            bytes_needed(&sample(9 << 20, false, 0, false), max),
            max + 1
        );
        let mut media = sample(5 << 20, false, 20, false);
        media.raw.modality = Modality::Image;
        assert_eq!(bytes_needed(&media, max), 20, "media is never read");
    }
}
