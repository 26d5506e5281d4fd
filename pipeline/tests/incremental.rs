//! Incremental builds: a run takes the lines of unchanged samples from the last run's line
//! store and reads only new or changed objects, and its files are byte for byte those of a full
//! rebuild (FULL_REBUILD) of the same bucket history: after additions, a changed label, a
//! deletion, a rename, a conversion-settings change, and with a damaged line store. On a remote
//! store the objects of what changed are read while the listing arrives (read-ahead): once
//! each, not before gate 3 can pass, and with the same files.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};

use autotune::convert::Converter;
use autotune::run::{Job, Outcome};
use autotune::status::RunStatus;
use autotune::storage::{self, PutMode, Store};
use bytes::Bytes;
use serde_json::Value;

use crate::support::hooked::{Act, Hooked, Op};

/// A memory bucket (the test kit's [`Hooked`]) that records which sample objects were read.
/// `remote`: it says its requests cross a network, so runs read ahead. `pause_listing`: its
/// first listing of the sample folder stops after that many objects until a sample object is
/// read (later ones, a follow-up cycle's, do not: nothing need be read then).
struct Counting {
    store: Arc<Hooked>,
    seen: Arc<Seen>,
}

/// What the hook of a [`Counting`] bucket saw.
#[derive(Default)]
struct Seen {
    reads: Mutex<Vec<String>>,
    pause_listing: Mutex<Option<usize>>,
    read_begun: tokio::sync::Notify,
    /// Sample objects the listing had given when the first was read.
    listed_at_first_read: Mutex<Option<usize>>,
    listed: AtomicUsize,
}

impl Seen {
    fn see(self: &Arc<Self>, op: Op, key: &str) -> Act {
        match op {
            Op::List if key.starts_with("raw_training_data") => {
                self.listed.store(0, SeqCst);
            }
            Op::Listed if key.starts_with("raw_training_data/") => {
                let n = self.listed.fetch_add(1, SeqCst);
                let mut pause = self.pause_listing.lock().unwrap();
                if *pause == Some(n) {
                    *pause = None;
                    let seen = self.clone();
                    // On the paused clock this ends at once when nothing else can run: when
                    // no read is under way.
                    return Act::Wait(Box::pin(async move {
                        let wait = std::time::Duration::from_secs(3600);
                        let _ = tokio::time::timeout(wait, seen.read_begun.notified()).await;
                    }));
                }
            }
            Op::Get if key.starts_with("raw_training_data/") => {
                self.reads.lock().unwrap().push(key.to_owned());
                let listed = self.listed.load(SeqCst);
                self.listed_at_first_read
                    .lock()
                    .unwrap()
                    .get_or_insert(listed);
                self.read_begun.notify_one();
            }
            _ => {}
        }
        Act::Pass
    }
}

impl Counting {
    fn new(remote: bool, pause_listing: Option<usize>) -> Arc<Self> {
        let store = Hooked::new();
        store.set_remote(remote);
        let seen = Arc::new(Seen {
            pause_listing: Mutex::new(pause_listing),
            ..Seen::default()
        });
        let hook = seen.clone();
        store.set(move |op, key, _| hook.see(op, key));
        Arc::new(Self { store, seen })
    }

    /// The sample objects read since the last call, sorted, as names under the folder.
    fn take_reads(&self) -> Vec<String> {
        let mut r: Vec<String> = std::mem::take(&mut *self.seen.reads.lock().unwrap())
            .into_iter()
            .map(|k| k.trim_start_matches("raw_training_data/").to_owned())
            .collect();
        r.sort();
        r
    }
}

/// The same bucket history twice: built incrementally, and rebuilt in full every run.
struct Twins {
    incremental: Arc<Counting>,
    full: Arc<Counting>,
    converter: Converter,
    personal: autotune::screen::Mode,
}

impl Twins {
    /// `remote`: the incremental bucket is remote, so its runs read ahead (the full rebuild's
    /// never does).
    fn new(remote: bool) -> Self {
        Self {
            incremental: Counting::new(remote, None),
            full: Counting::new(false, None),
            converter: Converter::default(),
            personal: autotune::screen::Mode::default(),
        }
    }

