//! The streaming, parallel core: bytes in, a [`Tally`] of the whole file out, in flat memory.
//!
//! Three stages, each bounded so that memory does not grow with the file:
//!
//! 1. The reader (async, on the caller's task) pulls the object's byte stream and cuts it into
//!    batches of about [`Options::batch_bytes`] that end on a line break. It only looks for the
//!    last line break of each chunk it appends, so it does no per-line work. A line longer than
//!    [`Options::max_line_bytes`] is not buffered: it is skipped and reported as one finding.
//! 2. A blocking thread hands batches to rayon, at most one more than the pool has threads, and
//!    the bounded channel from the reader makes the reader wait when the workers are behind.
//!    Each worker splits its batch into lines and checks them ([`rules::check_line`]) into a
//!    small per-batch [`Tally`], with line numbers relative to the batch.
//! 3. The same thread merges tallies in file order (batches can finish out of order; at most
//!    the in-flight ones wait), which is what turns relative line numbers into file lines and
//!    keeps the *first* findings of the file. `fileData` objects to look up are passed on in
//!    file order too, to the `--check-files` task.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use tokio::sync::mpsc;

use super::ValidateError;
use super::estimate::SetEstimate;
use super::models::ModelLimits;
use super::rules::{self, FileRef, Findings};
use crate::storage::ByteStream;

/// How the stream is cut and checked.
#[derive(Debug, Clone)]
pub struct Options {
    pub limits: ModelLimits,
    /// Findings kept in full (all are counted).
    pub max_findings: usize,
    /// Collect `gs://` fileData objects for lookups.
    pub collect_refs: bool,
    /// Target size of one batch.
    pub batch_bytes: usize,
    /// Longest line buffered; a longer one cannot be a valid example (see [`MAX_LINE_BYTES`]).
    pub max_line_bytes: usize,
    /// Screen each line for personal data ([`crate::screen`]): `autotune validate` does; a
    /// run's own lines were screened before they were made.
    pub personal_data: bool,
}

/// 4 MiB batches: large enough that per-batch overhead vanishes, small enough that the batches
/// in flight (threads + 1, plus the channel) stay in tens of megabytes.
pub const BATCH_BYTES: usize = 4 << 20;

/// 16 MiB: a line this long has at least 4 Mi characters, about a million tokens, far above any
/// model's per-example limit, so it can be refused without parsing.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Batches waiting between the reader and the workers.
const CHANNEL_BATCHES: usize = 2;

impl Options {
    pub fn new(limits: ModelLimits) -> Self {
        Self {
            limits,
            max_findings: 100,
            collect_refs: false,
            batch_bytes: BATCH_BYTES,
            max_line_bytes: MAX_LINE_BYTES,
            personal_data: false,
        }
    }
}

/// What a batch, or the whole file, adds up to.
#[derive(Debug, Clone)]
pub struct Tally {
    pub findings: Findings,
    pub lines: u64,
    pub bytes: u64,
    pub multimodal_examples: u64,
    pub set: SetEstimate,
    pub refs: Vec<FileRef>,
    /// With [`Options::personal_data`]: per kind, the lines it was found in.
    pub personal_data: BTreeMap<crate::screen::Kind, u64>,
}

impl Tally {
    pub fn new(cap: usize) -> Self {
        Self {
            findings: Findings::new(cap),
            lines: 0,
            bytes: 0,
            multimodal_examples: 0,
            set: SetEstimate::default(),
            refs: Vec::new(),
            personal_data: BTreeMap::new(),
        }
    }
}

/// A unit of work for a rayon worker.
enum Batch {
    /// Whole lines; the last one may lack its line break (end of file).
    Lines(Vec<u8>),
    /// A line that was too long to buffer, of this many bytes.
    LongLine(u64),
}

fn long_line(t: &mut Tally, line: u64, bytes: u64, max: usize) {
    t.findings.push(Some(line), rules::Category::LineTooLong, String::new, || {
        format!(
            "a line of {bytes} bytes; no example longer than {max} bytes can be within the token limit, so it was not parsed"
        )
    });
}

