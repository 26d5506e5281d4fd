//! The whole event loop, with the real parts, the way Google runs it (issue 11):
//!
//! ```text
//!  uploader ─▶ fake-gcs-server ─(finalize event, binary CloudEvent)─▶ trigger-wasm (wasmtime serve)
//!                    ▲                                                   │ jobs.get / jobs.run
//!                    │                                                   ▼
//!                    └──────────── autotune run ◀── executes ── fake Cloud Run Admin API
//! ```
//!
//! * fake-gcs-server is the bucket;
//! * the real trigger component runs under `wasmtime serve` (storm control and all);
//! * the fake Run Admin API (checked against `run.v2.json`) executes the real `autotune` binary
//!   for every `jobs.run`, reporting it running while the process lives;
//! * the dry-run tuner "tunes" for DRY_RUN_DURATION; QUIET_PERIOD is 2 s.
//!
//! After the system is quiet, every uploaded sample must be in some run's training or
//! validation file (the runs' `index.jsonl`), few executions built datasets, no two runs held
//! the lock (and so tuned) at once, and every record must agree with its files.
//!
//! Prerequisites: fake-gcs-server, wasmtime and the wasm32-wasip2 target (`bash .ci/setup`);
//! the trigger component is built on first use (see `support/trigger.rs`). The scenarios run
//! one at a time (they share two cores with everything else); together they take about a
//! minute and a half. `cargo test -p autotune --test tests -- --ignored --nocapture
//! event_loop::bulk_benchmark`
//! measures the bulk scenario five times.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_run::{self, FakeRun};
use support::trigger::{self, Trigger};
use support::{FakeGcs, request};

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const RAW: &str = "raw_training_data";
const META: &str = "trained_model";

/// The bucket, the job behind the fake Run Admin API, and the trigger in front of it.
struct World {
    gcs: FakeGcs,
    bucket: String,
    run: FakeRun,
    trigger: Trigger,
}

/// What the trigger answered to the events of an upload.
#[derive(Debug, Default)]
struct Answers {
    by_outcome: BTreeMap<String, usize>,
    /// Non-200 answers, with their bodies.
    errors: Vec<String>,
}

/// What an upload did.
struct Uploaded {
    keys: Vec<String>,
    answers: Answers,
    /// When the last object was written.
    finished: chrono::DateTime<chrono::Utc>,
}

impl World {
    /// A fresh bucket and job; `env` adds to or replaces the job's container settings.
    fn start(env: &[(&str, &str)]) -> Self {
        let gcs = FakeGcs::start();
        let bucket = gcs.bucket();
        let gs = format!("gs://{bucket}");
        let mut job_env = vec![
            ("BUCKET_NAME", gs.as_str()),
            ("STORAGE_EMULATOR_HOST", gcs.host.as_str()),
            ("TUNER", "dry-run"),
            ("DRY_RUN_DURATION", "3s"),
            ("QUIET_PERIOD", "2s"),
            ("MIN_SAMPLES", "10"),
            ("LEASE_DURATION", "30s"),
        ];
        for (k, v) in env {
            job_env.retain(|(name, _)| name != k);
            job_env.push((k, v));
        }
        let run = FakeRun::start(&job_env);
        let trigger = Trigger::start(&[
            ("BUCKET_NAME", &bucket),
            ("GCP_PROJECT", fake_run::PROJECT),
            ("REGION", fake_run::REGION),
            ("JOB_NAME", fake_run::JOB),
            ("RUN_API_ENDPOINT", &run.origin()),
            ("GCE_METADATA_HOST", &run.host()),
            ("AUTH_MODE", "token"),
            ("TRIGGER_TOKEN", trigger::TOKEN),
            ("UPSTREAM_TIMEOUT_MS", "5000"),
        ]);
        World {
            gcs,
            bucket,
            run,
            trigger,
        }
    }

