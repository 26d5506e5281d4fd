//! End-to-end tests of the `autotune` binary: settings, gates, bad input, concurrency, signals,
//! the delta gate and the stable split, on a local folder and on fake-gcs-server.

#![allow(clippy::too_many_lines)] // end-to-end scenarios read best as one story each

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{FakeGcs, autotune, discovery::Discovery, text_samples, uri_path, write};

fn run_in(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Value, Output) {
    let out = autotune()
        .args(args)
        .arg("--bucket-name")
        .arg(root)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

fn files_under(root: &Path) -> BTreeSet<String> {
    walk(root, root)
}

fn walk(root: &Path, dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(root, &p));
        } else {
            out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn help_names_every_setting_and_its_variable() {
    let out = autotune().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PROJECT_ID",
        "BUCKET_NAME",
        "RAW_DATA_FOLDER",
        "LABEL_FOLDER",
        "JSONL_FOLDER",
        "MODEL_META_FOLDER",
        "MIN_SAMPLES",
        "SPLIT_RATIO",
        "SOURCE_MODEL",
        "TRAIN_FILE",
        "VAL_FILE",
        "LOCATION",
        "TUNER",
        "PROMPT",
        "SYSTEM_INSTRUCTION",
        "LABEL_FIELD",
        "MAX_REJECTED_RATIO",
        "CONVERT_CONFIG",
        "MODEL_LIMITS_FILE",
        "PRICE_PER_MILLION_TRAINING_TOKENS",
        "MAX_TRAINING_TOKENS",
        "EPOCHS",
        "ADAPTER_SIZE",
        "TUNING_MODE",
        "POLL_INTERVAL",
        "MAX_TUNING_DURATION",
        "VERTEX_API_ENDPOINT",
        "TUNING_QUOTA_REGIONS",
        "TUNING_SERVICE_ACCOUNT",
        "DETACH",
        "SPLIT_SEED",
        "LEASE_DURATION",
        "LOG_FORMAT",
        "QUIET_PERIOD",
        "MAX_QUIET_WAIT",
        "MAX_CYCLES",
        "TASK_DEADLINE",
    ] {
        let flag = format!("--{}", var.to_lowercase().replace('_', "-"));
        assert!(help.contains(&flag), "--help lacks {flag}");
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help lacks [env: {var}]"
        );
    }
    for (var, default) in [
        ("RAW_DATA_FOLDER", "raw_training_data"),
        ("LABEL_FOLDER", "raw_training_data"),
        ("JSONL_FOLDER", "training_datasets"),
        ("MODEL_META_FOLDER", "trained_model"),
        ("MIN_SAMPLES", "10"),
        ("SPLIT_RATIO", "0.9"),
        ("TRAIN_FILE", "sft_train.jsonl"),
        ("VAL_FILE", "sft_val.jsonl"),
        ("LOCATION", "us-central1"),
        ("QUIET_PERIOD", "30s"),
        ("MAX_QUIET_WAIT", "10m"),
        ("MAX_CYCLES", "3"),
    ] {
        let at = help.find(&format!("[env: {var}=")).unwrap();
        let rest = &help[at..];
        let end = rest.find("\n  -").unwrap_or(rest.len());
        assert!(
            rest[..end].contains(&format!("[default: {default}]")),
            "{var} keeps the seed's default {default}: {}",
            &rest[..end]
        );
    }
}

/// `--help` shows the values of set variables; a webhook's URL carries its credential.
#[test]
fn help_never_shows_the_webhook_or_its_secret() {
    let out = autotune()
        .args(["run", "--help"])
        .env(
            "NOTIFY_WEBHOOK",
            "https://hooks.example.com/services/XOXB-HELP-TOKEN",
        )
        .env("NOTIFY_WEBHOOK_SECRET", "HELP-SECRET")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[env: NOTIFY_WEBHOOK"), "{help}");
    assert!(!help.contains("XOXB-HELP-TOKEN"), "{help}");
    assert!(!help.contains("HELP-SECRET"), "{help}");
}

#[test]
fn bad_settings_exit_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().to_str().unwrap();
    for (var, value) in [
        ("MIN_SAMPLES", "abc"),
        ("SPLIT_RATIO", "1.5"),
        ("MAX_REJECTED_RATIO", "2"),
        ("ADAPTER_SIZE", "3"),
        ("LABEL_FIELD", "answer"),
        ("LEASE_DURATION", "soon"),
        ("MAX_BYTES_IN_FLIGHT", "0"),
        ("MAX_BYTES_IN_FLIGHT", "1000"),
        ("PROMPT", "@/nonexistent/prompt.txt"),
        ("BUCKET_NAME", "s3://bucket"),
        ("BUCKET_NAME", "/nonexistent/folder/x"),
    ] {
        let mut cmd = autotune();
        cmd.arg("run");
        if var != "BUCKET_NAME" {
            cmd.env("BUCKET_NAME", bucket);
        }
        let out = cmd.env(var, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var),
            "{var}={value}: the error names the setting: {stderr}"
        );
    }
    let out = autotune().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BUCKET_NAME"));
}

