//! `autotune run` with TUNER=vertex, as a process, against the loopback fake of Vertex AI
//! (`tests/support/fake_vertex.rs`): the whole run, a run killed by SIGKILL after `create`,
//! twenty concurrent runs, SIGTERM while following, a failed job, and continuous tuning.
//!
//! Credentials take the real path: a generated service-account key in
//! GOOGLE_APPLICATION_CREDENTIALS, whose self-signed JWTs the fake checks. The bucket is a local
//! folder.

#![allow(clippy::too_many_lines)] // end-to-end scenarios read best as one story each

use crate::support;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_vertex::{self as fake, FakeVertex, LOCATION, PROJECT};
use support::{autotune, text_samples, uri_path};

/// A fake Vertex AI, a service-account key for it, and a bucket folder with text samples.
struct Env {
    fake: FakeVertex,
    key: PathBuf,
    bucket: tempfile::TempDir,
    /// The key and the logs of spawned runs, outside the bucket.
    scratch: tempfile::TempDir,
}

impl Env {
    fn new(samples: usize) -> Self {
        let fake = FakeVertex::start();
        let scratch = tempfile::tempdir().unwrap();
        let key = fake.service_account_key(scratch.path());
        let bucket = tempfile::tempdir().unwrap();
        text_samples(bucket.path(), 0, samples);
        Self {
            fake,
            key,
            bucket,
            scratch,
        }
    }

    fn root(&self) -> &Path {
        self.bucket.path()
    }

    /// `autotune run` with the Vertex tuner pointed at the fake.
    fn cmd(&self, envs: &[(&str, &str)]) -> Command {
        self.command("run", envs)
    }