impl Tally {
    /// Checks the next line of the file (without its line break) into the tally. The build
    /// stage calls this on every line it writes, so the run never reads its files back.
    pub fn check(&mut self, line: &[u8], opts: &Options, refs: Option<&mut Vec<FileRef>>) {
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        let n = self.lines;
        // The reader skips long lines that span chunks; one that arrived whole is refused the
        // same way, so the result never depends on chunk sizes.
        if line.len() > opts.max_line_bytes {
            long_line(self, n, line.len() as u64, opts.max_line_bytes);
            return;
        }
        if let Some(ex) = rules::check_line(line, n, &opts.limits, &mut self.findings, refs) {
            self.set.add(ex.tokens);
            self.multimodal_examples += u64::from(ex.multimodal);
        }
        if opts.personal_data
            && let Ok(text) = std::str::from_utf8(line)
        {
            let screener = crate::screen::Screener::shared();
            let kinds = screener
                .json_kinds(text)
                .unwrap_or_else(|| screener.kinds(text));
            for k in kinds.iter() {
                *self.personal_data.entry(k).or_default() += 1;
            }
        }
    }

    /// Adds the check of the next line (see [`check_line`]).
    pub fn add(&mut self, c: LineCheck) {
        self.lines += 1;
        self.bytes += c.bytes;
        if let Some((tokens, multimodal)) = c.example {
            self.set.add(tokens);
            self.multimodal_examples += u64::from(multimodal);
        }
        if let Some(f) = c.findings {
            let line = self.lines;
            for (sum, n) in self.findings.counts.iter_mut().zip(f.counts) {
                *sum += n;
            }
            let room = self.findings.cap.saturating_sub(self.findings.kept.len());
            self.findings
                .kept
                .extend(f.kept.into_iter().take(room).map(|mut f| {
                    f.line = f.line.map(|_| line);
                    f
                }));
        }
    }

    /// Adds the tally of the lines that follow this one's.
    pub fn append(&mut self, t: Tally) -> Vec<FileRef> {
        let base = self.lines;
        for (sum, n) in self.findings.counts.iter_mut().zip(t.findings.counts) {
            *sum += n;
        }
        let room = self.findings.cap.saturating_sub(self.findings.kept.len());
        self.findings
            .kept
            .extend(t.findings.kept.into_iter().take(room).map(|mut f| {
                f.line = f.line.map(|l| l + base);
                f
            }));
        self.lines += t.lines;
        self.bytes += t.bytes;
        self.multimodal_examples += t.multimodal_examples;
        self.set.merge(&t.set);
        for (k, n) in t.personal_data {
            *self.personal_data.entry(k).or_default() += n;
        }
        t.refs
            .into_iter()
            .map(|mut r| {
                r.line += base;
                r
            })
            .collect()
    }
}

/// The check of one line, made apart from the file (on a rayon worker) and added to the tally
/// of the file it goes into, in file order ([`Tally::add`]).
#[derive(Debug)]
pub struct LineCheck {
    bytes: u64,
    /// Tokens, and whether it has media, when the line is an example.
    example: Option<(u64, bool)>,
    /// Only when the line breaks a rule.
    findings: Option<Box<Findings>>,
}

/// Checks one line (without its line break) of a file.
pub fn check_line(line: &[u8], opts: &Options) -> LineCheck {
    let mut t = Tally::new(opts.max_findings);
    t.check(line, opts, None);
    LineCheck {
        bytes: t.bytes,
        example: (t.set.examples > 0).then_some((t.set.tokens, t.multimodal_examples > 0)),
        findings: (t.findings.total() > 0).then(|| Box::new(t.findings)),
    }
}

fn check_batch(batch: &Batch, opts: &Options) -> Tally {
    let mut t = Tally::new(opts.max_findings);
    match batch {
        Batch::LongLine(bytes) => {
            t.lines = 1;
            long_line(&mut t, 1, *bytes, opts.max_line_bytes);
        }
        Batch::Lines(data) => {
            let body = data.strip_suffix(b"\n").unwrap_or(data);
            if data.is_empty() {
                return t;
            }
            let mut refs = opts.collect_refs.then(Vec::new);
            for line in body.split(|&b| b == b'\n') {
                t.check(line, opts, refs.as_mut());
            }
            t.refs = refs.unwrap_or_default();
        }
    }
    t
}

/// Folds batch tallies in file order.
struct Merger {
    total: Tally,
    next: u64,
    pending: BTreeMap<u64, Tally>,
    refs: Option<mpsc::Sender<FileRef>>,
}

impl Merger {
    fn add(&mut self, seq: u64, tally: Tally) {
        self.pending.insert(seq, tally);
        while let Some(t) = self.pending.remove(&self.next) {
            self.fold(t);
            self.next += 1;
        }
    }

    fn fold(&mut self, t: Tally) {
        let refs = self.total.append(t);
        if let Some(tx) = &self.refs {
            for r in refs {
                // The lookup task only ends early on its own failure; lookups then stop.
                if tx.blocking_send(r).is_err() {
                    break;
                }
            }
        }
    }
}