#[test]
fn example_run_then_waiting_then_plan_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 5);
    let (v, out) = run_in(root, &["run"], &[]);
    assert_eq!(v["status"], "waiting", "gate 2 with 5 < 10 pairs: {v}");
    assert_eq!(out.status.code(), Some(0));
    assert!(v["reason"].as_str().unwrap().contains("gate 2"));
    assert_eq!(files_under(root).len(), 10, "a waiting run writes nothing");

    text_samples(root, 5, 20);
    write(root, "raw_training_data/lonely.txt", "no label");
    let before = files_under(root);
    let (plan, _) = run_in(root, &["plan", "--output", "json"], &[]);
    assert_eq!(plan["status"], "success", "{plan}");
    assert_eq!(
        plan["plan"]["would_train"].as_u64().unwrap()
            + plan["plan"]["would_validate"].as_u64().unwrap(),
        25
    );
    assert_eq!(files_under(root), before, "plan writes nothing");

    let (v, out) = run_in(
        root,
        &["run"],
        &[("PROMPT", "Answer:"), ("LABEL_FIELD", "/answer")],
    );
    assert_eq!(v["status"], "dry_run", "{v}");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(v["counts"]["pairs"], 25);
    // Every cycle is listed; the follow-up listing found nothing new, so there was one.
    assert_eq!(v["cycles"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["cycles"][0]["run_id"], v["run_id"]);
    assert!(
        v["cycles_stopped"]
            .as_str()
            .unwrap()
            .starts_with("gate 3: 0 new or changed"),
        "{v}"
    );
    assert_eq!(v["counts"]["unpaired_raw"], 1, "{v}");
    assert!(
        v["unpaired_examples"][0]
            .as_str()
            .unwrap()
            .ends_with("raw_training_data/lonely.txt"),
        "the report names it: {v}"
    );
    let train = read_jsonl(&uri_path(&v["train_dataset_uri"]));
    let val = read_jsonl(&uri_path(&v["validation_dataset_uri"]));
    let eval = v["counts"]["eval"].as_u64().unwrap() as usize;
    assert!(eval >= 1, "the first run froze an evaluation set: {v}");
    assert_eq!(train.len() + val.len() + eval, 25);
    let record: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&v["metadata_uri"])).unwrap()).unwrap();
    for field in [
        "status",
        "sample_size",
        "previous_sample_size",
        "sample_delta",
        "training_start_time",
        "training_end_time",
        "training_duration_seconds",
        "model_details",
        "run_id",
        "split_seed",
        "manifest_uri",
        "lock_generation",
        "train_dataset_uri",
        "counts",
    ] {
        assert!(!record[field].is_null(), "record has {field}: {record}");
    }
    assert_eq!(record["status"], "dry_run");
    assert_eq!(record["sample_size"], 25);
    // The request the Vertex tuner would send matches the discovery document.
    let aiplatform = Discovery::load("aiplatform.v1.json");
    let body = &record["model_details"]["request"]["body"];
    let errors = aiplatform.check("GoogleCloudAiplatformV1TuningJob", body);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        body["supervisedTuningSpec"]["trainingDatasetUri"],
        v["train_dataset_uri"]
    );
    // Every line is a valid Content pair, text after the prompt.
    for line in train.iter().chain(&val) {
        for c in line["contents"].as_array().unwrap() {
            let errors = aiplatform.check("GoogleCloudAiplatformV1Content", c);
            assert!(errors.is_empty(), "{errors:?}");
        }
        assert_eq!(line["contents"][0]["parts"][0]["text"], "Answer:");
        assert!(
            line["contents"][0]["parts"][1]["text"]
                .as_str()
                .unwrap()
                .starts_with("question number")
        );
        assert!(
            line["contents"][1]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with('a')
        );
    }

    let (v, _) = run_in(root, &["run"], &[]);
    assert_eq!(v["status"], "waiting", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("gate 3"), "{v}");
}