    /// `autotune COMMAND` with the Vertex tuner pointed at the fake.
    fn command(&self, command: &str, envs: &[(&str, &str)]) -> Command {
        let mut c = autotune();
        c.arg(command)
            .env("BUCKET_NAME", self.root())
            .env("TUNER", "vertex")
            .env("PROJECT_ID", PROJECT)
            .env("LOCATION", LOCATION)
            .env("VERTEX_API_ENDPOINT", &self.fake.url)
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.key)
            .env("POLL_INTERVAL", "100ms")
            // The evaluation is tested on its own (`evaluation_on_vertex_*`).
            .env("EVAL_MODEL", "off")
            .envs(envs.iter().copied());
        c
    }

    /// Runs to the end (at most [`LIMIT`]); returns the JSON outcome on stdout and the run.
    fn run(&self, envs: &[(&str, &str)]) -> (Value, Finished) {
        let mut run = self.spawn(envs);
        let finished = run.wait_within(LIMIT);
        (finished.outcome(), finished)
    }

    /// Starts a run in the background, its stderr in a log file (a pipe could fill and stall
    /// it). The run is killed if the test ends first.
    fn spawn(&self, envs: &[(&str, &str)]) -> Running {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let log = self.scratch.path().join(format!("run-{n}.log"));
        let child = self
            .cmd(envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        Running { child, log }
    }

    fn lock(&self) -> Option<Value> {
        std::fs::read(self.root().join("trained_model/training.lock.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Waits until the run has created its tuning job and written it into the lease and then
    /// into its record (the lease first: it is what adoption reads).
    fn wait_for_job_in_lease(&self, run: &mut Running) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lease = self.lock();
            let job = lease
                .as_ref()
                .and_then(|l| l["tuning_job"].as_str().map(str::to_owned));
            let recorded = |job: &str| {
                lease
                    .as_ref()
                    .and_then(|l| l["run_record"].as_str())
                    .and_then(|key| std::fs::read(self.root().join(key)).ok())
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|r| r["model_details"]["tuning_job"] == job)
            };
            if let Some(job) = job.filter(|j| recorded(j)) {
                return job;
            }
            if let Some(status) = run.child.try_wait().unwrap() {
                panic!(
                    "the run ended ({status}) before recording its tuning job in the lease:\n{}",
                    std::fs::read_to_string(&run.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the run never recorded its tuning job in the lease"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The run records in the metadata folder, by file name.
    fn records(&self) -> Vec<(String, Value)> {
        let dir = self.root().join("trained_model");
        let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("model_metadata_")
                    })
                    .map(|p| {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        (name, read_json(&p))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Bodies schema-clean, JWTs right, every call authorised.
    fn assert_clean(&self) {
        assert_eq!(
            self.fake.violations(),
            Vec::<String>::new(),
            "bodies must match aiplatform.v1.json"
        );
        assert_eq!(self.fake.jwt_problems(), Vec::<String>::new());
        let unauthorised: Vec<_> = self
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.status == 401)
            .collect();
        assert!(unauthorised.is_empty(), "{unauthorised:?}");
    }
}

fn outcome(stdout: &[u8], stderr: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(stderr)
        )
    })
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The run record an outcome points at.
fn record_of(outcome: &Value) -> Value {
    read_json(&uri_path(&outcome["metadata_uri"]))
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::canonicalize(a).unwrap() == std::fs::canonicalize(b).unwrap()
}

/// Longest any run may take here; a run that follows a job for ever fails the test instead of
/// hanging it.
const LIMIT: Duration = Duration::from_secs(30);

/// A run in the background; killed on drop if still running.
struct Running {
    child: Child,
    log: PathBuf,
}

/// A run that ended.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    /// From the call to `wait_within` to the exit.
    took: Duration,
}

impl Finished {
    fn outcome(&self) -> Value {
        outcome(&self.stdout, self.stderr.as_bytes())
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the run at most `limit`; kills it and fails if it is still running then.
    fn wait_within(&mut self, limit: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the run was still running after {limit:?}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = start.elapsed();
        let mut stdout = Vec::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_end(&mut stdout).unwrap();
        }
        Finished {
            status,
            stdout,
            stderr: std::fs::read_to_string(&self.log).unwrap_or_default(),
            took,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until(t: chrono::DateTime<chrono::Utc>) {
    while chrono::Utc::now() <= t {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tuned_model(id: &str) -> String {
    format!("projects/{PROJECT}/locations/{LOCATION}/models/{id}")
}

/// [`fake::succeeds`] with a given tuned model, after `running` polls in RUNNING.
fn succeeds_with(model: &str, running: usize) -> Vec<fake::Step> {
    let mut h = fake::succeeds();
    let mut done = h.pop().unwrap();
    done.extra["tunedModel"]["model"] = json!(model);
    h.extend((1..running).map(|_| fake::step("JOB_STATE_RUNNING")));
    h.push(done);
    h
}

/// For a job that runs: one more poll in RUNNING, then SUCCEEDED with `model`.
fn then_succeeds(model: &str) -> Vec<fake::Step> {
    let mut done = fake::succeeds().pop().unwrap();
    done.extra["tunedModel"]["model"] = json!(model);
    vec![fake::step("JOB_STATE_RUNNING"), done]
}

/// Every string in a JSON value, nested.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn a_run_tunes_on_vertex_records_the_model_and_the_next_run_waits() {
    let env = Env::new(20);
    let (v, out) = env.run(&[]);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(out.status.code(), Some(0));

    assert_eq!(env.fake.created(), 1, "exactly one tuning job");
    let bodies = env.fake.create_bodies();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert!(body["baseModel"].is_string(), "{body}");
    assert!(body.get("preTunedModel").is_none(), "{body}");
    let run_key = body["labels"]["autotune_run_key"]
        .as_str()
        .unwrap_or_else(|| panic!("the create carries the run key label: {body}"));
    assert!(!run_key.is_empty());
    assert!(body["labels"]["autotune_run_id"].is_string(), "{body}");
    assert!(
        body["supervisedTuningSpec"]["trainingDatasetUri"]
            .as_str()
            .unwrap()
            .ends_with("sft_train.jsonl"),
        "{body}"
    );
    env.assert_clean();

    let record = record_of(&v);
    assert_eq!(record["status"], "success");
    assert_eq!(record["tuner"], "vertex");
    assert_eq!(record["run_id"], v["run_id"]);
    let d = &record["model_details"];
    let job = d["tuning_job"].as_str().unwrap_or_else(|| panic!("{d}"));
    assert!(
        job.starts_with(&format!(
            "projects/{PROJECT}/locations/{LOCATION}/tuningJobs/"
        )),
        "{job}"
    );
    assert_eq!(
        env.fake.job(job).unwrap()["labels"]["autotune_run_key"],
        run_key,
        "the job the record names is the one created"
    );
    assert_eq!(d["tuned_model"], tuned_model("987654321@1"));
    assert_eq!(
        d["endpoint"],
        format!("projects/{PROJECT}/locations/{LOCATION}/endpoints/1122334455")
    );
    assert_eq!(
        d["tuning_data_stats"],
        json!({
            "tuningDatasetExampleCount": 500,
            "totalBillableTokenCount": 123_456,
            "totalTruncatedExampleCount": 2
        })
    );
    assert!(record["error"].is_null(), "{record}");
    assert!(!record["training_end_time"].is_null());
    assert_eq!(
        v["model_details"]["tuned_model"], d["tuned_model"],
        "stdout says what the record says"
    );
    let lock = env.lock().unwrap();
    assert_eq!(lock["state"], "released");
    assert!(lock["tuning_job"].is_null(), "{lock}");

    // Nothing new: gate 3 makes the next run wait, and it creates nothing.
    let (again, out) = env.run(&[]);
    assert_eq!(again["status"], "waiting", "{again}");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        again["reason"].as_str().unwrap().contains("gate 3"),
        "{again}"
    );
    assert_eq!(again["baseline_run_id"], v["run_id"]);
    assert_eq!(env.fake.created(), 1);
    assert_eq!(env.records().len(), 1, "a waiting run writes no record");
}

#[test]
fn a_run_killed_after_create_is_adopted_once_its_lease_expires() {
    let env = Env::new(20);
    env.fake.set_history(fake::runs_forever());
    let mut victim = env.spawn(&[("LEASE_DURATION", "2s")]);
    let job = env.wait_for_job_in_lease(&mut victim);
    victim.child.kill().unwrap(); // SIGKILL: no chance to record or release anything
    victim.child.wait().unwrap();

    let dead = env.lock().unwrap();
    assert_eq!(dead["state"], "held", "a killed run leaves its lease");
    let record_key = dead["run_record"]
        .as_str()
        .unwrap_or_else(|| panic!("the lease names the record to finalise: {dead}"))
        .to_owned();
    let record_path = env.root().join(&record_key);
    let before = read_json(&record_path);
    assert_eq!(before["status"], "running", "{before}");
    assert_eq!(before["model_details"]["tuning_job"], job.as_str());
    assert_eq!(env.fake.created(), 1);

    let expires: chrono::DateTime<chrono::Utc> =
        dead["expires_at"].as_str().unwrap().parse().unwrap();
    // While the lease is live, a run keeps off (checked only with time to spare, since a run
    // that came after the expiry would adopt the job, which runs for ever yet).
    if chrono::Utc::now() + chrono::Duration::milliseconds(800) < expires {
        let (v, _) = env.run(&[]);
        assert_eq!(v["status"], "skipped", "{v}");
    }
    wait_until(expires + chrono::Duration::milliseconds(100));

    // Vertex finishes the job; the next run adopts it rather than tuning again.
    env.fake
        .play(&job, then_succeeds(&tuned_model("987654321@1")));
    let (v, out) = env.run(&[("LEASE_DURATION", "2s")]);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(out.status.code(), Some(0));
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("adopted") && reason.contains(&job),
        "{reason}"
    );
    assert_eq!(v["run_id"], before["run_id"], "the killed run is finalised");
    assert!(
        same_file(&uri_path(&v["metadata_uri"]), &record_path),
        "the same record: {} vs {}",
        v["metadata_uri"],
        record_path.display()
    );
    assert_eq!(
        env.fake.created(),
        1,
        "exactly one create: {:?}",
        env.fake.create_bodies()
    );
    env.assert_clean();

    let after = read_json(&record_path);
    assert_eq!(after["status"], "success", "{after}");
    assert_eq!(after["run_id"], before["run_id"]);
    assert_eq!(after["model_details"]["tuning_job"], job.as_str());
    assert_eq!(
        after["model_details"]["tuned_model"],
        tuned_model("987654321@1")
    );
    assert!(after["error"].is_null(), "{after}");
    assert!(!after["training_end_time"].is_null());
    assert_eq!(
        after["train_dataset_uri"], before["train_dataset_uri"],
        "what the killed run built is kept"
    );
    assert_eq!(env.records().len(), 1, "no second record");
    let lock = env.lock().unwrap();
    assert_eq!(lock["state"], "released");
    assert!(
        lock["tuning_job"].is_null(),
        "a finished job leaves the lease"
    );

    let (next, _) = env.run(&[]);
    assert_eq!(
        next["status"], "waiting",
        "the adopted run is the baseline: {next}"
    );
    assert_eq!(env.fake.created(), 1);
}

#[test]
fn twenty_concurrent_runs_create_one_job() {
    let env = Env::new(20);
    env.fake
        .set_history(succeeds_with(&tuned_model("987654321@1"), 5));
    let mut runs: Vec<Running> = (0..20).map(|_| env.spawn(&[])).collect();
    let results: Vec<(Value, Option<i32>)> = runs
        .iter_mut()
        .map(|r| {
            let f = r.wait_within(LIMIT);
            (f.outcome(), f.status.code())
        })
        .collect();
    let statuses: Vec<&str> = results
        .iter()
        .map(|(v, _)| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "success").count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| ["success", "skipped", "waiting"].contains(s)),
        "{statuses:?}"
    );
    assert!(
        results.iter().all(|(_, code)| *code == Some(0)),
        "{results:?}"
    );
    assert_eq!(
        env.fake.created(),
        1,
        "exactly one create: {:?}",
        env.fake.create_bodies()
    );
    env.assert_clean();
    let records = env.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1["status"], "success");
    let winner = &results
        .iter()
        .find(|(v, _)| v["status"] == "success")
        .unwrap()
        .0;
    assert_eq!(records[0].1["run_id"], winner["run_id"]);
    let datasets = walkdir_count(env.root(), "sft_train.jsonl");
    assert_eq!(datasets, 1, "one run converted");
    assert_eq!(env.lock().unwrap()["state"], "released");
}

fn walkdir_count(dir: &Path, name: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                walkdir_count(&p, name)
            } else {
                usize::from(p.file_name().is_some_and(|n| n == name))
            }
        })
        .sum()
}