/// Runs the workers over the batches the reader sends; returns the merged tally.
fn consume(
    mut rx: mpsc::Receiver<Batch>,
    opts: &Options,
    refs: Option<mpsc::Sender<FileRef>>,
) -> Result<Tally, ValidateError> {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, Option<Tally>)>();
    let mut merger = Merger {
        total: Tally::new(opts.max_findings),
        next: 0,
        pending: BTreeMap::new(),
        refs,
    };
    let max_in_flight = rayon::current_num_threads() + 1;
    let mut failed = false;
    rayon::in_place_scope(|scope| {
        let mut in_flight = 0usize;
        let mut seq = 0u64;
        let wait_one = |merger: &mut Merger, failed: &mut bool| match done_rx.recv() {
            Ok((i, Some(t))) => merger.add(i, t),
            _ => *failed = true,
        };
        while let Some(batch) = rx.blocking_recv() {
            while in_flight >= max_in_flight {
                wait_one(&mut merger, &mut failed);
                in_flight -= 1;
            }
            let tx = done_tx.clone();
            let s = seq;
            scope.spawn(move |_| {
                // A panic would leave the merger waiting for this batch forever; report it as
                // a missing tally instead, which fails the validation.
                let t = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    check_batch(&batch, opts)
                }))
                .ok();
                let _ = tx.send((s, t));
            });
            seq += 1;
            in_flight += 1;
        }
        while in_flight > 0 {
            wait_one(&mut merger, &mut failed);
            in_flight -= 1;
        }
    });
    if failed {
        return Err(ValidateError::Internal(
            "a validation worker panicked".into(),
        ));
    }
    Ok(merger.total)
}

/// Last line break in `data`, searched from the end.
fn last_newline(data: &[u8]) -> Option<usize> {
    data.iter().rposition(|&b| b == b'\n')
}