#[test]
fn bad_samples_are_rejected_and_the_rest_convert() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 40);
    let r = "raw_training_data";
    write(root, &format!("{r}/bad_json.txt"), "fine");
    write(root, &format!("{r}/bad_json.json"), "{\"answer\": ");
    write(root, &format!("{r}/latin1.txt"), b"caf\xe9");
    write(root, &format!("{r}/latin1.json"), "{\"answer\":\"x\"}");
    write(root, &format!("{r}/empty.txt"), "text");
    write(root, &format!("{r}/empty.json"), "{\"answer\":\"\"}");
    write(root, &format!("{r}/anim.gif"), "GIF89a");
    write(root, &format!("{r}/anim.json"), "{\"answer\":\"x\"}");
    write(root, &format!("{r}/huge.png"), "");
    std::fs::File::options()
        .write(true)
        .open(root.join(format!("{r}/huge.png")))
        .unwrap()
        .set_len(21_000_000)
        .unwrap();
    write(root, &format!("{r}/huge.json"), "{\"answer\":\"x\"}");
    write(root, &format!("{r}/dup.txt"), "one");
    write(root, &format!("{r}/dup.md"), "two");
    write(root, &format!("{r}/dup.json"), "{\"answer\":\"x\"}");
    // Compressed text and labels are read through gzip.
    let gz = |s: &str| {
        use std::io::Write;
        let mut e = GzEncoder::new();
        e.write_all(s.as_bytes()).unwrap();
        e.finish()
    };
    write(
        root,
        &format!("{r}/zipped.txt.gz"),
        gz("compressed question"),
    );
    write(
        root,
        &format!("{r}/zipped.json.gz"),
        gz("{\"answer\":\"compressed answer\"}"),
    );
    write(root, &format!("{r}/image.png"), b"\x89PNG fake");
    // A file name that is not UTF-8 cannot be an object name: reported, not fatal.
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(root.join(r).join(name), "x").unwrap();
    }
    write(
        root,
        &format!("{r}/image.json"),
        "{\"answer\":\"an image\"}",
    );

    let env = [
        ("LABEL_FIELD", "/answer"),
        ("IMAGE_EXTENSIONS", "png,gif"),
        ("SPLIT_RATIO", "1"),
        ("MAX_REJECTED_RATIO", "0.2"),
        // A local image's content digest is its file version, new in every temporary folder:
        // with an evaluation set, which samples train would change from run to run.
        ("EVAL_RATIO", "0"),
    ];
    // `plan` shows the same rejects and the token estimate, and writes nothing.
    let before = files_under(root);
    let (plan, _) = run_in(root, &["plan", "--output", "json"], &env);
    assert_eq!(plan["counts"]["rejected"], 7, "{plan}");
    assert_eq!(
        plan["plan"]["built"]["rejected_by_category"]["malformed_label"], 1,
        "{plan}"
    );
    assert_eq!(
        plan["plan"]["built"]["reject_examples"]["not_utf8"][0]["key"],
        "latin1"
    );
    assert!(
        plan["plan"]["estimate"]["train"]["tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{plan}"
    );
    let text = autotune()
        .args(["plan", "--bucket-name"])
        .arg(root)
        .envs(env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for expected in [
        "Gates",
        "Rejects",
        "malformed_label",
        "label is not valid JSON",
        "invalid_name",
        "Token estimate",
        "Tokens per training example",
    ] {
        assert!(
            text.contains(expected),
            "plan's tables lack {expected:?}:\n{text}"
        );
    }
    assert_eq!(files_under(root), before, "plan writes nothing");

    let (v, out) = run_in(root, &["run"], &env);
    assert_eq!(
        v["status"],
        "dry_run",
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["counts"]["train"], 42, "40 text + zipped + image: {v}");
    assert_eq!(v["counts"]["rejected"], 7, "{v}");
    let rejects = read_jsonl(&uri_path(&v["rejected_uri"]));
    let by_key: BTreeMap<String, &Value> = rejects
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_owned(), r))
        .collect();
    for (key, category, object) in [
        ("bad_json", "malformed_label", "bad_json.json"),
        ("latin1", "not_utf8", "latin1.txt"),
        ("empty", "empty_label", "empty.json"),
        ("anim", "unsupported_type", "anim.gif"),
        ("huge", "too_large", "huge.png"),
        ("dup", "ambiguous", "dup.md"),
        ("raw_training_data/caf\u{fffd}.txt", "invalid_name", "caf"),
    ] {
        let r = by_key
            .get(key)
            .unwrap_or_else(|| panic!("{key} rejected: {rejects:?}"));
        assert_eq!(r["category"], category, "{r}");
        assert!(
            r["objects"].to_string().contains(object),
            "names the object: {r}"
        );
        assert!(!r["reason"].as_str().unwrap().is_empty());
    }
    let train = read_jsonl(&uri_path(&v["train_dataset_uri"]));
    let text = serde_json::to_string(&train).unwrap();
    assert!(text.contains("compressed question") && text.contains("compressed answer"));
    let image = train
        .iter()
        .find(|l| !l["contents"][0]["parts"][0]["fileData"].is_null())
        .expect("the image sample");
    let file_data = &image["contents"][0]["parts"][0]["fileData"];
    assert_eq!(file_data["mimeType"], "image/png");
    assert!(
        file_data["fileUri"]
            .as_str()
            .unwrap()
            .ends_with("raw_training_data/image.png"),
        "{file_data}"
    );

    // Over MAX_REJECTED_RATIO the run fails before tuning, records why, frees the lock.
    text_samples(root, 100, 20);
    let (v, out) = run_in(
        root,
        &["run"],
        &[
            ("LABEL_FIELD", "/answer"),
            ("MAX_REJECTED_RATIO", "0.05"),
            ("IMAGE_EXTENSIONS", "png,gif"),
            ("SPLIT_RATIO", "1"),
        ],
    );
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        v["reason"].as_str().unwrap().contains("MAX_REJECTED_RATIO"),
        "{v}"
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&v["metadata_uri"])).unwrap()).unwrap();
    assert_eq!(record["status"], "failed");
    assert!(record["error"].as_str().unwrap().contains("rejected"));
    assert!(
        record["model_details"]["request"].is_null() || record["model_details"].is_null(),
        "no tuning was started"
    );
    let lock: Value = serde_json::from_slice(
        &std::fs::read(root.join("trained_model/training.lock.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(lock["state"], "released");
}

/// A tiny gzip encoder on top of the async-compression crate's sync cousin is not available
/// here, so tests shell out to `gzip`.
struct GzEncoder(Vec<u8>);
impl GzEncoder {
    fn new() -> Self {
        Self(Vec::new())
    }
    fn finish(self) -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&self.0).unwrap();
        child.wait_with_output().unwrap().stdout
    }
}
impl std::io::Write for GzEncoder {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn adding_samples_never_moves_one_between_sides() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 60);
    let env = [("SPLIT_RATIO", "0.7"), ("MIN_SAMPLES", "10")];
    let (first, _) = run_in(root, &["run"], &env);
    assert_eq!(first["status"], "dry_run", "{first}");
    let keys = |uri: &Value| -> BTreeSet<String> {
        read_jsonl(&uri_path(uri))
            .iter()
            .map(|l| {
                l["contents"][0]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (train1, val1) = (
        keys(&first["train_dataset_uri"]),
        keys(&first["validation_dataset_uri"]),
    );
    assert!(!val1.is_empty());
    // Delete 5 and add 12: the seed's count difference (+7) would wait; 12 new samples pass.
    for i in 0..5 {
        std::fs::remove_file(root.join(format!("raw_training_data/s{i:04}.txt"))).unwrap();
    }
    text_samples(root, 1000, 12);
    let (second, _) = run_in(root, &["run"], &env);
    assert_eq!(
        second["status"], "dry_run",
        "delete 5 + add 12 passes MIN_SAMPLES=10: {second}"
    );
    assert_eq!(second["sample_delta"], 12);
    let (train2, val2) = (
        keys(&second["train_dataset_uri"]),
        keys(&second["validation_dataset_uri"]),
    );
    assert!(train2.is_disjoint(&val2), "no sample in both files");
    assert!(
        val1.is_disjoint(&train2),
        "no validation sample moved into training"
    );
    assert!(
        train1.is_disjoint(&val2),
        "no training sample moved into validation"
    );
    let rec1: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&first["metadata_uri"])).unwrap()).unwrap();
    let rec2: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&second["metadata_uri"])).unwrap()).unwrap();
    assert_eq!(
        rec1["split_seed"], rec2["split_seed"],
        "the recorded seed is reused"
    );
    assert_eq!(rec2["previous_sample_size"], 60);
    assert_eq!(rec2["sample_size"], 67);
}

fn concurrent_runs(bucket: &str, envs: &[(&str, &str)]) -> Vec<Value> {
    let children: Vec<Child> = (0..16)
        .map(|_| {
            autotune()
                .arg("run")
                .env("BUCKET_NAME", bucket)
                .envs(envs.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| serde_json::from_slice(&c.wait_with_output().unwrap().stdout).unwrap())
        .collect()
}

#[test]
fn sixteen_concurrent_runs_one_converts_local() {
    let dir = tempfile::tempdir().unwrap();
    text_samples(dir.path(), 0, 200);
    let results = concurrent_runs(dir.path().to_str().unwrap(), &[("DRY_RUN_DURATION", "2s")]);
    let statuses: Vec<&str> = results
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "dry_run").count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| ["dry_run", "skipped", "waiting"].contains(s)),
        "{statuses:?}"
    );
    let files = files_under(dir.path());
    assert_eq!(
        files
            .iter()
            .filter(|f| f.contains("model_metadata_"))
            .count(),
        1,
        "{files:?}"
    );
    assert_eq!(
        files
            .iter()
            .filter(|f| f.ends_with("sft_train.jsonl"))
            .count(),
        1
    );
}

#[test]
fn sixteen_concurrent_runs_one_converts_on_the_emulator() {
    let gcs = FakeGcs::start();
    let bucket = gcs.bucket();
    let store = autotune::storage::gcs::GcsStore::with_emulator(&bucket, Some(&gcs.host)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use autotune::storage::{PutMode, Store};
        for i in 0..100 {
            store
                .put(
                    &format!("raw_training_data/s{i}.txt"),
                    format!("q{i}").into(),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
            store
                .put(
                    &format!("raw_training_data/s{i}.json"),
                    format!("{{\"a\":{i}}}").into(),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
    });
    let results = concurrent_runs(
        &format!("gs://{bucket}"),
        &[
            ("STORAGE_EMULATOR_HOST", &gcs.host),
            ("DRY_RUN_DURATION", "1s"),
        ],
    );
    let statuses: Vec<&str> = results
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "dry_run").count(),
        1,
        "{statuses:?}"
    );
    let winner = results.iter().find(|v| v["status"] == "dry_run").unwrap();
    assert!(
        winner["train_dataset_uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("gs://{bucket}/training_datasets/"))
    );
    let listed: Vec<String> = rt.block_on(async {
        use autotune::storage::Store;
        use futures::TryStreamExt;
        store
            .list("")
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap()
    });
    assert_eq!(
        listed
            .iter()
            .filter(|k| k.contains("model_metadata_"))
            .count(),
        1,
        "{listed:?}"
    );
    // The dataset is on the emulator, with gs:// URIs for Vertex.
    let train_key = winner["train_dataset_uri"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("gs://{bucket}/"))
        .unwrap()
        .to_owned();
    let body = rt
        .block_on(autotune::storage::get_bytes(&store, &train_key, 1 << 30))
        .unwrap();
    let lines = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        winner["counts"]["train"].as_u64().unwrap()
    );
}