#[test]
fn sigterm_while_following_hands_the_job_over_and_the_next_run_finalises() {
    let env = Env::new(20);
    env.fake.set_history(fake::runs_forever());
    let mut run = env.spawn(&[]);
    let job = env.wait_for_job_in_lease(&mut run);
    // Let it follow for a few polls.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.fake.count("GET", &job) < 2 {
        assert!(Instant::now() < deadline, "the run never polled its job");
        std::thread::sleep(Duration::from_millis(20));
    }

    let sent = Command::new("kill")
        .args(["-TERM", &run.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let finished = run.wait_within(Duration::from_secs(10));
    assert!(
        finished.took < Duration::from_secs(10),
        "exits within Cloud Run's 10 s"
    );
    assert_eq!(finished.status.code(), Some(1), "interrupted exits 1");
    let v = finished.outcome();
    assert_eq!(v["status"], "interrupted", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("SIGTERM"), "{v}");

    let handed = env.lock().unwrap();
    assert_eq!(handed["state"], "released", "the lock is free: {handed}");
    assert_eq!(handed["tuning_job"], job.as_str(), "the job is handed over");
    let record_path = uri_path(&v["metadata_uri"]);
    assert!(same_file(
        &env.root().join(handed["run_record"].as_str().unwrap()),
        &record_path
    ));
    let record = read_json(&record_path);
    assert_eq!(record["status"], "interrupted", "{record}");
    assert_eq!(record["model_details"]["tuning_job"], job.as_str());
    assert!(
        record["error"]
            .as_str()
            .unwrap_or_default()
            .contains("SIGTERM"),
        "{record}"
    );
    assert_eq!(
        env.fake.count("POST", ":cancel"),
        0,
        "the job is left running for the next run"
    );
    assert_eq!(
        env.fake.job(&job).unwrap()["state"],
        "JOB_STATE_RUNNING",
        "the job still runs"
    );

    // Vertex finishes; the next run adopts the job and finalises the interrupted run.
    env.fake
        .play(&job, then_succeeds(&tuned_model("987654321@1")));
    let (next, out) = env.run(&[]);
    assert_eq!(next["status"], "success", "{next}");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        next["run_id"], v["run_id"],
        "the interrupted run is finalised"
    );
    assert_eq!(next["metadata_uri"], v["metadata_uri"]);
    assert!(
        next["reason"].as_str().unwrap().contains("adopted"),
        "{next}"
    );
    let record = read_json(&record_path);
    assert_eq!(record["status"], "success", "{record}");
    assert!(record["error"].is_null(), "{record}");
    assert_eq!(record["model_details"]["tuning_job"], job.as_str());
    assert_eq!(
        record["model_details"]["tuned_model"],
        tuned_model("987654321@1")
    );
    assert!(!record["training_end_time"].is_null());
    assert_eq!(env.fake.created(), 1, "still one create");
    assert_eq!(env.records().len(), 1);
    env.assert_clean();
    let lock = env.lock().unwrap();
    assert_eq!(lock["state"], "released");
    assert!(lock["tuning_job"].is_null(), "{lock}");
}