    /// Uploads one object and returns its resource (what a finalize event carries).
    fn put(&self, name: &str, body: &str) -> Value {
        let path = format!(
            "/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.bucket,
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, answer) = request(
            "POST",
            &self.gcs.host,
            &path,
            &[("content-type", "text/plain")],
            body.as_bytes(),
        );
        assert_eq!(
            status,
            200,
            "upload of {name}: {}",
            String::from_utf8_lossy(&answer)
        );
        serde_json::from_slice(&answer).unwrap()
    }

    /// Uploads pairs `range` over about `over` on eight threads (raw file, then label), each
    /// followed by its finalize event when `events` is set, as Eventarc delivers them.
    fn upload(&self, range: std::ops::Range<usize>, over: Duration, events: bool) -> Uploaded {
        const THREADS: usize = 8;
        let n = range.len();
        let start = Instant::now();
        let answers = Mutex::new(Answers::default());
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (range, answers) = (range.clone(), &answers);
                s.spawn(move || {
                    for (k, i) in range.enumerate().filter(|(k, _)| k % THREADS == t) {
                        let due = start + over.mul_f64(k as f64 / n as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let key = format!("e{i:05}");
                        for (name, body) in [
                            (format!("{RAW}/{key}.txt"), format!("question number {i}")),
                            (
                                format!("{RAW}/{key}.json"),
                                format!("{{\"answer\":\"a{i}\"}}"),
                            ),
                        ] {
                            let object = self.put(&name, &body);
                            if !events {
                                continue;
                            }
                            let id = format!(
                                "{}-{}",
                                object["name"].as_str().unwrap_or_default(),
                                object["generation"].as_str().unwrap_or_default()
                            );
                            let (status, answer) =
                                self.trigger.finalized(&self.bucket, &object, &id);
                            let mut a = answers.lock().unwrap();
                            if status == 200 {
                                let outcome = answer["outcome"].as_str().unwrap_or("?").to_owned();
                                *a.by_outcome.entry(outcome).or_default() += 1;
                            } else {
                                a.errors.push(format!("{status} {answer}"));
                            }
                        }
                    }
                });
            }
        });
        Uploaded {
            keys: range.map(|i| format!("e{i:05}")).collect(),
            answers: answers.into_inner().unwrap(),
            finished: chrono::Utc::now(),
        }
    }

    /// Every object name under `prefix`.
    fn list(&self, prefix: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let path = format!(
                "/storage/v1/b/{}/o?prefix={prefix}&maxResults=5000{token}",
                self.bucket
            );
            let (status, body) = request("GET", &self.gcs.host, &path, &[], b"");
            assert_eq!(status, 200, "list {prefix}");
            let page: Value = serde_json::from_slice(&body).unwrap();
            for item in page["items"].as_array().into_iter().flatten() {
                names.push(item["name"].as_str().unwrap().to_owned());
            }
            match page["nextPageToken"].as_str() {
                Some(t) => token = format!("&pageToken={t}"),
                None => return names,
            }
        }
    }

    fn get(&self, name: &str) -> Vec<u8> {
        let path = format!(
            "/storage/v1/b/{}/o/{}?alt=media",
            self.bucket,
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, body) = request("GET", &self.gcs.host, &path, &[], b"");
        assert_eq!(status, 200, "get {name}");
        body
    }

    /// The object a `gs://bucket/…` URI names.
    fn get_uri(&self, uri: &str) -> Vec<u8> {
        let name = uri
            .strip_prefix(&format!("gs://{}/", self.bucket))
            .unwrap_or_else(|| panic!("{uri} is not in the bucket"));
        self.get(name)
    }

    /// The sample keys of the frozen evaluation set.
    fn eval_keys(&self) -> BTreeSet<String> {
        let current: Value =
            serde_json::from_slice(&self.get(&format!("{META}/eval/current.json"))).unwrap();
        let set = self.get(current["object"].as_str().unwrap());
        set.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<Value>(l).unwrap()["key"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// Every run record, oldest first.
    fn records(&self) -> Vec<Value> {
        let mut names: Vec<String> = self
            .list(&format!("{META}/model_metadata_"))
            .into_iter()
            .filter(|n| {
                std::path::Path::new(n)
                    .extension()
                    .is_some_and(|e| e == "json")
            })
            .collect();
        names.sort();
        let mut records: Vec<Value> = names
            .iter()
            .map(|n| serde_json::from_slice(&self.get(n)).unwrap())
            .collect();
        records.sort_by_key(|r| time(&r["training_start_time"]));
        records
    }

    fn lock(&self) -> Value {
        serde_json::from_slice(&self.get(&format!("{META}/training.lock.json"))).unwrap()
    }

    /// Waits until the predicate holds on the records, at most `limit`.
    fn wait_for_record(&self, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if self.records().iter().any(&pred) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no record {what} after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The stdout object of every execution, by execution short name.
    fn outputs(&self) -> Vec<(String, Value)> {
        self.run.with_executions(|es| {
            es.iter()
                .map(|e| (e.short_name().to_owned(), e.output()))
                .collect()
        })
    }

    /// Executions that built datasets (a cycle that took the lock and wrote files, not an
    /// adoption).
    fn executions_that_built(&self) -> Vec<String> {
        self.outputs()
            .into_iter()
            .filter(|(_, out)| {
                out["cycles"].as_array().unwrap().iter().any(|c| {
                    c["run_id"].is_string()
                        && !c["reason"]
                            .as_str()
                            .unwrap_or_default()
                            .starts_with("adopted tuning job")
                        && c["counts"]["train"].as_u64().unwrap_or(0) > 0
                })
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// Which execution and cycle made each run.
    fn cycle_of_run(&self) -> BTreeMap<String, (String, usize)> {
        let mut by_run = BTreeMap::new();
        for (name, out) in self.outputs() {
            for (i, c) in out["cycles"].as_array().unwrap().iter().enumerate() {
                if let Some(id) = c["run_id"].as_str()
                    && !c["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("adopted tuning job")
                {
                    by_run.insert(id.to_owned(), (name.clone(), i));
                }
            }
        }
        by_run
    }

    /// One record: final, and in agreement with its files and the record before it. Returns
    /// its run id and the sample keys of its index.
    fn check_record(&self, r: &Value, previous: Option<&Value>) -> (String, BTreeSet<String>) {
        let id = r["run_id"].as_str().unwrap().to_owned();
        assert_eq!(r["status"], "dry_run", "run {id} ended: {r}");
        assert!(r["error"].is_null(), "{r}");
        let c = &r["counts"];
        let (train, validation) = (
            c["train"].as_u64().unwrap(),
            c["validation"].as_u64().unwrap(),
        );
        assert_eq!(r["sample_size"], c["pairs"], "{id}");
        assert_eq!(
            train + validation + c["eval"].as_u64().unwrap(),
            c["pairs"].as_u64().unwrap(),
            "{id}: nothing rejected or held out; the rest is the evaluation set"
        );
        let lines = |uri: &Value| {
            uri.as_str().map_or(0, |u| {
                self.get_uri(u)
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count() as u64
            })
        };
        assert_eq!(
            lines(&r["train_dataset_uri"]),
            train,
            "{id}: train file lines"
        );
        assert_eq!(
            lines(&r["validation_dataset_uri"]),
            validation,
            "{id}: validation file lines"
        );
        let index = self.get_uri(r["index_uri"].as_str().unwrap());
        let mut keys = BTreeSet::new();
        let mut per_file: BTreeMap<String, u64> = BTreeMap::new();
        for line in index.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let e: Value = serde_json::from_slice(line).unwrap();
            assert!(
                keys.insert(e["key"].as_str().unwrap().to_owned()),
                "{id}: {e} twice"
            );
            *per_file
                .entry(e["file"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert_eq!(
            per_file.get("sft_train.jsonl").copied().unwrap_or(0),
            train,
            "{id}"
        );
        assert_eq!(
            per_file.get("sft_val.jsonl").copied().unwrap_or(0),
            validation,
            "{id}"
        );
        match previous {
            None => {
                assert!(r["baseline_run_id"].is_null(), "{id}");
                assert_eq!(r["sample_delta"], c["pairs"], "{id}");
            }
            Some(p) => {
                assert_eq!(
                    r["baseline_run_id"], p["run_id"],
                    "{id}: the chain of baselines"
                );
                assert_eq!(
                    r["sample_delta"].as_u64().unwrap(),
                    c["pairs"].as_u64().unwrap() - p["counts"]["pairs"].as_u64().unwrap(),
                    "{id}: the delta is what arrived since"
                );
            }
        }
        assert_eq!(r["quiet_end"], "settled", "{id}: {}", r["quiet_reason"]);
        (id, keys)
    }

    /// The checks every scenario ends with. Returns the sample keys each run trained.
    fn check_quiet_system(
        &self,
        uploaded: &BTreeSet<String>,
    ) -> BTreeMap<String, BTreeSet<String>> {
        assert!(
            self.run.problems().is_empty(),
            "Run Admin API contract: {:#?}",
            self.run.problems()
        );
        let records = self.records();
        assert!(!records.is_empty(), "no run at all");
        // Every record is final and agrees with its files.
        let mut trained = BTreeMap::new();
        let mut previous: Option<&Value> = None;
        for r in &records {
            let (id, keys) = self.check_record(r, previous);
            previous = Some(r);
            trained.insert(id, keys);
        }
        // No two runs held the lock, and so tuned, at once.
        for w in records.windows(2) {
            assert!(
                time(&w[0]["training_end_time"]) <= time(&w[1]["training_start_time"]),
                "runs {} and {} overlap",
                w[0]["run_id"],
                w[1]["run_id"]
            );
        }
        // Every uploaded sample is in some run's training or validation file, or in the
        // frozen evaluation set that no run trains on.
        let eval = self.eval_keys();
        assert!(!eval.is_empty(), "an evaluation set was frozen");
        let all: BTreeSet<&String> = trained.values().flatten().chain(&eval).collect();
        let left: Vec<&String> = uploaded.iter().filter(|k| !all.contains(k)).collect();
        assert!(
            left.is_empty(),
            "{} samples left behind, e.g. {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
        // The lock is free, with no job waiting.
        let lock = self.lock();
        assert_eq!(lock["state"], "released", "{lock}");
        assert!(lock["tuning_job"].is_null(), "{lock}");
        // Every execution ended well.
        self.run.with_executions(|es| {
            for e in es {
                assert_eq!(
                    e.exit_code,
                    Some(0),
                    "{}: {}",
                    e.name,
                    std::fs::read_to_string(&e.stderr).unwrap_or_default()
                );
            }
        });
        trained
    }
}

fn assert_no_errors(a: &Answers) {
    assert!(
        a.errors.is_empty(),
        "{} events refused, e.g. {:?}",
        a.errors.len(),
        &a.errors[..a.errors.len().min(3)]
    );
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

/// When an execution's process logged the start of tuning (its "following the tuning job" line).
fn tuning_started(world: &World, execution: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stderr = world.run.with_executions(|es| {
        es.iter()
            .find(|e| e.short_name() == execution)
            .map(|e| std::fs::read_to_string(&e.stderr).unwrap_or_default())
    })?;
    stderr
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("following the tuning job"))
        })
        .and_then(|l| l["time"].as_str().and_then(|t| t.parse().ok()))
}

/// What one bulk scenario measured.
struct Bulk {
    executions: usize,
    uploads: usize,
    last_upload_to_tuning: Duration,
    left_behind: usize,
}

/// 2,000 pairs over about 20 s, each upload's event sent to the trigger.
fn bulk_scenario() -> Bulk {
    let world = World::start(&[]);
    let started = Instant::now();
    let up = world.upload(0..2000, Duration::from_secs(20), true);
    let upload_time = started.elapsed();
    let last_upload = up.finished;
    assert_no_errors(&up.answers);
    world.run.wait_idle(Duration::from_secs(60));
    let uploaded: BTreeSet<String> = up.keys.iter().cloned().collect();
    let trained = world.check_quiet_system(&uploaded);
    let (executions, _) = world.run.counts();
    // Storm control: the trigger started exactly the executions the fake saw.
    assert_eq!(
        up.answers.by_outcome.get("started").copied().unwrap_or(0),
        executions
    );
    assert_eq!(
        up.answers.by_outcome.values().sum::<usize>(),
        4000,
        "every event answered: {:?}",
        up.answers.by_outcome
    );
    let built = world.executions_that_built();
    assert!(
        built.len() <= 3,
        "{} executions built datasets: {built:?}",
        built.len()
    );
    // The run that trained the last files: when did it start tuning?
    let records = world.records();
    let last_record = records.last().unwrap();
    let last_run = last_record["run_id"].as_str().unwrap().to_owned();
    assert!(trained.contains_key(&last_run));
    let (execution, _) = world.cycle_of_run()[&last_run].clone();
    let tuning = tuning_started(&world, &execution).expect("the execution logged tuning");
    for (name, out) in world.outputs() {
        eprintln!(
            "  {name}: {} cycle(s), {}: {}",
            out["cycles"].as_array().map_or(0, Vec::len),
            out["status"].as_str().unwrap_or("?"),
            out["reason"].as_str().unwrap_or("?")
        );
    }
    eprintln!(
        "bulk: {} uploads in {:.1} s; trigger answered {:?}; {executions} executions started, {} built datasets; {} runs (pairs {:?}); last upload to tuning {:.2} s (quiet waited {} s)",
        up.keys.len() * 2,
        upload_time.as_secs_f64(),
        up.answers.by_outcome,
        built.len(),
        records.len(),
        records
            .iter()
            .map(|r| r["counts"]["pairs"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (tuning - last_upload).num_milliseconds() as f64 / 1000.0,
        last_record["quiet_wait_seconds"]
    );
    Bulk {
        executions,
        uploads: up.keys.len() * 2,
        last_upload_to_tuning: (tuning - last_upload).to_std().unwrap_or_default(),
        left_behind: 0,
    }
}

#[test]
fn a_bulk_upload_is_trained_completely_in_few_executions() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let b = bulk_scenario();
    assert!(b.executions >= 1 && b.uploads == 4000 && b.left_behind == 0);
}

#[test]
fn uploads_during_tuning_are_trained_by_a_follow_up_cycle_without_an_event() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let world = World::start(&[("DRY_RUN_DURATION", "6s")]);
    let first = world.upload(0..300, Duration::from_secs(3), true);
    assert_no_errors(&first.answers);
    // A run is tuning (its record says running): 200 more pairs arrive, with no event at all.
    world.wait_for_record(Duration::from_secs(30), "running", |r| {
        r["status"] == "running"
    });
    let executions_before = world.run.counts().0;
    let tuning_run = world
        .records()
        .into_iter()
        .find(|r| r["status"] == "running")
        .unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let during = world.upload(300..500, Duration::from_secs(1), false);
    world.run.wait_idle(Duration::from_secs(60));
    assert_eq!(
        world.run.counts().0,
        executions_before,
        "no execution started without an event"
    );
    let uploaded: BTreeSet<String> = first.keys.iter().chain(&during.keys).cloned().collect();
    let trained = world.check_quiet_system(&uploaded);
    // The 200 were trained by a follow-up cycle of the execution that was tuning.
    let cycles = world.cycle_of_run();
    let (execution, _) = cycles[&tuning_run].clone();
    let followers: Vec<(&String, &BTreeSet<String>)> = trained
        .iter()
        .filter(|(id, _)| cycles[*id].0 == execution && cycles[*id].1 > cycles[&tuning_run].1)
        .collect();
    assert_eq!(followers.len(), 1, "one follow-up cycle: {cycles:?}");
    let (_, keys) = followers[0];
    // Those not trained joined the evaluation set (it grows while smaller than EVAL_MIN_ROWS).
    let eval = world.eval_keys();
    assert!(
        during
            .keys
            .iter()
            .all(|k| keys.contains(k) || eval.contains(k))
    );
    assert!(
        !during.keys.iter().any(|k| trained[&tuning_run].contains(k)),
        "they arrived after the tuning run's inventory"
    );
    let records = world.records();
    let record = |id: &str| records.iter().find(|r| r["run_id"] == id).unwrap();
    let follow_up = record(followers[0].0);
    assert_eq!(follow_up["sample_delta"], 200);
    assert_eq!(
        follow_up["trigger_object"],
        record(&tuning_run)["trigger_object"],
        "the same execution, started by the same event"
    );
}

#[test]
fn detached_runs_are_finalised_and_continued_by_scheduled_executions() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let world = World::start(&[("DETACH", "true")]);
    let first = world.upload(0..300, Duration::from_secs(3), true);
    assert_no_errors(&first.answers);
    world.run.wait_idle(Duration::from_secs(60));
    // The run submitted its job and left: the lock holds the job for the next execution.
    let lock = world.lock();
    assert!(lock["tuning_job"].is_string(), "{lock}");
    let submitted = world.records();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0]["status"], "running");

    // More data, with no event; then the schedule fires (Cloud Scheduler calls jobs.run).
    let later = world.upload(300..500, Duration::from_secs(1), false);
    let before = world.run.counts().0;
    let (status, op) = world.run.scheduled_run();
    assert_eq!(status, 200, "{op}");
    world.run.wait_idle(Duration::from_secs(60));
    let tick = world.outputs().pop().unwrap().1;
    assert_eq!(world.run.counts().0, before + 1);
    let cycles = tick["cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), 2, "adopt, then build what waits: {tick}");
    assert!(
        cycles[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("adopted tuning job"),
        "{tick}"
    );
    assert_eq!(cycles[0]["status"], "dry_run");
    assert_eq!(
        cycles[1]["status"], "running",
        "built and submitted, detached"
    );
    assert_eq!(cycles[1]["sample_delta"], 200);

    // The next tick finalises that one and finds nothing new; the one after is idle.
    for expect_cycles in [1, 1] {
        let (status, _) = world.run.scheduled_run();
        assert_eq!(status, 200);
        world.run.wait_idle(Duration::from_secs(60));
        let out = world.outputs().pop().unwrap().1;
        assert_eq!(
            out["cycles"].as_array().unwrap().len(),
            expect_cycles,
            "{out}"
        );
    }
    let outputs = world.outputs();
    let idle = &outputs.last().unwrap().1;
    assert_eq!(idle["status"], "waiting", "{idle}");
    assert!(
        idle["cycles_stopped"]
            .as_str()
            .unwrap()
            .starts_with("gate 3: 0 new"),
        "{idle}"
    );

    let uploaded: BTreeSet<String> = first.keys.iter().chain(&later.keys).cloned().collect();
    let trained = world.check_quiet_system(&uploaded);
    assert_eq!(trained.len(), 2, "two runs: the burst, and what waited");
    let built = world.executions_that_built();
    assert!(built.len() <= 3, "{built:?}");
    // Scheduled executions carry no trigger event.
    let scheduled = world
        .run
        .with_executions(|es| es.last().unwrap().overrides.clone());
    assert!(scheduled.is_empty(), "{scheduled:?}");
}

/// The bulk scenario five times: executions started per 1,000 uploads, time from the last upload
/// to the start of tuning (p50), samples left behind. Figures, not a timed test.
#[test]
#[ignore = "benchmark: cargo test -p autotune --test tests -- --ignored --nocapture event_loop::bulk_benchmark"]
fn bulk_benchmark() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runs: Vec<Bulk> = (0..5).map(|_| bulk_scenario()).collect();
    let mut lags: Vec<Duration> = runs.iter().map(|b| b.last_upload_to_tuning).collect();
    lags.sort();
    for b in &runs {
        eprintln!(
            "executions per 1,000 uploads: {:.2} ({} for {}); last upload to tuning {:.2} s; left behind {}",
            b.executions as f64 * 1000.0 / b.uploads as f64,
            b.executions,
            b.uploads,
            b.last_upload_to_tuning.as_secs_f64(),
            b.left_behind
        );
    }
    eprintln!("p50 last upload to tuning: {:.2} s", lags[2].as_secs_f64());
}