/// Starts `autotune run` in the background with a dry-run tuner that "tunes" for a minute, so
/// the run holds its lease (and its job) while the test acts on it. Output is piped.
fn spawn_slow_run(root: &Path, envs: &[(&str, &str)]) -> Child {
    autotune()
        .arg("run")
        .env("BUCKET_NAME", root)
        .env("DRY_RUN_DURATION", "60s")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lock(root: &Path) -> Option<Value> {
    std::fs::read(root.join("trained_model/training.lock.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn wait_for_held_lock(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while lock(root).is_none_or(|l| l["state"] != "held") {
        assert!(Instant::now() < deadline, "the run never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_runs_lease_is_taken_over_after_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let mut victim = spawn_slow_run(root, &[("LEASE_DURATION", "3s")]);
    wait_for_held_lock(root);
    victim.kill().unwrap(); // SIGKILL: no chance to release
    victim.wait().unwrap();
    let dead = lock(root).unwrap();
    assert_eq!(dead["state"], "held", "a killed run leaves its lease");
    let (v, _) = run_in(root, &["run"], &[]);
    assert_eq!(v["status"], "skipped", "a live lease is respected: {v}");
    let expires: chrono::DateTime<chrono::Utc> =
        dead["expires_at"].as_str().unwrap().parse().unwrap();
    while chrono::Utc::now() <= expires + chrono::Duration::milliseconds(100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (v, _) = run_in(root, &["run"], &[]);
    assert_eq!(
        v["status"], "dry_run",
        "an expired lease is taken over: {v}"
    );
    assert_eq!(lock(root).unwrap()["state"], "released");
}

#[test]
fn sigterm_during_the_quiet_wait_exits_at_once_having_written_nothing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let before = files_under(root);
    let mut child = spawn_slow_run(root, &[("QUIET_PERIOD", "10m")]);
    // The run says it is waiting for uploads to settle (its log is read to the end).
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (waiting, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("has been added or changed for QUIET_PERIOD") {
                let _ = waiting.send(());
            }
        }
    });
    seen.recv_timeout(Duration::from_secs(20))
        .expect("the run logs that it waits for uploads to settle");
    let sent = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(5), "at once");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(
        v["reason"],
        "interrupted by SIGTERM while waiting for uploads to settle; nothing was written"
    );
    assert_eq!(v["cycles"].as_array().unwrap().len(), 1);
    assert_eq!(files_under(root), before, "no lock, no record, no dataset");
}

/// Waits until the run has submitted its (dry-run) tuning job and written it into the lease.
fn wait_for_job_in_lease(root: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(job) = lock(root).and_then(|l| l["tuning_job"].as_str().map(str::to_owned)) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "the run never recorded its tuning job in the lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_records_interrupted_hands_the_job_over_and_the_next_run_adopts_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let child = spawn_slow_run(root, &[]);
    let job = wait_for_job_in_lease(root);
    let sent = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "exits well within Cloud Run's 10 s"
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "interrupted", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("SIGTERM"));
    let handed = lock(root).unwrap();
    assert_eq!(handed["state"], "released", "the lock is free");
    assert_eq!(handed["tuning_job"], job.as_str(), "the job is handed over");
    let record: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&v["metadata_uri"])).unwrap()).unwrap();
    assert_eq!(record["status"], "interrupted");
    assert_eq!(
        record["model_details"]["tuning_job"],
        job.as_str(),
        "the record names the job"
    );
    // The next run adopts the job and finalises the same record; it starts no new run.
    let (next, _) = run_in(root, &["run"], &[("DRY_RUN_DURATION", "1ms")]);
    assert_eq!(next["status"], "dry_run", "{next}");
    assert_eq!(
        next["run_id"], v["run_id"],
        "the interrupted run is finalised"
    );
    assert_eq!(next["metadata_uri"], v["metadata_uri"]);
    assert!(
        next["reason"].as_str().unwrap().contains("adopted"),
        "{next}"
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&v["metadata_uri"])).unwrap()).unwrap();
    assert_eq!(record["status"], "dry_run");
    assert!(record["error"].is_null());
    assert!(
        lock(root).unwrap()["tuning_job"].is_null(),
        "a finished job leaves the lease"
    );
    let datasets = files_under(root)
        .into_iter()
        .filter(|f| f.ends_with("sft_train.jsonl"))
        .count();
    assert_eq!(datasets, 1, "adoption converts nothing again");
    let (after, _) = run_in(root, &["run"], &[]);
    assert_eq!(
        after["status"], "waiting",
        "the adopted run is the baseline: {after}"
    );
}

#[test]
fn a_run_killed_after_submitting_is_adopted_after_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let mut victim = spawn_slow_run(root, &[("LEASE_DURATION", "2s")]);
    let job = wait_for_job_in_lease(root);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = lock(root).unwrap()["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    while chrono::Utc::now() <= expires + chrono::Duration::milliseconds(100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (v, _) = run_in(root, &["run"], &[("DRY_RUN_DURATION", "1ms")]);
    assert_eq!(v["status"], "dry_run", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains(&job),
        "adopts {job}: {v}"
    );
}

#[test]
fn detach_submits_and_a_later_run_finalises() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let (v, out) = run_in(root, &["run", "--detach"], &[]);
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(out.status.code(), Some(0));
    let record: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&v["metadata_uri"])).unwrap()).unwrap();
    assert_eq!(record["status"], "running");
    assert!(record["training_end_time"].is_null());
    let (v2, _) = run_in(root, &["run"], &[]);
    assert_eq!(v2["status"], "dry_run", "{v2}");
    assert_eq!(v2["run_id"], v["run_id"]);
    let record: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&v["metadata_uri"])).unwrap()).unwrap();
    assert_eq!(record["status"], "dry_run");
    assert!(!record["training_end_time"].is_null());
}