/// Validates a byte stream; `uri` names it in errors. `refs` receives the `gs://` objects to
/// look up when [`Options::collect_refs`] is set.
pub async fn run(
    mut body: ByteStream,
    uri: &str,
    opts: Arc<Options>,
    refs: Option<mpsc::Sender<FileRef>>,
) -> Result<Tally, ValidateError> {
    let (tx, rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let worker_opts = Arc::clone(&opts);
    let workers = tokio::task::spawn_blocking(move || consume(rx, &worker_opts, refs));

    let read = async {
        let batch_bytes = opts.batch_bytes.max(1);
        let max_line = opts.max_line_bytes.max(1);
        let mut bytes = 0u64;
        let mut buf: Vec<u8> = Vec::with_capacity(batch_bytes + (256 << 10));
        // End (exclusive) of the last complete line in `buf`.
        let mut complete = 0usize;
        // Bytes of a too-long line being skipped.
        let mut skipping: Option<u64> = None;
        // `false` once the workers are gone (they failed); reading stops.
        let send = |b: Batch| async { tx.send(b).await.is_ok() };
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|source| ValidateError::Read {
                file: uri.to_owned(),
                source,
            })?
        {
            bytes += chunk.len() as u64;
            let mut data = &chunk[..];
            if let Some(n) = skipping {
                let Some(i) = data.iter().position(|&b| b == b'\n') else {
                    skipping = Some(n + data.len() as u64);
                    continue;
                };
                skipping = None;
                data = &data[i + 1..];
                if !send(Batch::LongLine(n + i as u64)).await {
                    return Ok(bytes);
                }
            }
            let start = buf.len();
            buf.extend_from_slice(data);
            if let Some(i) = last_newline(&buf[start..]) {
                complete = start + i + 1;
            }
            if complete >= batch_bytes {
                let rest = buf[complete..].to_vec();
                let mut full =
                    std::mem::replace(&mut buf, Vec::with_capacity(batch_bytes + (256 << 10)));
                full.truncate(complete);
                buf.extend_from_slice(&rest);
                complete = 0;
                if !send(Batch::Lines(full)).await {
                    return Ok(bytes);
                }
            } else if buf.len() - complete > max_line {
                // The line after the last break is too long: pass on the complete lines and
                // skip the rest of this one.
                let partial = (buf.len() - complete) as u64;
                buf.truncate(complete);
                let full =
                    std::mem::replace(&mut buf, Vec::with_capacity(batch_bytes + (256 << 10)));
                complete = 0;
                if !full.is_empty() && !send(Batch::Lines(full)).await {
                    return Ok(bytes);
                }
                skipping = Some(partial);
            }
        }
        if !buf.is_empty() {
            let _ = send(Batch::Lines(buf)).await;
        }
        if let Some(n) = skipping {
            let _ = send(Batch::LongLine(n)).await;
        }
        Ok::<u64, ValidateError>(bytes)
    };
    let read = read.await;
    drop(tx);
    // Always wait for the workers, so no batch outlives the call.
    let tally = workers
        .await
        .map_err(|e| ValidateError::Internal(format!("validation workers: {e}")))?;
    let bytes = read?;
    let mut tally = tally?;
    tally.bytes = bytes;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::models::ModelTable;
    use crate::validate::rules::Category;
    use bytes::Bytes;
    use futures::StreamExt;

    const OK: &str = r#"{"contents":[{"role":"user","parts":[{"text":"abcdefgh"}]},{"role":"model","parts":[{"text":"abcd"}]}]}"#;

    /// Streams `data` in chunks of `chunk` bytes.
    fn body(data: &[u8], chunk: usize) -> ByteStream {
        let chunks: Vec<_> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    fn opts(batch: usize, max_line: usize) -> Arc<Options> {
        let mut o = Options::new(ModelTable::built_in().resolve("gemini-2.5-flash").limits);
        o.batch_bytes = batch;
        o.max_line_bytes = max_line;
        o.max_findings = 1000;
        Arc::new(o)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn line_numbers_survive_any_batching() {
        // 500 lines, every 37th broken; batches and chunks of many sizes must agree.
        let mut data = Vec::new();
        let mut bad = Vec::new();
        for i in 1..=500u64 {
            if i % 37 == 0 {
                data.extend_from_slice(b"{oops\n");
                bad.push(Some(i));
            } else {
                data.extend_from_slice(OK.as_bytes());
                data.push(b'\n');
            }
        }
        data.pop(); // no final line break
        for (batch, chunk) in [(1, 1), (7, 3), (100, 64), (4096, 1000), (1 << 20, 1 << 16)] {
            let t = run(body(&data, chunk), "mem", opts(batch, 1 << 20), None)
                .await
                .unwrap();
            assert_eq!(t.lines, 500, "batch {batch} chunk {chunk}");
            assert_eq!(t.bytes, data.len() as u64);
            assert_eq!(t.set.examples, 500 - bad.len() as u64);
            assert_eq!(t.set.tokens, (500 - bad.len() as u64) * 3);
            let lines: Vec<_> = t.findings.kept.iter().map(|f| f.line).collect();
            assert_eq!(lines, bad, "batch {batch} chunk {chunk}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_lines_are_skipped_not_buffered() {
        let mut data = Vec::new();
        data.extend_from_slice(OK.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(&vec![b'x'; 5000]);
        data.push(b'\n');
        data.extend_from_slice(OK.as_bytes());
        data.push(b'\n');
        data.extend_from_slice(&vec![b'y'; 3000]); // at the end, unterminated
        for chunk in [1, 100, 7000] {
            let t = run(body(&data, chunk), "mem", opts(64, 1000), None)
                .await
                .unwrap();
            let got: Vec<_> = t
                .findings
                .kept
                .iter()
                .map(|f| (f.category, f.line))
                .collect();
            assert_eq!(
                got,
                vec![
                    (Category::LineTooLong, Some(2)),
                    (Category::LineTooLong, Some(4))
                ],
                "chunk {chunk}"
            );
            assert!(
                t.findings.kept[0].message.contains("5000 bytes"),
                "{}",
                t.findings.kept[0].message
            );
            assert_eq!((t.lines, t.set.examples), (4, 2));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_errors_name_the_file() {
        let chunks = vec![
            Ok(Bytes::from_static(b"{}\n")),
            Err(crate::storage::StoreError::NotFound {
                uri: "gs://b/x".into(),
            }),
        ];
        let err = run(
            futures::stream::iter(chunks).boxed(),
            "gs://b/x",
            opts(1 << 20, 1 << 20),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("gs://b/x"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn empty_input_has_no_lines() {
        let t = run(body(&[], 10), "mem", opts(10, 100), None)
            .await
            .unwrap();
        assert_eq!((t.lines, t.set.examples, t.findings.total()), (0, 0, 0));
        let t = run(body(b"\n", 10), "mem", opts(10, 100), None)
            .await
            .unwrap();
        assert_eq!((t.lines, t.findings.total()), (1, 1), "one blank line");
    }
}
