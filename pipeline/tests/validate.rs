//! `autotune validate` end to end: a corpus of small JSONL files under `validate_corpus/`, each
//! breaking exactly one rule (the table below says which, and on which line), and valid files
//! covering text, every modality and multi-turn. The binary is run as a user runs it.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autotune::validate::{self, Category, Config, Dataset, ModelTable};
use bytes::Bytes;
use serde_json::Value;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/validate_corpus")
        .join(name)
}

/// The binary, without settings leaking in from the environment.
fn autotune() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autotune"));
    for k in [
        "SOURCE_MODEL",
        "MODEL_LIMITS_FILE",
        "EPOCHS",
        "PRICE_PER_MILLION_TRAINING_TOKENS",
        "MAX_FINDINGS",
        "STORAGE_EMULATOR_HOST",
    ] {
        c.env_remove(k);
    }
    c.env("LOG_FORMAT", "json");
    c
}

fn validate(path: &str, args: &[&str]) -> (Value, Output) {
    let out = autotune()
        .args(["validate", path, "--output", "json"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{path}: stdout is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

fn tiny() -> String {
    corpus("limits.json").to_string_lossy().into_owned()
}

/// file, extra arguments, expected category, expected line (`None`: about the whole file).
const BROKEN: &[(&str, &[&str], &str, Option<u64>)] = &[
    ("not_utf8.jsonl", &[], "not_utf8", Some(2)),
    ("invalid_json.jsonl", &[], "invalid_json", Some(3)),
    ("missing_contents.jsonl", &[], "missing_contents", Some(2)),
    ("wrong_type.jsonl", &[], "wrong_type", Some(2)),
    ("invalid_role.jsonl", &[], "invalid_role", Some(2)),
    (
        "first_role_not_user.jsonl",
        &[],
        "first_role_not_user",
        Some(3),
    ),
    (
        "roles_not_alternating.jsonl",
        &[],
        "roles_not_alternating",
        Some(2),
    ),
    (
        "last_role_not_model.jsonl",
        &[],
        "last_role_not_model",
        Some(2),
    ),
    ("empty_parts.jsonl", &[], "empty_parts", Some(2)),
    ("part_without_data.jsonl", &[], "part_without_data", Some(2)),
    (
        "part_with_multiple_data.jsonl",
        &[],
        "part_with_multiple_data",
        Some(2),
    ),
    (
        "invalid_system_instruction.jsonl",
        &[],
        "invalid_system_instruction",
        Some(2),
    ),
    (
        "system_instruction_media.jsonl",
        &[],
        "invalid_system_instruction",
        Some(2),
    ),
    ("missing_field.jsonl", &[], "missing_field", Some(2)),
    ("invalid_file_uri.jsonl", &[], "invalid_file_uri", Some(3)),
    (
        "unsupported_mime_type.jsonl",
        &[],
        "unsupported_mime_type",
        Some(2),
    ),
    ("invalid_inline_data.jsonl", &[], "missing_field", Some(2)),
    ("too_many_images.jsonl", &[], "too_many_media", Some(2)),
    ("too_many_pdfs.jsonl", &[], "too_many_media", Some(2)),
    ("too_many_audio.jsonl", &[], "too_many_media", Some(2)),
    ("too_many_video.jsonl", &[], "too_many_media", Some(2)),
    ("no_examples.jsonl", &[], "no_examples", None),
    // Warnings: the file stays valid.
    ("snake_case.jsonl", &[], "snake_case", Some(2)),
    ("snake_case_file_data.jsonl", &[], "snake_case", Some(2)),
    ("unknown_field.jsonl", &[], "unknown_field", Some(2)),
    (
        "mime_type_mismatch.jsonl",
        &[],
        "mime_type_mismatch",
        Some(2),
    ),
    ("missing_role.jsonl", &[], "missing_role", Some(2)),
    ("empty_text.jsonl", &[], "empty_text", Some(2)),
    ("empty_line.jsonl", &[], "empty_line", Some(2)),
    (
        "valid_text.jsonl",
        &["--model", "gemini-9-ultra"],
        "unknown_model",
        None,
    ),
    // File-level and per-model limits, with the small limits of `corpus-tiny` (limits.json).
    (
        "tiny_too_many_tokens.jsonl",
        &["--model", "corpus-tiny"],
        "too_many_tokens",
        Some(2),
    ),
    (
        "tiny_too_many_examples.jsonl",
        &["--model", "corpus-tiny"],
        "too_many_examples",
        None,
    ),
    (
        "tiny_too_many_multimodal_examples.jsonl",
        &["--model", "corpus-tiny"],
        "too_many_examples",
        None,
    ),
    (
        "tiny_too_many_validation_examples.jsonl",
        &["--model", "corpus-tiny", "--validation"],
        "too_many_validation_examples",
        None,
    ),
    (
        "tiny_file_too_large.jsonl",
        &["--model", "corpus-tiny"],
        "file_too_large",
        None,
    ),
];

#[test]
fn each_broken_file_yields_exactly_its_finding() {
    for (file, args, category, line) in BROKEN {
        let mut all = Vec::new();
        if args.contains(&"corpus-tiny") {
            all.extend(["--model-limits-file".to_owned(), tiny()]);
        }
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (v, out) = validate(&corpus(file).to_string_lossy(), &all);
        let findings = v["findings"].as_array().unwrap();
        assert_eq!(
            findings.len(),
            1,
            "{file}: expected one finding, got {findings:#?}"
        );
        let f = &findings[0];
        assert_eq!(f["category"], *category, "{file}: {f}");
        assert_eq!(f["line"].as_u64(), *line, "{file}: {f}");
        assert!(!f["message"].as_str().unwrap().is_empty(), "{file}");
        let is_error = f["severity"] == "error";
        assert_eq!(v["valid"], !is_error, "{file}");
        assert_eq!(
            out.status.code(),
            Some(i32::from(is_error)),
            "{file}: exit code"
        );
        assert_eq!(v["by_category"][0]["category"], *category, "{file}");
        assert_eq!(v["by_category"][0]["count"], 1, "{file}");
    }
}

#[test]
fn findings_name_the_json_path() {
    let cases = [
        ("invalid_role.jsonl", "contents[1].role"),
        (
            "unsupported_mime_type.jsonl",
            "contents[0].parts[0].fileData.mimeType",
        ),
        (
            "invalid_file_uri.jsonl",
            "contents[0].parts[0].fileData.fileUri",
        ),
        (
            "missing_field.jsonl",
            "contents[0].parts[0].fileData.fileUri",
        ),
        (
            "snake_case_file_data.jsonl",
            "contents[0].parts[0].file_data",
        ),
        ("part_without_data.jsonl", "contents[0].parts[1]"),
        ("invalid_json.jsonl", ""),
    ];
    for (file, path) in cases {
        let (v, _) = validate(&corpus(file).to_string_lossy(), &[]);
        assert_eq!(v["findings"][0]["path"], path, "{file}");
    }
}

#[test]
fn valid_files_cover_every_modality_and_multi_turn() {
    // file, examples, multimodal examples, tokens
    let cases: &[(&str, u64, u64, u64)] = &[
        ("valid_text.jsonl", 4, 0, 0),
        ("valid_image.jsonl", 2, 2, 3 * 258),
        ("valid_pdf.jsonl", 2, 2, 2 * 5 * 258),
        ("valid_audio.jsonl", 2, 2, 2 * 60 * 32),
        ("valid_video.jsonl", 2, 2, 60 * 263 + 10 * 263),
        ("valid_multiturn.jsonl", 3, 0, 0),
    ];
    for &(file, examples, multimodal, media_tokens) in cases {
        let (v, out) = validate(&corpus(file).to_string_lossy(), &[]);
        assert_eq!(out.status.code(), Some(0), "{file}: {v:#}");
        assert_eq!(v["valid"], true, "{file}");
        assert_eq!(v["findings"], Value::Array(vec![]), "{file}");
        assert_eq!(v["errors"], 0, "{file}");
        assert_eq!(v["warnings"], 0, "{file}");
        assert_eq!(v["examples"], examples, "{file}");
        assert_eq!(v["multimodal_examples"], multimodal, "{file}");
        let tokens = v["estimate"]["train"]["tokens"].as_u64().unwrap();
        assert!(
            tokens > media_tokens,
            "{file}: {tokens} tokens, media alone {media_tokens}"
        );
        assert!(
            tokens < media_tokens + 100,
            "{file}: {tokens} tokens, media {media_tokens}"
        );
    }
}

#[test]
fn the_estimate_multiplies_by_epochs_and_price() {
    let path = corpus("valid_image.jsonl");
    let (v, _) = validate(&path.to_string_lossy(), &["--epochs", "3"]);
    let e = &v["estimate"];
    let train = e["train"]["tokens"].as_u64().unwrap();
    assert_eq!(e["training_tokens"].as_u64().unwrap(), 3 * train);
    assert_eq!(e["cost"], Value::Null, "no price, no cost");
    let out = autotune()
        .args(["validate", &path.to_string_lossy(), "--output", "json"])
        .env("EPOCHS", "2")
        .env("PRICE_PER_MILLION_TRAINING_TOKENS", "1000000")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["estimate"]["epochs"], 2,
        "EPOCHS is read from the environment"
    );
    let cost = v["estimate"]["cost"].as_f64().unwrap();
    assert!((cost - (2 * train) as f64).abs() < 1e-6, "{cost}");
    assert!(
        v["estimate"]["train"]["histogram"]
            .as_array()
            .is_some_and(|h| !h.is_empty())
    );

    let (v, _) = validate(&path.to_string_lossy(), &["--validation"]);
    assert_eq!(v["dataset"], "validation");
    assert_eq!(v["estimate"]["validation"]["examples"], 2);
    assert_eq!(
        v["estimate"]["training_tokens"], 0,
        "validation tokens are not billed"
    );
}

#[test]
fn text_output_is_tables() {
    let out = autotune()
        .args(["validate", &corpus("invalid_role.jsonl").to_string_lossy()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "category",
        "invalid_role",
        "contents[1].role",
        "Token estimate",
        "Tokens per example",
        "INVALID: 1 error.",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    let out = autotune()
        .args([
            "validate",
            &corpus("valid_multiturn.jsonl").to_string_lossy(),
            "--output",
            "text",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("VALID: no errors."));
}

#[test]
fn unusable_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let cases = [
        (missing.to_string_lossy().into_owned(), "no such file"),
        (dir.path().to_string_lossy().into_owned(), "is a folder"),
        ("gs://bucket-only".to_owned(), "names no object"),
        ("s3://b/x.jsonl".to_owned(), "unknown scheme"),
    ];
    for (path, reason) in cases {
        let out = autotune().args(["validate", &path]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert!(
            stderr.contains(&path) && stderr.contains(reason),
            "{path}: {stderr}"
        );
    }
    let out = autotune()
        .args(["validate", &corpus("valid_text.jsonl").to_string_lossy()])
        .args(["--model-limits-file", &missing.to_string_lossy()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("MODEL_LIMITS_FILE") && stderr.contains("nope.jsonl"),
        "{stderr}"
    );
}

#[test]
fn relative_paths_and_file_urls_work() {
    let out = autotune()
        .current_dir(corpus(""))
        .args(["validate", "valid_text.jsonl", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("file://{}", corpus("invalid_role.jsonl").display());
    let (v, out) = validate(&url, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(v["findings"][0]["line"], 2);
}

/// The library entry point on a store URL (what the run calls on the files it writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_store_url_streams() {
    let store = autotune::storage::open("memory://validate-corpus-test").unwrap();
    let mut data = Vec::new();
    for i in 0..20_000 {
        if i == 12_345 {
            data.extend_from_slice(br#"{"contents":[{"role":"user","parts":[{"text":"q"}]},{"role":"user","parts":[{"text":"q"}]}]}"#);
        } else {
            data.extend_from_slice(
                format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"question {i}"}}]}},{{"role":"model","parts":[{{"text":"a"}}]}}]}}"#)
                    .as_bytes(),
            );
        }
        data.push(b'\n');
    }
    store
        .put(
            "runs/train.jsonl",
            Bytes::from(data),
            autotune::storage::PutMode::Overwrite,
        )
        .await
        .unwrap();
    let (store, key) =
        validate::open_path("memory://validate-corpus-test/runs/train.jsonl").unwrap();
    assert_eq!(key, "runs/train.jsonl");
    let config = Config {
        dataset: Dataset::Training,
        model: ModelTable::built_in().resolve("gemini-2.5-flash"),
        check_files: false,
        max_findings: 10,
        epochs: Some(2),
        price_per_million_training_tokens: None,
    };
    let r = validate::validate_object(&*store, &key, &config)
        .await
        .unwrap();
    assert_eq!((r.lines, r.examples, r.errors), (20_000, 20_000, 2));
    let got: Vec<_> = r.findings.iter().map(|f| (f.category, f.line)).collect();
    assert_eq!(
        got,
        vec![
            (Category::RolesNotAlternating, Some(12_346)),
            (Category::LastRoleNotModel, Some(12_346))
        ]
    );
    assert_eq!(r.estimate.training_tokens, 2 * r.estimate.train.tokens);
    assert!(
        r.estimate
            .exceeds(1)
            .is_some_and(|m| m.contains("MAX_TRAINING_TOKENS 1"))
    );
}

/// A JSONL in a (fake) GCS bucket, read as `gs://bucket/object`; `--check-files` looks up the
/// objects its fileData parts name.
#[test]
fn gs_urls_and_check_files() {
    let gcs = support::FakeGcs::start();
    let bucket = gcs.bucket();
    let upload = |name: &str, body: &str| {
        let (status, resp) = support::http(
            "POST",
            &gcs.host,
            &format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"),
            body,
        );
        assert_eq!(status, 200, "upload {name}: {resp}");
    };
    upload("raw/a.png", "not really a png");
    let line = |uri: &str| {
        format!(
            r#"{{"contents":[{{"role":"user","parts":[{{"fileData":{{"mimeType":"image/png","fileUri":"{uri}"}}}}]}},{{"role":"model","parts":[{{"text":"a cat"}}]}}]}}"#
        )
    };
    let present = format!("gs://{bucket}/raw/a.png");
    let missing = format!("gs://{bucket}/raw/missing.png");
    upload(
        "runs/train.jsonl",
        &[
            line(&present),
            line(&present),
            line(&missing),
            line(&missing),
        ]
        .join("\n"),
    );
    let url = format!("gs://{bucket}/runs/train.jsonl");
    let run = |extra: &[&str]| {
        let out = autotune()
            .env("STORAGE_EMULATOR_HOST", &gcs.host)
            .args(["validate", &url, "--output", "json"])
            .args(extra)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (v, out.status.code())
    };
    let (v, code) = run(&[]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["examples"], 4);
    assert_eq!(v["file"], url.as_str());

    let (v, code) = run(&["--check-files"]);
    assert_eq!(code, Some(1), "{v:#}");
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(
        findings.len(),
        1,
        "each object is looked up once: {findings:#?}"
    );
    assert_eq!(findings[0]["category"], "media_not_found");
    assert_eq!(findings[0]["line"], 3);
    assert_eq!(findings[0]["path"], "contents[0].parts[0].fileData.fileUri");

    let out = autotune()
        .env("STORAGE_EMULATOR_HOST", &gcs.host)
        .args(["validate", &format!("gs://{bucket}/runs/nope.jsonl")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nope.jsonl") && stderr.contains("no such object"),
        "{stderr}"
    );
}

/// `autotune validate` names the kinds of personal data a file holds and in how many lines,
/// never a value; it is not an error (the file is valid Vertex data).
#[test]
fn personal_data_is_reported_by_kind_and_count_never_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pii.jsonl");
    let line = |user: &str, model: &str| {
        serde_json::json!({"contents": [
            {"role": "user", "parts": [{"text": user}]},
            {"role": "model", "parts": [{"text": model}]},
        ]})
        .to_string()
    };
    let lines = [
        line(
            "Write to frank@example.com",
            "Done, card 4111 1111 1111 1111",
        ),
        line("My mail: gina@example.org", "Noted."),
        line("The meeting is on 2024-01-15 at 10:30.", "Fine."),
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (v, out) = validate(&path.to_string_lossy(), &[]);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        v["personal_data"],
        serde_json::json!({"EMAIL_ADDRESS": 2, "CREDIT_CARD_NUMBER": 1})
    );
    let text = autotune()
        .args(["validate", &path.to_string_lossy(), "--output", "text"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(
            "personal data (values not shown): EMAIL_ADDRESS in 2 lines, CREDIT_CARD_NUMBER in 1 line"
        ),
        "{text}"
    );
    let all = format!("{v}{text}");
    for value in ["frank@", "gina@", "4111"] {
        assert!(!all.contains(value), "{value} shown: {all}");
    }
}