#[test]
fn unlock_refuses_a_live_lease_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let mut child = spawn_slow_run(root, &[]);
    wait_for_held_lock(root);
    let (v, out) = run_in(root, &["unlock"], &[]);
    assert_eq!(v["status"], "refused", "{v}");
    assert_eq!(out.status.code(), Some(1));
    let (v, out) = run_in(root, &["unlock", "--force"], &[]);
    assert_eq!(v["status"], "unlocked", "{v}");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lock(root).unwrap()["state"], "released");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn budget_quality_and_adapter_gates_stop_before_tuning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    std::fs::create_dir(&root).unwrap();
    text_samples(&root, 0, 20);

    // The budget gate says by how much the run would exceed it, and nothing is tuned.
    let (v, out) = run_in(
        &root,
        &["run"],
        &[
            ("MAX_TRAINING_TOKENS", "10"),
            ("EPOCHS", "3"),
            ("PRICE_PER_MILLION_TRAINING_TOKENS", "2.5"),
        ],
    );
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(out.status.code(), Some(1));
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("exceed MAX_TRAINING_TOKENS 10 by"),
        "{reason}"
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(uri_path(&v["metadata_uri"])).unwrap()).unwrap();
    let estimate = &record["estimate"];
    let per_epoch = estimate["train"]["tokens"].as_u64().unwrap();
    assert!(per_epoch > 0);
    assert_eq!(
        estimate["training_tokens"].as_u64().unwrap(),
        per_epoch * 3,
        "times EPOCHS"
    );
    let cost = estimate["cost"].as_f64().unwrap();
    assert!(
        (cost - per_epoch as f64 * 3.0 * 2.5 / 1e6).abs() < 1e-9,
        "{estimate}"
    );
    assert!(
        record["model_details"]["tuning_job"].is_null(),
        "no job was submitted"
    );

    // A model whose limits the files break: the quality gate names the file and the rule.
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"models":[{"name":"tiny-model","max_example_tokens":1000,"max_validation_examples":100,
            "max_training_examples_text":3,"max_training_examples_multimodal":3,
            "max_training_file_bytes":1000000,"adapter_sizes":[1,4]}]}"#,
    )
    .unwrap();
    let limits = limits.to_str().unwrap();
    let (v, _) = run_in(
        &root,
        &["run"],
        &[
            ("MODEL_LIMITS_FILE", limits),
            ("SOURCE_MODEL", "tiny-model"),
        ],
    );
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("breaks Vertex AI's dataset rules"),
        "{v}"
    );

    // An adapter size the model does not take is refused before anything is read or written.
    let before = files_under(&root);
    let out = autotune()
        .args(["run", "--bucket-name"])
        .arg(&root)
        .env("MODEL_LIMITS_FILE", limits)
        .env("SOURCE_MODEL", "tiny-model")
        .env("ADAPTER_SIZE", "8")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADAPTER_SIZE"));
    assert_eq!(files_under(&root), before);

    // Within budget, the run goes on, and the record keeps the estimate.
    let (v, _) = run_in(&root, &["run"], &[("MAX_TRAINING_TOKENS", "1000000")]);
    assert_eq!(v["status"], "dry_run", "{v}");
}

/// Runs `autotune` and fails the test, instead of hanging it, when the process is not done
/// within `secs`.
fn run_within(secs: u64, root: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Value, Output) {
    let mut child = autotune()
        .args(args)
        .arg("--bucket-name")
        .arg(root)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{args:?} still running after {secs} s\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[test]
fn folder_settings_outside_the_bucket_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    text_samples(&root, 0, 12);
    for var in [
        "RAW_DATA_FOLDER",
        "LABEL_FOLDER",
        "JSONL_FOLDER",
        "MODEL_META_FOLDER",
    ] {
        for value in ["../../../../etc", "/etc", "data/../../x"] {
            for command in ["run", "plan"] {
                let out = autotune()
                    .arg(command)
                    .arg("--bucket-name")
                    .arg(&root)
                    .env(var, value)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
                assert!(stderr.contains(var), "names {var}: {stderr}");
                assert!(
                    !String::from_utf8_lossy(&out.stdout).contains("passwd"),
                    "nothing outside the bucket is listed"
                );
            }
        }
    }
}

#[test]
fn links_and_special_files_in_a_local_bucket_are_rejected_never_read() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let outside = dir.path().join("outside");
    text_samples(&root, 0, 12);
    write(&outside, "secret.txt", "TOP SECRET");
    write(&outside, "s.txt", "TOP SECRET question");
    write(&outside, "s.json", "{\"answer\":\"TOP SECRET answer\"}");
    let r = root.join("raw_training_data");
    symlink(outside.join("secret.txt"), r.join("evil.txt")).unwrap();
    write(&root, "raw_training_data/evil.json", "{\"answer\":\"x\"}");
    mkfifo(&r.join("pipe.txt"));
    write(&root, "raw_training_data/pipe.json", "{\"answer\":\"x\"}");
    symlink(&outside, r.join("linked")).unwrap();

    let env = [("MAX_REJECTED_RATIO", "0.5"), ("LABEL_FIELD", "/answer")];
    let (v, out) = run_within(60, &root, &["run"], &env);
    assert_eq!(
        v["status"],
        "dry_run",
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        v["counts"]["train"].as_u64().unwrap()
            + v["counts"]["validation"].as_u64().unwrap()
            + v["counts"]["eval"].as_u64().unwrap(),
        12,
        "{v}"
    );
    let rejects = read_jsonl(&uri_path(&v["rejected_uri"]));
    for object in [
        "raw_training_data/evil.txt",
        "raw_training_data/pipe.txt",
        "raw_training_data/linked",
    ] {
        let r = rejects
            .iter()
            .find(|r| r["objects"][0].as_str().unwrap().ends_with(object))
            .unwrap_or_else(|| panic!("{object} is rejected: {rejects:?}"));
        assert_eq!(r["category"], "not_a_regular_file", "{r}");
    }
    assert_eq!(v["counts"]["rejected"], 3, "{v}");
    for file in [
        "train_dataset_uri",
        "validation_dataset_uri",
        "rejected_uri",
    ] {
        let text = std::fs::read_to_string(uri_path(&v[file])).unwrap();
        assert!(!text.contains("TOP SECRET"), "{file} holds outside data");
    }

    // A symlinked raw folder is not listed: the run fails naming it.
    let linked_root = dir.path().join("linked_bucket");
    std::fs::create_dir_all(&linked_root).unwrap();
    text_samples(&outside, 0, 12);
    symlink(
        outside.join("raw_training_data"),
        linked_root.join("raw_training_data"),
    )
    .unwrap();
    let (v, out) = run_within(60, &linked_root, &["run"], &[]);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(out.status.code(), Some(1));
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("raw_training_data") && reason.contains("symbolic link"),
        "{v}"
    );
}