    async fn put(&self, key: &str, body: &str) {
        for s in [&self.incremental, &self.full] {
            s.store
                .put(
                    &format!("raw_training_data/{key}"),
                    Bytes::from(body.to_owned()),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
    }

    async fn delete(&self, key: &str) {
        for s in [&self.incremental, &self.full] {
            s.store
                .delete(&format!("raw_training_data/{key}"))
                .await
                .unwrap();
        }
    }

    async fn sample(&self, name: &str, question: &str, answer: &str) {
        self.put(&format!("{name}.txt"), question).await;
        self.put(
            &format!("{name}.json"),
            &format!("{{\"answer\":\"{answer}\"}}"),
        )
        .await;
    }

    /// Samples `s{i:03}` for each `i` of `range`: `question {i}`, answer `a{i}`.
    async fn samples(&self, range: std::ops::Range<usize>) {
        for i in range {
            self.sample(
                &format!("s{i:03}"),
                &format!("question {i}"),
                &format!("a{i}"),
            )
            .await;
        }
    }

    fn job(&self, store: &Arc<Counting>, full_rebuild: bool) -> Job {
        let mut config = crate::run::config();
        config.full_rebuild = full_rebuild;
        config.converter = Arc::new(self.converter.clone());
        config.personal_data = self.personal;
        Job::new(
            config,
            store.store.clone(),
            Arc::new(autotune::tuner::dry_run::DryRun::default()),
        )
    }

    /// Runs both; checks their files are the same bytes; the incremental run's outcome and the
    /// sample objects it read.
    async fn run(&self) -> (Outcome, Vec<String>) {
        let inc = self
            .job(&self.incremental, false)
            .run(std::future::pending(), false)
            .await;
        let full = self
            .job(&self.full, true)
            .run(std::future::pending(), false)
            .await;
        assert_eq!(inc.status, RunStatus::DryRun, "{}", inc.reason);
        assert_eq!(full.status, RunStatus::DryRun, "{}", full.reason);
        assert_eq!(full.counts.reused, 0, "FULL_REBUILD reads every sample");
        let (inc_files, full_files) = (
            files(&*self.incremental.store, &inc).await,
            files(&*self.full.store, &full).await,
        );
        for ((name, a), (_, b)) in inc_files.iter().zip(&full_files) {
            assert!(
                a == b,
                "{name} differs from a full rebuild:\n--- incremental\n{a}\n--- full\n{b}"
            );
        }
        assert_eq!(inc.counts, full.counts_with_reused(inc.counts.reused));
        self.full.take_reads();
        (inc, self.incremental.take_reads())
    }
}

trait WithReused {
    fn counts_with_reused(&self, reused: u64) -> autotune::Counts;
}

impl WithReused for Outcome {
    fn counts_with_reused(&self, reused: u64) -> autotune::Counts {
        autotune::Counts {
            reused,
            ..self.counts.clone()
        }
    }
}

/// The run record of `o`.
async fn record(store: &dyn Store, o: &Outcome) -> Value {
    let key = o
        .metadata_uri
        .as_deref()
        .unwrap()
        .strip_prefix(&store.uri(""))
        .unwrap();
    serde_json::from_slice(&storage::get_bytes(store, key, 1 << 20).await.unwrap()).unwrap()
}

/// The key of the line store the run of `o` kept.
async fn lines_key(store: &dyn Store, o: &Outcome) -> String {
    let record = record(store, o).await;
    let uri = record["lines_uri"]
        .as_str()
        .expect("the run kept its lines");
    uri.strip_prefix(&store.uri("")).unwrap().to_owned()
}

/// The train, validation, rejects and index files of a run, by name, with the bucket's own
/// URI prefix taken out (the rejects name their objects).
async fn files(store: &dyn Store, o: &Outcome) -> Vec<(&'static str, String)> {
    let record = record(store, o).await;
    let mut out = Vec::new();
    for (name, field) in [
        ("train", "train_dataset_uri"),
        ("validation", "validation_dataset_uri"),
        ("rejected", "rejected_uri"),
        ("index", "index_uri"),
    ] {
        let text = match record[field].as_str() {
            Some(uri) => {
                let key = uri.strip_prefix(&store.uri("")).unwrap();
                let body = storage::get_bytes(store, key, 1 << 24).await.unwrap();
                String::from_utf8(body.to_vec())
                    .unwrap()
                    .replace(&store.uri(""), "BUCKET/")
            }
            None => String::new(),
        };
        out.push((name, text));
    }
    out
}

fn names(samples: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = samples
        .iter()
        .flat_map(|s| [format!("{s}.json"), format!("{s}.txt")])
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn an_incremental_build_reads_only_what_changed_and_equals_a_full_rebuild() {
    Box::pin(identity_through_a_bucket_history(false)).await;
}

#[tokio::test]
async fn reading_ahead_reads_each_object_once_and_equals_a_full_rebuild() {
    Box::pin(identity_through_a_bucket_history(true)).await;
}

/// Reads are the ones a run without read-ahead makes, exactly: `reads` is a list, so an
/// object read twice would show twice.
async fn identity_through_a_bucket_history(remote: bool) {
    let mut t = Twins::new(remote);
    t.samples(0..30).await;
    // A label that is not JSON (rejected), and an exact duplicate of s028 (written once).
    t.put("s007.json", "{not json").await;
    t.sample("s029", "question 28", "a28").await;
    let (o, reads) = t.run().await;
    assert_eq!(
        o.counts.reused, 0,
        "the first run has no line store to take from"
    );
    assert_eq!(reads.len(), 60, "{reads:?}");
    assert_eq!((o.counts.rejected, o.counts.duplicates), (1, 1));

    // Five new samples, a changed label, a deletion and a rename (same bytes, new name).
    t.samples(30..35).await;
    t.put("s001.json", "{\"answer\":\"changed\"}").await;
    t.delete("s002.txt").await;
    t.delete("s002.json").await;
    t.delete("s003.txt").await;
    t.delete("s003.json").await;
    t.sample("s103", "question 3", "a3").await;
    let (o, reads) = t.run().await;
    assert_eq!(
        reads,
        names(&[
            "s001", "s007", "s030", "s031", "s032", "s033", "s034", "s103"
        ]),
        "only new, changed and previously rejected samples are read"
    );
    assert_eq!(o.counts.pairs, 34);
    assert_eq!(o.counts.reused, 34 - 8);

    // A conversion setting changes: no stored line is valid any more.
    t.converter.prompt = Some("Classify this ticket:".to_owned());
    t.samples(35..40).await;
    let (o, reads) = t.run().await;
    assert_eq!(o.counts.reused, 0);
    assert_eq!(reads.len(), 2 * 39, "every sample is read again");

    // Under the new settings the next run is incremental again.
    t.samples(40..45).await;
    let (o, reads) = t.run().await;
    assert_eq!(o.counts.pairs, 44);
    assert_eq!(o.counts.reused, 44 - 6, "{reads:?}");
    assert_eq!(
        reads,
        names(&["s007", "s040", "s041", "s042", "s043", "s044"])
    );
}

/// Lines redacted of personal data are reused as a full rebuild would write them, and a change
/// of PERSONAL_DATA makes every line again (the line store's settings digest holds it).
#[tokio::test]
async fn redacted_lines_are_reused_as_a_full_rebuild_makes_them_and_a_mode_change_rebuilds() {
    let mut t = Twins::new(false);
    t.samples(0..12).await;
    t.sample("p000", "mail erin@example.com", "card 4111 1111 1111 1111")
        .await;
    t.sample("p001", "from 192.168.7.20", "call (212) 555-0142")
        .await;
    let (o, reads) = t.run().await;
    assert_eq!((o.counts.reused, reads.len()), (0, 28));
    let written = files(&*t.incremental.store, &o).await;
    let all: String = written.iter().map(|(_, text)| text.as_str()).collect();
    assert!(
        all.contains("[EMAIL_ADDRESS]") && all.contains("[PHONE_NUMBER]"),
        "{all}"
    );
    for value in ["erin@", "4111", "192.168", "555-0142"] {
        assert!(!all.contains(value), "{value} was written: {all}");
    }
    let record = record(&*t.incremental.store, &o).await;
    assert_eq!(record["personal_data"]["redacted"], 2, "{record}");
    assert_eq!(
        record["personal_data"]["kinds"]["IP_ADDRESS"], 1,
        "{record}"
    );

    // New samples: the redacted lines are taken from the store, the same bytes.
    t.samples(12..17).await;
    let (o, reads) = t.run().await;
    assert_eq!((o.counts.reused, reads.len()), (14, 10));

    // Reject: every line is made again; the two samples are rejected.
    t.personal = autotune::screen::Mode::Reject;
    t.samples(17..22).await;
    let (o, reads) = t.run().await;
    assert_eq!((o.counts.reused, reads.len()), (0, 2 * 24));
    assert_eq!(
        o.counts.rejected_by_category[&autotune::sample::Category::PersonalData],
        2
    );

    // Off: made again, written as uploaded.
    t.personal = autotune::screen::Mode::Off;
    t.samples(22..27).await;
    let (o, reads) = t.run().await;
    assert_eq!((o.counts.reused, reads.len()), (0, 2 * 29));
    let written = files(&*t.incremental.store, &o).await;
    assert!(written[0].1.contains("erin@example.com") || written[1].1.contains("erin@example.com"));
}

#[tokio::test]
async fn a_damaged_line_store_costs_reads_not_correctness() {
    let t = Twins::new(true);
    t.samples(0..20).await;
    let (first, _) = t.run().await;
    // Cut the incremental bucket's line store in the middle.
    let key = lines_key(&*t.incremental.store, &first).await;
    let whole = storage::get_bytes(&*t.incremental.store, &key, 1 << 24)
        .await
        .unwrap();
    t.incremental
        .store
        .put(&key, whole.slice(..whole.len() / 2), PutMode::Overwrite)
        .await
        .unwrap();
    t.samples(20..25).await;
    let (o, reads) = t.run().await;
    assert!(o.counts.reused < 20, "{}", o.counts.reused);
    assert_eq!(
        reads.len() as u64,
        2 * (25 - o.counts.reused),
        "what the store could not give was read"
    );

    // A store that is gone: everything is read, and the files are still the same.
    let key = lines_key(&*t.incremental.store, &o).await;
    t.incremental.store.delete(&key).await.unwrap();
    t.samples(25..30).await;
    let (o, reads) = t.run().await;
    assert_eq!(o.counts.reused, 0);
    assert_eq!(reads.len(), 60);
}

#[tokio::test(start_paused = true)]
async fn reading_begins_while_the_listing_is_still_arriving() {
    // The listing stops after 10 of its 40 objects until a sample object is read, or until
    // nothing else can run (on the paused clock, at once): a run that read only after the
    // whole listing would read first with all 40 listed.
    let store = Counting::new(true, Some(10));
    for i in 0..20 {
        for (ext, body) in [
            ("txt", format!("question {i}")),
            ("json", format!("{{\"answer\":\"a{i}\"}}")),
        ] {
            store
                .store
                .put(
                    &format!("raw_training_data/s{i:03}.{ext}"),
                    Bytes::from(body),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
    }
    let job = Job::new(
        crate::run::config(),
        store.store.clone(),
        Arc::new(autotune::tuner::dry_run::DryRun::default()),
    );
    let o = job.run(std::future::pending(), false).await;
    assert_eq!(o.status, RunStatus::DryRun, "{}", o.reason);
    assert_eq!(o.counts.pairs, 20);
    // Ten objects given, the eleventh held back: the first read came while it was.
    assert_eq!(*store.seen.listed_at_first_read.lock().unwrap(), Some(11));
    let reads = store.take_reads();
    let mut unique = reads.clone();
    unique.dedup();
    assert_eq!(
        (reads.len(), unique.len()),
        (40, 40),
        "each object read once"
    );
}

#[tokio::test]
async fn a_run_that_waits_at_gate_3_reads_nothing_ahead() {
    let t = Twins::new(true);
    t.samples(0..10).await;
    t.run().await;
    // Four new samples, fewer than MIN_SAMPLES (5): eight objects wanted, fewer than the ten
    // that gate 3 could pass with.
    t.samples(10..14).await;
    let o = t
        .job(&t.incremental, false)
        .run(std::future::pending(), false)
        .await;
    assert_eq!(o.status, RunStatus::Waiting, "{}", o.reason);
    assert_eq!(t.incremental.take_reads(), Vec::<String>::new());
}