#[test]
fn a_failed_job_records_googles_error_word_for_word() {
    let env = Env::new(20);
    let error = fake::data_error();
    env.fake.set_history(fake::fails(&error));
    let (v, out) = env.run(&[]);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(out.status.code(), Some(1));
    let message = error["message"].as_str().unwrap();
    let violation = error["details"][0]["fieldViolations"][0]["description"]
        .as_str()
        .unwrap();
    assert!(v["reason"].as_str().unwrap().contains(message), "{v}");

    let record = record_of(&v);
    assert_eq!(record["status"], "failed");
    assert!(
        record["error"]
            .as_str()
            .unwrap_or_default()
            .contains(message),
        "Google's message word for word: {record}"
    );
    let d = &record["model_details"];
    assert_eq!(
        d["error"], error,
        "Google's error, field violations included, word for word"
    );
    assert_eq!(d["state"], "JOB_STATE_FAILED");
    assert!(d["tuning_job"].is_string(), "{d}");
    assert!(d.get("tuned_model").is_none(), "{d}");
    assert!(!record["training_end_time"].is_null());

    // The log says it too (JSON lines on stderr).
    let mut logged = Vec::new();
    for line in out.stderr.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            strings(&v, &mut logged);
        }
    }
    assert!(
        logged.iter().any(|s| s.contains(message)),
        "the log holds Google's message: {logged:?}"
    );
    assert!(
        logged.iter().any(|s| s.contains(violation)),
        "the log holds the field violation: {logged:?}"
    );

    let lock = env.lock().unwrap();
    assert_eq!(lock["state"], "released", "{lock}");
    assert!(
        lock["tuning_job"].is_null(),
        "a failed job is finished: {lock}"
    );
    assert_eq!(env.fake.created(), 1);
    env.assert_clean();
}

#[test]
fn continuous_tuning_continues_from_the_last_tuned_model() {
    let env = Env::new(20);
    let continuous = [("TUNING_MODE", "continuous")];
    let first_model = tuned_model("987654321@1");
    env.fake.set_history(succeeds_with(&first_model, 1));
    let (first, _) = env.run(&continuous);
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(first["model_details"]["tuned_model"], first_model.as_str());
    let bodies = env.fake.create_bodies();
    assert_eq!(bodies.len(), 1);
    assert!(
        bodies[0]["baseModel"].is_string() && bodies[0].get("preTunedModel").is_none(),
        "the first run tunes SOURCE_MODEL: {}",
        bodies[0]
    );
    assert!(
        record_of(&first)["model_details"]
            .get("parent_model")
            .is_none()
    );

    text_samples(env.root(), 20, 12);
    let second_model = tuned_model("555666777@1");
    env.fake.set_history(succeeds_with(&second_model, 1));
    let (second, out) = env.run(&continuous);
    assert_eq!(second["status"], "success", "{second}");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.fake.created(), 2);
    let bodies = env.fake.create_bodies();
    assert_eq!(bodies.len(), 2);
    let body = &bodies[1];
    assert_eq!(
        body["preTunedModel"]["tunedModelName"],
        first_model.as_str(),
        "continues from the first run's model: {body}"
    );
    assert!(body.get("baseModel").is_none(), "no baseModel: {body}");
    assert_ne!(
        body["labels"]["autotune_run_key"], bodies[0]["labels"]["autotune_run_key"],
        "new data, new run key"
    );
    env.assert_clean();

    let record = record_of(&second);
    assert_eq!(record["status"], "success");
    assert_eq!(record["baseline_run_id"], first["run_id"]);
    let d = &record["model_details"];
    assert_eq!(d["parent_model"], first_model.as_str(), "lineage: {d}");
    assert_eq!(d["tuned_model"], second_model.as_str());
    assert_eq!(env.records().len(), 2);
}