#[test]
fn a_fifo_as_the_lock_ends_the_run_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 12);
    mkfifo(&root.join("trained_model/training.lock.json"));
    for command in [&["run"][..], &["plan", "--output", "json"]] {
        let (v, out) = run_within(30, root, command, &[]);
        assert_eq!(v["status"], "failed", "{command:?}: {v}");
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        let reason = v["reason"].as_str().unwrap();
        assert!(
            reason.contains("trained_model/training.lock.json") && reason.contains("FIFO"),
            "{command:?}: {v}"
        );
    }
    // `unlock` says what is wrong; `unlock --force` removes it, and the next run goes on.
    let (v, out) = run_within(30, root, &["unlock"], &[]);
    assert_eq!(v["status"], "unreadable", "{v}");
    assert_eq!(out.status.code(), Some(1));
    let (v, out) = run_within(30, root, &["unlock", "--force"], &[]);
    assert_eq!(v["status"], "unlocked", "{v}");
    assert_eq!(out.status.code(), Some(0));
    let (v, _) = run_within(30, root, &["run"], &[]);
    assert_eq!(v["status"], "dry_run", "{v}");
}

/// Hidden temporary upload files under `root`.
fn temporaries(root: &Path) -> Vec<String> {
    files_under(root)
        .into_iter()
        .filter(|f| f.contains(".autotune-tmp-"))
        .collect()
}

/// A tmpfs of `size` on a fresh folder, unmounted on drop; `None` where mounting is not
/// allowed (not root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_run_leaving_no_temporary_file_and_frees_the_lock() {
    let Some(fs) = Tmpfs::mount("512k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let root = fs.0.path();
    // 12 samples of 30 KB fit (about 430 KB); their 360 KB training file does not.
    for i in 0..12 {
        let text = format!("sample {i} ") + &"word ".repeat(6_000);
        write(root, &format!("raw_training_data/s{i:02}.txt"), text);
        write(root, &format!("raw_training_data/s{i:02}.json"), "\"a\"");
    }
    let (v, out) = run_within(60, root, &["run"], &[]);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "names the cause: {v}"
    );
    assert!(
        v["reason"].as_str().unwrap().contains("sft_train.jsonl"),
        "names the object: {v}"
    );
    assert_eq!(temporaries(root), Vec::<String>::new());
    assert_eq!(
        lock(root).unwrap()["state"],
        "released",
        "the lock is freed"
    );
}

#[test]
fn the_next_run_removes_a_killed_runs_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 12);
    let stale = [
        "training_datasets/20250101-000000-abcdef/.sft_train.jsonl.autotune-tmp-0123456789abcdef",
        "trained_model/.training.lock.json.autotune-tmp-0123456789abcdef",
    ];
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for rel in stale {
        write(root, rel, "half a file");
        std::fs::File::options()
            .write(true)
            .open(root.join(rel))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // A fresh one may belong to a live writer between creating and locking it: it stays.
    let fresh = "training_datasets/.x.autotune-tmp-fedcba9876543210";
    write(root, fresh, "new");
    // An ordinary hidden file of the user's stays whatever its age.
    write(root, "raw_training_data/.notes", "keep");
    let (v, _) = run_within(60, root, &["run"], &[]);
    assert_eq!(v["status"], "dry_run", "{v}");
    assert_eq!(temporaries(root), [fresh.to_owned()]);
    assert!(root.join("raw_training_data/.notes").exists());
}

#[test]
fn settings_that_would_lose_data_or_read_outside_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let bucket = root.to_str().unwrap();
    for (vars, named) in [
        (&[("VAL_FILE", "sft_train.jsonl")][..], "VAL_FILE"),
        (&[("TRAIN_FILE", "rejected.jsonl")][..], "rejected.jsonl"),
        (&[("JSONL_FOLDER", "raw_training_data")][..], "JSONL_FOLDER"),
        (
            &[("MODEL_META_FOLDER", "raw_training_data/")][..],
            "MODEL_META_FOLDER",
        ),
        (
            &[
                ("RAW_DATA_FOLDER", "data/raw"),
                ("LABEL_FOLDER", "data/labels"),
                ("MODEL_META_FOLDER", "data"),
            ][..],
            "MODEL_META_FOLDER",
        ),
        (
            &[("RAW_DATA_FOLDER", "../../../../etc")][..],
            "RAW_DATA_FOLDER",
        ),
        (&[("LABEL_FOLDER", "/etc")][..], "LABEL_FOLDER"),
        (&[("MIN_SAMPLES", "0")][..], "MIN_SAMPLES"),
        (&[("LEASE_DURATION", "100000y")][..], "LEASE_DURATION"),
        (&[("LEASE_DURATION", "1000000000y")][..], "LEASE_DURATION"),
        (
            &[("DRY_RUN_DURATION", "1000000000y")][..],
            "DRY_RUN_DURATION",
        ),
        (&[("READ_CONCURRENCY", "0")][..], "READ_CONCURRENCY"),
        (&[("READ_CONCURRENCY", "100000")][..], "READ_CONCURRENCY"),
        (&[("MAX_TEXT_BYTES", "0")][..], "MAX_TEXT_BYTES"),
        (&[("PROMPT", "@/dev/zero")][..], "PROMPT"),
        (
            &[("SYSTEM_INSTRUCTION", "@/dev/zero")][..],
            "SYSTEM_INSTRUCTION",
        ),
        (&[("CONVERT_CONFIG", "/dev/zero")][..], "CONVERT_CONFIG"),
        (&[("CONVERT_CONFIG", "/")][..], "CONVERT_CONFIG"),
        // The environment (secrets) must never become a prompt that lands in datasets.
        (
            &[("SYSTEM_INSTRUCTION", "@/proc/self/environ")][..],
            "SYSTEM_INSTRUCTION",
        ),
        (&[("PROMPT", "@/proc/self/environ")][..], "PROMPT"),
        (
            &[("CONVERT_CONFIG", "/proc/self/environ")][..],
            "CONVERT_CONFIG",
        ),
        (
            &[("MODEL_LIMITS_FILE", "/dev/zero")][..],
            "MODEL_LIMITS_FILE",
        ),
        (
            &[("MODEL_LIMITS_FILE", "/proc/self/environ")][..],
            "MODEL_LIMITS_FILE",
        ),
    ] {
        let started = Instant::now();
        let out = autotune()
            .arg("run")
            .env("BUCKET_NAME", bucket)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(stderr.contains(named), "{vars:?} names {named}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{vars:?} is refused at once, not after reading a device"
        );
    }
    assert_eq!(
        files_under(root).len(),
        40,
        "nothing was written by a refused run"
    );
}

