//! End-to-end tests of conversion templates: `autotune run` with CONVERT_CONFIG on a local
//! folder, checking the JSONL lines (against the project's validator), `rejected.jsonl` and the
//! exit code of a bad configuration.

use crate::support;

use std::path::Path;

use autotune::validate::{ModelTable, rules};
use serde_json::Value;
use support::autotune;

fn write(root: &Path, rel: &str, data: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn read_lines(uri: &Value) -> Vec<String> {
    let Some(uri) = uri.as_str() else {
        return Vec::new();
    };
    let path = uri.strip_prefix("file://").unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs `autotune run` on `root` with CONVERT_CONFIG set to a file holding `toml`.
fn run(root: &Path, toml: &str, envs: &[(&str, &str)]) -> (Value, std::process::Output) {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("convert.toml");
    std::fs::write(&config, toml).unwrap();
    let out = autotune()
        .arg("run")
        .env("BUCKET_NAME", root)
        .env("CONVERT_CONFIG", &config)
        .env("SPLIT_RATIO", "1")
        .env("EVAL_RATIO", "0")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

/// Every line passes the validator with no finding at all; returns them parsed.
fn validated(lines: &[String]) -> Vec<Value> {
    let limits = ModelTable::built_in().resolve("gemini-2.5-flash").limits;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut findings = rules::Findings::new(10);
            let example =
                rules::check_line(line.as_bytes(), i as u64 + 1, &limits, &mut findings, None);
            assert!(example.is_some(), "{line}");
            assert_eq!(findings.total(), 0, "{line}: {:?}", findings.kept);
            serde_json::from_str(line).unwrap()
        })
        .collect()
}

#[test]
fn templates_fill_examples_and_a_missing_field_rejects_only_its_sample() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = "raw_training_data";
    for i in 0..12 {
        write(
            root,
            &format!("{r}/s{i:02}.txt"),
            format!("ticket body {i}"),
        );
        write(
            root,
            &format!("{r}/s{i:02}.json"),
            format!(
                r#"{{"question":"What is wrong in ticket {i}?","meta":{{"lang":"en"}},"tags":["t{i}","x"],"answer":{{"code":{i}}}}}"#
            ),
        );
    }
    // One label lacks the field the prompt reads.
    write(root, &format!("{r}/nofield.txt"), "ticket body");
    write(
        root,
        &format!("{r}/nofield.json"),
        r#"{"meta":{"lang":"en"},"tags":["a","b"],"answer":{"code":0}}"#,
    );
    let toml = r#"
system_instruction = "Answer in {label.meta.lang}. Braces: {{ok}}."
prompt = """
Sample {sample.key} ({sample.mime_type}, {sample.modality}, .{sample.extension}):
{label.question} First tag: {label.tags.0}"""
answer = "{label.answer}"
"#;
    let (v, out) = run(
        root,
        toml,
        &[
            ("PROMPT", "ignored: CONVERT_CONFIG wins"),
            ("MAX_REJECTED_RATIO", "0.2"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(v["status"], "dry_run", "{v}\n{stderr}");
    assert_eq!(v["counts"]["rejected"], 1, "{v}");

    let rejects = read_lines(&v["rejected_uri"]);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let reject: Value = serde_json::from_str(&rejects[0]).unwrap();
    assert_eq!(reject["key"], "nofield");
    assert_eq!(reject["category"], "missing_field");
    let reason = reject["reason"].as_str().unwrap();
    assert!(reason.contains("{label.question}"), "{reason}");
    assert!(reason.contains("nofield.json"), "{reason}");
    assert!(
        reject["objects"][0]
            .as_str()
            .unwrap()
            .ends_with("nofield.json"),
        "{reject}"
    );

    let lines = read_lines(&v["train_dataset_uri"]);
    assert_eq!(lines.len(), 12, "every other sample converts");
    for (i, ex) in validated(&lines).iter().enumerate() {
        assert_eq!(
            ex["systemInstruction"]["parts"][0]["text"],
            "Answer in en. Braces: {ok}."
        );
        let user = &ex["contents"][0]["parts"];
        assert_eq!(
            user[0]["text"],
            format!(
                "Sample s{i:02} (text/plain, text, .txt):\nWhat is wrong in ticket {i}? First tag: t{i}"
            )
        );
        assert_eq!(user[1]["text"], format!("ticket body {i}"));
        assert_eq!(
            ex["contents"][1]["parts"][0]["text"],
            format!(r#"{{"code":{i}}}"#),
            "a non-string value is compact JSON"
        );
    }
}

#[test]
fn turns_become_multi_turn_examples_and_broken_turns_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = "raw_training_data";
    for i in 0..11 {
        write(root, &format!("{r}/c{i:02}.md"), format!("# Document {i}"));
        write(
            root,
            &format!("{r}/c{i:02}.json"),
            format!(
                r#"{{"dialogue":{{"turns":[{{"role":"user","text":"Title?"}},{{"role":"model","text":"Document {i}"}},{{"role":"user","text":"Level?"}},{{"role":"model","text":"1"}}]}}}}"#
            ),
        );
    }
    write(root, &format!("{r}/twice.md"), "text");
    write(
        root,
        &format!("{r}/twice.json"),
        r#"{"dialogue":{"turns":[{"role":"user","text":"a"},{"role":"user","text":"b"},{"role":"model","text":"c"}]}}"#,
    );
    write(root, &format!("{r}/open.md"), "text");
    write(
        root,
        &format!("{r}/open.json"),
        r#"{"dialogue":{"turns":[{"role":"user","text":"a"},{"role":"model","text":"b"},{"role":"user","text":"c"}]}}"#,
    );
    let (v, out) = run(
        root,
        "prompt = \"Read {sample.key}.\"\nturns = \"/dialogue/turns\"\n",
        &[("MAX_REJECTED_RATIO", "0.2")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(v["status"], "dry_run", "{v}\n{stderr}");

    let mut rejects: Vec<Value> = read_lines(&v["rejected_uri"])
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rejects.sort_by_key(|r| r["key"].as_str().unwrap().to_owned());
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!(rejects[0]["key"], "open");
    assert_eq!(rejects[0]["category"], "malformed_label");
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .contains("must end with a model turn"),
        "{}",
        rejects[0]
    );
    assert_eq!(rejects[1]["key"], "twice");
    assert_eq!(rejects[1]["category"], "malformed_label");
    assert!(
        rejects[1]["reason"]
            .as_str()
            .unwrap()
            .contains("must alternate user and model"),
        "{}",
        rejects[1]
    );

    let lines = read_lines(&v["train_dataset_uri"]);
    assert_eq!(lines.len(), 11);
    for (i, ex) in validated(&lines).iter().enumerate() {
        let contents = ex["contents"].as_array().unwrap();
        let roles: Vec<&str> = contents
            .iter()
            .map(|c| c["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "model", "user", "model"]);
        let first: Vec<&str> = contents[0]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap())
            .collect();
        let key = format!("c{i:02}");
        assert_eq!(
            first,
            [
                format!("Read {key}."),
                format!("# Document {i}"),
                "Title?".to_owned()
            ]
        );
        assert_eq!(contents[1]["parts"][0]["text"], format!("Document {i}"));
    }
}

#[test]
fn a_bad_convert_config_exits_2_naming_it_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..12 {
        write(root, &format!("raw_training_data/s{i}.txt"), "q");
        write(
            root,
            &format!("raw_training_data/s{i}.json"),
            r#"{"a":"b"}"#,
        );
    }
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("convert.toml");
    for (toml, needle) in [
        (
            "prompt = \"Q: {label.question\"\n",
            "template `prompt`, line 1, column 4: unclosed `{`",
        ),
        ("answer = \"{labels.x}\"\n", "unknown placeholder"),
        ("prompts = \"x\"\n", "unknown field `prompts`"),
    ] {
        std::fs::write(&config, toml).unwrap();
        for cmd in ["run", "plan"] {
            let out = autotune()
                .arg(cmd)
                .env("BUCKET_NAME", root)
                .env("CONVERT_CONFIG", &config)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {toml}: {stderr}");
            assert!(stderr.contains("CONVERT_CONFIG"), "{cmd}: {stderr}");
            assert!(stderr.contains(needle), "{cmd} {toml}: {stderr}");
        }
    }
    let out = autotune()
        .arg("run")
        .env("BUCKET_NAME", root)
        .env("CONVERT_CONFIG", "/nonexistent/convert.toml")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CONVERT_CONFIG: cannot read"), "{stderr}");
    // Nothing was written: no lock, no dataset, no record.
    let top: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["raw_training_data"], "a bad config writes nothing");
}