#[test]
fn detach_submits_and_a_later_run_finalises() {
    let env = Env::new(20);
    env.fake.set_history(fake::runs_forever());
    let (v, done) = env.run(&[("DETACH", "true")]);
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(done.status.code(), Some(0));
    let job = v["model_details"]["tuning_job"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    let record = record_of(&v);
    assert_eq!(record["status"], "running");
    assert!(record["training_end_time"].is_null());
    let lock = env.lock().unwrap();
    assert_eq!(lock["state"], "released", "{lock}");
    assert_eq!(lock["tuning_job"], job.as_str(), "handed over: {lock}");

    env.fake
        .play(&job, then_succeeds(&tuned_model("987654321@1")));
    let (next, done) = env.run(&[]);
    assert_eq!(next["status"], "success", "{next}");
    assert_eq!(done.status.code(), Some(0));
    assert_eq!(next["run_id"], v["run_id"]);
    assert_eq!(next["metadata_uri"], v["metadata_uri"]);
    let record = record_of(&v);
    assert_eq!(record["status"], "success");
    assert!(!record["training_end_time"].is_null());
    assert_eq!(env.fake.created(), 1);
    assert_eq!(env.records().len(), 1);
    env.assert_clean();
}

/// MAX_TUNING_DURATION is the longest a tuning job may run, counted from its creation: a run
/// that adopts the job must not restart the clock, or a job whose runs each die before the
/// limit (Cloud Run task timeouts, SIGTERM) would never be cancelled.
#[test]
fn the_watchdog_counts_from_the_job_not_from_the_adopting_run() {
    let env = Env::new(20);
    env.fake.set_history(fake::runs_forever());
    // The job the first run creates has run for 10 s when the next run adopts it (its
    // createTime says so; no real time passes).
    env.fake
        .set_created_at(chrono::Utc::now() - chrono::Duration::seconds(10));
    let limit = [("MAX_TUNING_DURATION", "2s")];
    let (v, _) = env.run(&[("DETACH", "true"), limit[0]]);
    assert_eq!(v["status"], "running", "{v}");
    let job = v["model_details"]["tuning_job"]
        .as_str()
        .unwrap()
        .to_owned();
    // The job has run past MAX_TUNING_DURATION: the run that adopts it cancels it at once.
    let polls_before = env.fake.count("GET", &job);
    let (next, _) = env.run(&limit);
    assert_eq!(next["status"], "failed", "{next}");
    assert_eq!(next["model_details"]["timed_out"], true, "{next}");
    let polls = env.fake.count("GET", &job) - polls_before;
    assert!(
        polls <= 3,
        "the adopting run followed the job for another MAX_TUNING_DURATION ({polls} polls) before cancelling it"
    );
}

/// The number in a text sample's prompt ("question number 17").
fn sample_number(prompt: &str) -> Option<usize> {
    prompt
        .rsplit("question number ")
        .next()?
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn evaluation_on_vertex_blesses_a_better_tuned_model_and_promotes_it() {
    let env = Env::new(200);
    let tuned = fake::endpoint("1122334455");
    let base = fake::publisher_model("gemini-3.5-flash");
    // The tuned model is right on every row, the base model on a third of them.
    serve_gemini_3(&env, &["1122334455"]);
    // The candidate's endpoint is not ready at first (404), and the quota pushes back (429).
    env.fake.not_found_for(&tuned, 2);
    env.fake.fail_generate(&base, [429, 503]);
    let evaluation = [
        ("EVAL_MODEL", "vertex"),
        ("EVAL_RATIO", "0.25"),
        ("EVAL_MIN_ROWS", "20"),
        ("EVAL_CONCURRENCY", "8"),
        ("EVAL_GOOGLE_METRICS", "true"),
    ];
    let (v, out) = env.run(&evaluation);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(out.status.code(), Some(0));
    let record = record_of(&v);
    let e = &record["evaluation"];
    assert_eq!(e["verdict"], "BLESSED", "{e}");
    let rows = e["rows"].as_u64().unwrap() as usize;
    assert!(rows >= 20, "{e}");
    assert_eq!(
        e["candidate"]["model"],
        "projects/test-project/locations/us-central1/models/987654321@1"
    );
    assert_eq!(
        e["champion"]["model"],
        fake::publisher_model_in("gemini-3.5-flash", "us"),
        "the first candidate meets the base model, where Gemini 3 base models answer"
    );
    // Each row once per model (the 404s and 429s were retried, not paid as answers).
    assert_eq!(env.fake.answered(&tuned).len(), rows);
    assert_eq!(env.fake.answered(&base).len(), rows);
    assert!(env.fake.evaluate_calls() >= 2, "Google's cross-check ran");
    assert!(
        e["google_metrics"]["candidate"]["exact_match"]
            .as_f64()
            .unwrap()
            > 0.9,
        "{e}"
    );
    assert_eq!(
        record["promotion"]["promoted"], true,
        "{}",
        record["promotion"]
    );
    let champion = read_json(&env.root().join("trained_model/champion.json"));
    assert_eq!(champion["model"], e["candidate"]["model"]);
    assert_eq!(champion["endpoint"], tuned.as_str());
    assert_eq!(
        env.fake.alias_holders("champion"),
        [e["candidate"]["model"].as_str().unwrap()],
        "mergeVersionAliases moved the alias in the Model Registry"
    );
    let blessing = read_json(&uri_path(&e["blessing_uri"]));
    assert_eq!(blessing["verdict"], "BLESSED");
    assert_eq!(
        blessing["champion_model"],
        fake::publisher_model_in("gemini-3.5-flash", "us")
    );
    env.assert_clean();
}

/// Serves the candidate endpoint `id` right on every row and the base model
/// `gemini-3.5-flash` right on a third of them (each by name; the fake's placement rules
/// decide in which locations they answer).
fn serve_gemini_3(env: &Env, ids: &[&str]) {
    let answer = |right: fn(usize) -> bool| {
        move |prompt: &str| match sample_number(prompt) {
            Some(i) if right(i) => fake::FakeReply::Text(format!("{{\"answer\":\"a{i}\"}}")),
            Some(_) => fake::FakeReply::Text("{\"answer\":\"no idea\"}".to_owned()),
            None => fake::FakeReply::Empty,
        }
    };
    for id in ids {
        // The tuned model and its intermediate checkpoints (the fake saves three).
        env.fake.serve_model(&fake::endpoint(id), answer(|_| true));
        for k in 1..3 {
            env.fake.serve_model(
                &fake::checkpoint_endpoint(&fake::endpoint(id), k),
                answer(|_| true),
            );
        }
    }
    env.fake.serve_model(
        &fake::publisher_model("gemini-3.5-flash"),
        answer(|i| i % 3 == 0),
    );
}

/// The defaults (gemini-3.5-flash, us-central1) with evaluation on Vertex AI.
const GEMINI_3_EVALUATION: [(&str, &str); 5] = [
    ("EVAL_MODEL", "vertex"),
    ("EVAL_RATIO", "0.25"),
    ("EVAL_MIN_ROWS", "20"),
    ("EVAL_CONCURRENCY", "8"),
    ("TUNING_MODE", "continuous"),
];

/// Run 1 tunes gemini-3.5-flash in us-central1, judges the candidate on the multi-region
/// endpoint against the base model on the multi-region endpoint, blesses and promotes it
/// (pointer and alias); run 2 tunes from the champion and is judged against it there;
/// `autotune champion` calls it where it is served. `tuned_under`: where the fake's jobs name
/// their tuned models (`None`: the tuning region).
fn gemini_3_loop(tuned_under: Option<&'static str>) {
    let env = Env::new(200);
    if let Some(l) = tuned_under {
        env.fake.name_tuned_under(l);
    }
    serve_gemini_3(&env, &["1122334455", "2233445566"]);
    let named = tuned_under.unwrap_or(LOCATION);
    let first_model = format!("projects/{PROJECT}/locations/{named}/models/987654321@1");
    let first_endpoint = format!("projects/{PROJECT}/locations/{named}/endpoints/1122334455");
    let serving = format!("projects/{PROJECT}/locations/us/endpoints/1122334455");

    let (v, out) = env.run(&GEMINI_3_EVALUATION);
    assert_eq!(v["status"], "success", "{v}\n{}", out.stderr);
    let record = record_of(&v);
    let e = &record["evaluation"];
    assert_eq!(e["verdict"], "BLESSED", "{e}\n{}", out.stderr);
    assert_eq!(
        e["champion"]["model"],
        fake::publisher_model_in("gemini-3.5-flash", "us"),
        "the base model is called on the multi-region endpoint of LOCATION's jurisdiction"
    );
    assert_eq!(
        record["promotion"]["promoted"], true,
        "{}",
        record["promotion"]
    );
    let pointer = read_json(&env.root().join("trained_model/champion.json"));
    assert_eq!(pointer["model"], first_model.as_str());
    assert_eq!(pointer["endpoint"], first_endpoint.as_str());
    let answered_at = pointer["serving"]
        .as_str()
        .unwrap_or(first_endpoint.as_str());
    assert_eq!(
        answered_at, serving,
        "the pointer says where it answered: {pointer}"
    );
    assert_eq!(
        env.fake.alias_holders("champion"),
        std::slice::from_ref(&first_model),
        "mergeVersionAliases reached the Model Registry"
    );
    let merges: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(":mergeVersionAliases"))
        .collect();
    assert!(
        !merges.is_empty() && merges.iter().all(|r| r.status == 200),
        "{merges:?}"
    );
    // Tuning in us-central1; every generateContent where Google serves the model.
    let generate: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(":generateContent") && r.status == 200)
        .collect();
    assert!(!generate.is_empty());
    assert!(
        generate.iter().all(|r| r
            .body
            .as_ref()
            .is_some_and(|b| { b["generationConfig"]["temperature"].as_f64() == Some(1.0) })),
        "Gemini 3 is judged at its recommended temperature, 1.0"
    );
    assert!(
        generate.iter().all(|r| r.path.contains("/locations/us/")),
        "{:?}",
        generate.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(
        env.fake
            .create_bodies()
            .iter()
            .all(|b| b["baseModel"] == "gemini-3.5-flash"),
        "run 1 tunes the base model"
    );
    assert!(
        env.fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/tuningJobs") && r.method == "POST")
            .all(|r| r.path.contains(&format!("/locations/{LOCATION}/"))),
        "the job is created in LOCATION"
    );

    // Run 2: new data, continuous tuning from the champion, judged against it.
    text_samples(env.root(), 200, 40);
    let mut done = fake::succeeds().pop().unwrap();
    done.extra["tunedModel"] = json!({
        "model": tuned_model("555666777@1"),
        "endpoint": fake::endpoint("2233445566"),
    });
    env.fake
        .set_history(vec![fake::step("JOB_STATE_RUNNING"), done]);
    let (second, out) = env.run(&GEMINI_3_EVALUATION);
    assert_eq!(second["status"], "success", "{second}\n{}", out.stderr);
    assert_eq!(out.status.code(), Some(0));
    let bodies = env.fake.create_bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[1]["preTunedModel"]["tunedModelName"],
        first_model.as_str(),
        "continues from the champion: {}",
        bodies[1]
    );
    let record = record_of(&second);
    let e = &record["evaluation"];
    assert_eq!(
        e["champion"]["model"],
        first_model.as_str(),
        "judged against the champion: {e}"
    );
    assert!(
        e["verdict"] == "BLESSED" || e["verdict"] == "NOT_BLESSED",
        "judged to the end: {e}"
    );
    assert!(
        env.fake.answered(&fake::endpoint("1122334455")).len() >= 40,
        "the champion answered on its serving endpoint"
    );

    // `autotune champion`: the call line names the serving endpoint's location.
    let out = env.command("champion", &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = outcome(&out.stdout, &out.stderr);
    let call = info["call"].as_str().unwrap_or_else(|| panic!("{info}"));
    assert!(
        call.contains(&format!(
            "{}/v1/projects/{PROJECT}/locations/us/endpoints/",
            env.fake.url
        )) && call.contains(":generateContent"),
        "{call}"
    );
    env.assert_clean();
}

#[test]
fn gemini_3_defaults_are_tuned_judged_promoted_and_called_where_google_serves_them() {
    gemini_3_loop(None);
}

#[test]
fn gemini_3_tuned_models_named_under_the_multi_region_continue_and_serve() {
    gemini_3_loop(Some("us"));
}

#[test]
fn a_location_where_the_model_cannot_be_tuned_is_refused_before_anything() {
    let env = Env::new(20);
    let before: Vec<_> = walk(env.root());
    let out = env
        .cmd(&[("LOCATION", "asia-northeast1")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("LOCATION") && stderr.contains("us-central1, europe-west4"),
        "{stderr}"
    );
    for args in [&["plan"][..], &["validate", "x.jsonl"][..]] {
        let out = autotune()
            .args(args)
            .current_dir(env.scratch.path())
            .env("BUCKET_NAME", env.root())
            .env("LOCATION", "asia-northeast1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("us-central1, europe-west4"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(walk(env.root()), before, "nothing written");
    assert!(env.fake.requests().is_empty(), "no request to Vertex AI");
}

/// Every path under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_busy_tuning_job_in_another_region_defers_the_run_naming_it() {
    let env = Env::new(20);
    let busy = env
        .fake
        .seed_job_in("europe-west4", "someone-else", "JOB_STATE_RUNNING");
    let (v, out) = env.run(&[]);
    assert_eq!(v["status"], "deferred", "{v}\n{}", out.stderr);
    assert_eq!(out.status.code(), Some(0));
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains(&busy) && reason.contains("europe-west4"),
        "{reason}"
    );
    assert_eq!(env.fake.created(), 0, "nothing tuned");
    env.assert_clean();
}

/// Issue 23: a job with three checkpoints, the second the best. Each is judged on its own
/// endpoint against the base model (Holm-corrected); the pointer names checkpoint 2 and its
/// endpoint, `models.patch` makes it the version's default checkpoint, and the next continuous
/// job starts from it (`preTunedModel.checkpointId`). Every body is checked against the
/// discovery document; the losing checkpoints are left alone.
#[test]
fn the_best_checkpoint_is_promoted_made_default_and_continued_from() {
    let env = Env::new(200);
    let last = fake::endpoint("1122334455");
    let first = fake::checkpoint_endpoint(&last, 1);
    let second = fake::checkpoint_endpoint(&last, 2);
    let model = tuned_model("987654321@1");
    let answer = |right: fn(usize) -> bool| {
        move |prompt: &str| match sample_number(prompt) {
            Some(i) if right(i) => fake::FakeReply::Text(format!("{{\"answer\":\"a{i}\"}}")),
            Some(_) => fake::FakeReply::Text("{\"answer\":\"no idea\"}".to_owned()),
            None => fake::FakeReply::Empty,
        }
    };
    // Right on: checkpoint 1 half the rows, checkpoint 2 all, checkpoint 3 (the last) four in
    // five; the base model a third.
    env.fake.serve_model(&first, answer(|i| i % 2 == 0));
    env.fake.serve_model(&second, answer(|_| true));
    env.fake.serve_model(&last, answer(|i| i % 5 != 0));
    env.fake.serve_model(
        &fake::publisher_model("gemini-3.5-flash"),
        answer(|i| i % 3 == 0),
    );
    let settings = [
        ("EVAL_MODEL", "vertex"),
        ("EVAL_RATIO", "0.25"),
        ("EVAL_MIN_ROWS", "20"),
        ("EVAL_CONCURRENCY", "8"),
        ("EPOCHS", "3"),
        ("TUNING_MODE", "continuous"),
    ];
    let (v, out) = env.run(&settings);
    assert_eq!(v["status"], "success", "{v}\n{}", out.stderr);
    let bodies = env.fake.create_bodies();
    assert_eq!(
        bodies[0]["supervisedTuningSpec"]["exportLastCheckpointOnly"], false,
        "intermediate checkpoints are asked for by default: {}",
        bodies[0]
    );
    let record = record_of(&v);
    let e = &record["evaluation"];
    assert_eq!(e["verdict"], "BLESSED", "{e}\n{}", out.stderr);
    let c = &e["checkpoints"];
    assert_eq!(c["winner"], "2", "{c}");
    assert_eq!(c["correction"], "holm");
    assert_eq!(c["selection"], "all");
    let judged = c["judged"].as_array().unwrap();
    assert_eq!(judged.len(), 3, "{c}");
    let ids: Vec<&str> = judged
        .iter()
        .map(|j| j["checkpoint_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    for j in judged {
        let [lo, hi] = [&j["interval"][0], &j["interval"][1]].map(|x| x.as_f64().unwrap());
        let delta = j["delta"].as_f64().unwrap();
        assert!(lo <= delta && delta <= hi, "{j}");
        assert!(j["score"].is_number() && j["level"].is_number(), "{j}");
    }
    assert_eq!(judged[1]["winner"], true);
    assert!(
        judged[1]["score"].as_f64() > judged[2]["score"].as_f64(),
        "the second is better than the last: {c}"
    );
    let rows = e["rows"].as_u64().unwrap() as usize;
    for endpoint in [&first, &second, &last] {
        assert_eq!(env.fake.answered(endpoint).len(), rows, "{endpoint}");
    }
    assert_eq!(
        env.fake
            .answered(&fake::publisher_model_in("gemini-3.5-flash", "us"))
            .len(),
        rows,
        "the champion answers once for all three checkpoints"
    );
    let blessing = read_json(&uri_path(&e["blessing_uri"]));
    assert_eq!(blessing["checkpoints"]["winner"], "2", "{blessing}");

    // The pointer names checkpoint 2 and its endpoint.
    let pointer = read_json(&env.root().join("trained_model/champion.json"));
    assert_eq!(pointer["model"], model.as_str());
    assert_eq!(pointer["checkpoint"], "2", "{pointer}");
    assert_eq!(pointer["endpoint"], second.as_str(), "{pointer}");
    assert_eq!(record["promotion"]["default_checkpoint"], "set to 2");
    // models.patch made it the version's default, with its update mask.
    let patches: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].path, format!("/v1/{model}"));
    assert_eq!(patches[0].query, "updateMask=defaultCheckpointId");
    assert_eq!(
        patches[0].body.as_ref().unwrap(),
        &json!({"defaultCheckpointId": "2"})
    );
    assert_eq!(patches[0].status, 200);
    assert_eq!(env.fake.default_checkpoint(&model).as_deref(), Some("2"));
    // Nothing deleted.
    assert!(
        env.fake.requests().iter().all(|r| r.method != "DELETE"),
        "the losing checkpoints are left alone"
    );

    // `autotune history` shows the checkpoints judged and the winner.
    let out = env.command("history", &[]).output().unwrap();
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(history.contains("2 of 3"), "{history}");
    assert!(
        history.contains("checkpoint 2 (epoch 2, step 20)") && history.contains("the winner"),
        "{history}"
    );

    // Run 2: new data; continuous tuning starts from checkpoint 2 of the champion.
    text_samples(env.root(), 200, 40);
    let mut done = fake::succeeds().pop().unwrap();
    done.extra["tunedModel"] = json!({
        "model": tuned_model("987654321@2"),
        "endpoint": fake::endpoint("2233445566"),
    });
    env.fake
        .set_history(vec![fake::step("JOB_STATE_RUNNING"), done]);
    for k in 1..3 {
        env.fake.serve_model(
            &fake::checkpoint_endpoint(&fake::endpoint("2233445566"), k),
            answer(|_| true),
        );
    }
    env.fake
        .serve_model(&fake::endpoint("2233445566"), answer(|_| true));
    let (second_run, out) = env.run(&settings);
    assert_eq!(
        second_run["status"], "success",
        "{second_run}\n{}",
        out.stderr
    );
    let bodies = env.fake.create_bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[1]["preTunedModel"],
        json!({"tunedModelName": model, "checkpointId": "2"}),
        "continues from the champion's checkpoint: {}",
        bodies[1]
    );
    let record = record_of(&second_run);
    assert_eq!(
        record["evaluation"]["champion"]["model"],
        model.as_str(),
        "judged against checkpoint 2's model"
    );
    assert!(
        env.fake.answered(&second).len() > rows,
        "the champion answered on checkpoint 2's endpoint"
    );
    env.assert_clean();
}