/// Issue 20 item 5: `VAL_FILE=blessing.json` let the verdict overwrite the validation file and
/// `VAL_FILE=eval_responses` broke every evaluation: the evaluation's own files are refused as
/// dataset names, naming the setting.
#[test]
fn the_evaluation_files_cannot_be_dataset_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    for (var, value) in [
        ("VAL_FILE", "blessing.json"),
        ("VAL_FILE", "eval_responses"),
        ("TRAIN_FILE", "blessing.json"),
        ("TRAIN_FILE", "eval_responses/sft_train.jsonl"),
    ] {
        let out = autotune()
            .arg("run")
            .env("BUCKET_NAME", root)
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value} names {var}: {stderr}");
    }
    assert_eq!(
        files_under(root).len(),
        40,
        "nothing was written by a refused run"
    );
}

/// `autotune validate FILE | head -1`: a reader that stops reading is no failure to report.
/// Stdout is a pipe whose read end is closed before the binary starts, so its first write
/// meets EPIPE whatever the timing.
#[test]
fn a_closed_stdout_ends_quietly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "x.jsonl",
        "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"q\"}]},{\"role\":\"model\",\"parts\":[{\"text\":\"a\"}]}]}\n"
            .repeat(20),
    );
    let file = root.join("x.jsonl");
    let file = file.to_str().unwrap();
    for args in [
        vec!["validate", file],
        vec!["validate", file, "--output", "json"],
        vec!["unlock", "--bucket-name", root.to_str().unwrap()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = autotune()
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: the command's own verdict: {stderr}"
        );
    }
}

#[test]
fn unlock_reports_and_force_clears_a_damaged_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for garbage in ["not a lease".to_owned(), "x".repeat(200_000)] {
        write(root, "trained_model/training.lock.json", &garbage);
        let (v, out) = run_in(root, &["unlock"], &[]);
        assert_eq!(v["status"], "unreadable", "{v}");
        assert_eq!(out.status.code(), Some(1));
        assert!(
            v["reason"].as_str().unwrap().contains("--force"),
            "says how to clear it: {v}"
        );
        let (v, out) = run_in(root, &["unlock", "--force"], &[]);
        assert_eq!(v["status"], "unlocked", "{v}");
        assert_eq!(out.status.code(), Some(0));
        assert!(
            !root.join("trained_model/training.lock.json").exists(),
            "the damaged object is gone"
        );
    }
}

#[test]
fn logs_show_the_values_users_read_never_rust_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    write(root, "raw_training_data/s0003.json", "{not json");
    let (v, out) = run_in(
        root,
        &["run"],
        &[("LOG_FORMAT", "json"), ("MAX_REJECTED_RATIO", "0.5")],
    );
    assert_eq!(v["status"], "dry_run", "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for debug in ["Some(", "None", "DryRun", "MalformedLabel", "[\\\""] {
        assert!(!stderr.contains(debug), "{debug} in the logs:\n{stderr}");
    }
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let rejected = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("sample rejected")
        })
        .expect("the reject is logged");
    assert_eq!(rejected["category"], "malformed_label", "{rejected}");
    let finished = lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .expect("the end is logged");
    assert_eq!(finished["status"], "dry_run", "{finished}");
    assert!(
        finished["metadata"]
            .as_str()
            .unwrap()
            .starts_with("file://"),
        "{finished}"
    );
}

#[test]
fn a_retired_model_is_refused_before_any_work_and_one_retiring_soon_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    write(
        root,
        "x.jsonl",
        "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"q\"}]},{\"role\":\"model\",\"parts\":[{\"text\":\"a\"}]}]}\n",
    );
    let file = root.join("x.jsonl");
    for args in [
        vec!["run".to_owned()],
        vec!["plan".to_owned()],
        vec!["validate".to_owned(), file.to_str().unwrap().to_owned()],
    ] {
        let out = autotune()
            .args(&args)
            .env("BUCKET_NAME", root)
            // Retired 2026-10-20; Google's model-versions page names gemini-3.5-flash.
            .env("SOURCE_MODEL", "gemini-2.5-pro")
            .env("AUTOTUNE_TODAY", "2026-11-29")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("SOURCE_MODEL") && stderr.contains("gemini-3.5-flash"),
            "{args:?} names the setting and the successor: {stderr}"
        );
    }
    assert!(!root.join("trained_model").exists(), "nothing was written");

    // The default model, a month before its retirement: the run goes on, with a warning.
    let (v, out) = run_in(root, &["run"], &[("AUTOTUNE_TODAY", "2027-05-01")]);
    assert_eq!(v["status"], "dry_run", "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gemini-3.5-flash retires on 2027-05-19"),
        "{stderr}"
    );
}

#[test]
fn the_vertex_tuner_on_a_local_folder_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    for tuner in [
        &[("TUNER", "vertex"), ("PROJECT_ID", "p")][..],
        &[("PROJECT_ID", "p")][..],
    ] {
        let out = autotune()
            .arg("run")
            .env("BUCKET_NAME", root)
            .envs(tuner.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{tuner:?}: {stderr}");
        assert!(
            stderr.contains("TUNER") && stderr.contains("BUCKET_NAME"),
            "names both settings: {stderr}"
        );
    }
    assert!(
        !root.join("training_datasets").exists(),
        "no dataset was written"
    );
}

#[test]
fn a_new_split_ratio_is_refused_unless_resplit_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    text_samples(root, 0, 20);
    let (v, _) = run_in(root, &["run"], &[]);
    assert_eq!(v["status"], "dry_run", "{v}");
    text_samples(root, 20, 10);
    let out = autotune()
        .arg("run")
        .env("BUCKET_NAME", root)
        .env("SPLIT_RATIO", "0.5")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SPLIT_RATIO") && stderr.contains("--resplit"),
        "{stderr}"
    );
    let (v, _) = run_in(root, &["run", "--resplit"], &[("SPLIT_RATIO", "0.5")]);
    assert_eq!(v["status"], "dry_run", "{v}");
    let record = std::fs::read(uri_path(&v["metadata_uri"])).unwrap();
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["resplit"], true, "recorded");
}

/// `autotune` with `args` (no bucket flag added); stdout as JSON.
fn json_of(args: &[&str], envs: &[(&str, &str)]) -> (Value, Output) {
    let out = autotune()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

#[test]
fn rehearsal_on_the_example_bucket_evaluates_blesses_promotes_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(examples.join("bucket"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    // The screenshots' content digests are their file versions, new in every copy: the
    // tickets alone make the same evaluation set, hence the same verdict, on every run.
    for out in [
        "trained_model",
        "training_datasets",
        "raw_training_data/screens",
    ] {
        let _ = std::fs::remove_dir_all(root.join(out));
    }
    let prompt = format!("@{}", examples.join("prompt.txt").display());
    let bucket = root.to_str().unwrap();
    let env = [
        ("BUCKET_NAME", bucket),
        ("QUIET_PERIOD", "0s"),
        ("PROMPT", prompt.as_str()),
        ("EVAL_RATIO", "0.5"),
        ("EVAL_MIN_ROWS", "10"),
    ];
    let (v, out) = json_of(&["run"], &env);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["status"], "dry_run", "{v}");
    let e = &v["evaluation"];
    assert_eq!(e["verdict"], "BLESSED", "{v}");
    assert!(
        e["candidate"]["model"]
            .as_str()
            .unwrap()
            .starts_with("rehearsal/"),
        "a rehearsal stand-in, labelled as such: {e}"
    );
    assert!(e["rows"].as_u64().unwrap() >= 10, "{e}");
    assert_eq!(v["promotion"]["promoted"], true, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("BLESSED, promoted"),
        "{v}"
    );
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert!(root.join("trained_model/champion.json").is_file());
    assert!(
        root.join(format!("training_datasets/{run_id}/blessing.json"))
            .is_file()
    );

    let (champion, _) = json_of(&["champion"], &env);
    assert_eq!(
        champion["champion"]["run_id"],
        run_id.as_str(),
        "{champion}"
    );
    let (history, out) = json_of(&["history", "--output", "json"], &env);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(history[0]["run_id"], run_id.as_str());
    assert_eq!(history[0]["blessed"], true);
    assert_eq!(history[0]["promoted"], true);
    let text = autotune().args(["history"]).envs(env).output().unwrap();
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(
        table.contains(&run_id) && table.contains("promoted"),
        "{table}"
    );

    let (rolled, out) = json_of(&["rollback"], &env);
    assert_eq!(out.status.code(), Some(0), "{rolled}");
    assert_eq!(rolled["status"], "rolled_back");
    assert!(
        rolled["champion"]["run_id"].is_null(),
        "back to the base model: {rolled}"
    );
    let (champion, _) = json_of(&["champion"], &env);
    assert!(champion["champion"]["run_id"].is_null(), "{champion}");
    let (refused, out) = json_of(&["rollback"], &env);
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing before the base model: {refused}"
    );
    assert_eq!(refused["status"], "refused");
}

#[test]
fn models_prints_where_each_model_is_tuned_and_served() {
    let out = autotune().arg("models").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for s in [
        "gemini-3.5-flash",
        "gemini-3.8-flash (assumed)",
        "us-central1, europe-west4",
        "multi-region",
        "2027-05-19",
        "supervised-tuning",
        "where it lives:",
    ] {
        assert!(text.contains(s), "{s} missing:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("models.json");
    std::fs::write(
        &file,
        r#"{"models":[{"name":"my-model","max_example_tokens":64,"max_validation_examples":2,
            "max_training_examples_text":3,"max_training_examples_multimodal":2,
            "max_training_file_bytes":100,"adapter_sizes":[4],"tuning_regions":["asia-northeast1"],
            "base_serving":["global"],"tuned_serving":["regional"],"successor":"gemini-3.5-flash"}]}"#,
    )
    .unwrap();
    let out = autotune()
        .args(["models", "--output", "json"])
        .env("MODEL_LIMITS_FILE", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {v}"))
    };
    let m = find("gemini-3.5-flash");
    assert_eq!(m["tuning_regions"], json!(["us-central1", "europe-west4"]));
    assert_eq!(m["tuned_serving"], json!(["multi-region"]));
    assert_eq!(m["base_serving"], json!(["multi-region", "global"]));
    assert_eq!(m["retires"], "2027-05-19");
    let mine = find("my-model");
    assert_eq!(mine["tuning_regions"], json!(["asia-northeast1"]));
    assert_eq!(mine["successor"], "gemini-3.5-flash");
}

/// Issue 23, rehearsal: the dry-run tuner's stand-in candidate has one stand-in checkpoint per
/// epoch (three with EPOCHS unset) with a planted curve, the second the best; each is judged
/// against the base model, the second wins and becomes the champion with its checkpoint.
/// `plan` counts the checkpoints and the calls they imply; with EVAL_CHECKPOINTS at `last` it
/// judges the last only.
#[test]
fn rehearsal_judges_every_stand_in_checkpoint_and_the_planted_best_wins() {
    let dir = tempfile::tempdir().unwrap();
    text_samples(dir.path(), 0, 200);
    let bucket = dir.path().to_str().unwrap();
    let env = [
        ("BUCKET_NAME", bucket),
        ("QUIET_PERIOD", "0s"),
        ("EVAL_RATIO", "0.5"),
        ("EVAL_MIN_ROWS", "20"),
    ];
    let (plan, out) = json_of(&["plan", "--output", "json"], &env);
    assert_eq!(out.status.code(), Some(0), "{plan}");
    let cost = &plan["plan"]["evaluation"];
    assert_eq!(cost["checkpoints"], 3, "{cost}");
    let rows = cost["rows"].as_u64().unwrap();
    assert!(rows >= 20, "{cost}");
    assert_eq!(
        cost["calls"].as_u64(),
        Some(4 * rows),
        "three checkpoints and the champion: {cost}"
    );
    let last = [&env[..], &[("EVAL_CHECKPOINTS", "last")]].concat();
    let (plan_last, _) = json_of(&["plan", "--output", "json"], &last);
    assert_eq!(plan_last["plan"]["evaluation"]["checkpoints"], 1);
    assert_eq!(
        plan_last["plan"]["evaluation"]["calls"].as_u64(),
        Some(2 * rows)
    );

    let (v, out) = json_of(&["run"], &env);
    assert_eq!(out.status.code(), Some(0), "{v}");
    let e = &v["evaluation"];
    assert_eq!(e["verdict"], "BLESSED", "{e}");
    let c = &e["checkpoints"];
    assert_eq!(c["winner"], "2", "the planted best: {c}");
    assert_eq!(c["judged"].as_array().map(Vec::len), Some(3), "{c}");
    assert!(
        e["candidate"]["model"]
            .as_str()
            .unwrap()
            .contains("/checkpoint-2/"),
        "{e}"
    );
    assert_eq!(v["promotion"]["promoted"], true, "{v}");
    let pointer: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("trained_model/champion.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pointer["checkpoint"], "2", "{pointer}");
    let request = &v["model_details"]["request"]["body"]["supervisedTuningSpec"];
    assert_eq!(request["exportLastCheckpointOnly"], false, "{request}");
}
