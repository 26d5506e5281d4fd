//! The settings that shape the datasets or the tuning job, in one list: the list builds the
//! digest the run key includes (`run::Config::shape`), and a test holds it against every
//! argument clap knows, so that a new setting that shapes the datasets or the job cannot be
//! left out of the key unnoticed.

use serde_json::{Value, json};

use super::groups::Settings;
use crate::tuner::job;

/// What one setting puts into the digest: its value, read from the settings, or from
/// CONVERT_CONFIG's text (the templates as read once: the key follows the file's content, not
/// its path).
type Part = fn(&Settings, Option<&str>) -> Value;

/// The settings that shape the datasets or the tuning job, by variable, in the digest's order.
/// The order is part of the digest and never changes. The first [`FIRST_RELEASE`] entries are
/// digested as values; every entry added since digests as `[name, value]`, and only when its
/// value is not the default ([`Value::Null`] at the default), so that adding a setting leaves
/// every deployment's run key as it was (nothing is tuned again for it).
pub(super) const SHAPING: [(&str, Part); 16] = [
    ("CONVERT_CONFIG", |_, templates| json!(templates)),
    ("SPLIT_RATIO", |s, _| json!(s.split_ratio)),
    ("PROMPT", |s, _| json!(s.prompt)),
    ("SYSTEM_INSTRUCTION", |s, _| json!(s.system_instruction)),
    ("LABEL_FIELD", |s, _| json!(s.label_field)),
    ("SOURCE_MODEL", |s, _| json!(s.model.source_model)),
    ("EPOCHS", |s, _| json!(s.model.epochs)),
    ("ADAPTER_SIZE", |s, _| json!(s.adapter_size)),
    ("LEARNING_RATE_MULTIPLIER", |s, _| {
        json!(s.learning_rate_multiplier)
    }),
    ("TRAIN_FILE", |s, _| json!(s.train_file)),
    ("VAL_FILE", |s, _| json!(s.val_file)),
    ("EVAL_RATIO", |s, _| json!(s.eval.eval_ratio)),
    ("EVAL_MAX", |s, _| json!(s.eval.eval_max)),
    ("NEAR_DUPLICATE_THRESHOLD", |s, _| {
        let default = crate::fingerprint::DEFAULT_THRESHOLD;
        match s.near_duplicate_threshold.0 {
            Some(v) if (v - default).abs() < f64::EPSILON => Value::Null,
            _ => json!(s.near_duplicate_threshold.to_string()),
        }
    }),
    // `exportLastCheckpointOnly`: true with EVAL_CHECKPOINTS=last. Jobs of earlier versions
    // sent true, but the same data tuned again only to keep checkpoints would be waste: the
    // default (false) adds nothing to the digest.
    ("EVAL_CHECKPOINTS", |s, _| {
        if s.eval.eval_checkpoints.export_last_only() {
            json!({"export_last_checkpoint_only": true})
        } else {
            Value::Null
        }
    }),
    // Redacted (the default: nothing added), rejected or written as uploaded.
    ("PERSONAL_DATA", |s, _| match s.personal_data.mode() {
        crate::screen::Mode::Redact => Value::Null,
        mode => json!(mode.as_str()),
    }),
];

/// The entries of [`SHAPING`] the first release digested, as values.
const FIRST_RELEASE: usize = 13;

/// The digest of the settings in [`SHAPING`], given CONVERT_CONFIG's text.
pub(super) fn digest(settings: &Settings, templates: Option<&str>) -> String {
    let (first, added) = SHAPING.split_at(FIRST_RELEASE);
    let values = first.iter().map(|(_, part)| part(settings, templates));
    let added = added.iter().filter_map(|(name, part)| {
        let value = part(settings, templates);
        (!value.is_null()).then(|| json!([name, value]))
    });
    job::digest(&Value::Array(values.chain(added).collect()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::{Args, FromArgMatches};

    use super::super::testing::settings;
    use super::*;

    /// Whether a setting shapes the datasets or the tuning job (and so belongs in the run key).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Role {
        Shapes,
        Neutral,
    }
    use Role::{Neutral, Shapes};

    /// Every argument of `run` and `plan`, by variable: whether it shapes the datasets or the
    /// tuning job, and a valid value other than its default (empty: a flag without a value;
    /// `{dir}`: a folder of files the test writes). An argument missing here fails
    /// `every_setting_that_shapes_the_datasets_or_the_job_is_in_the_run_key`: classify it.
    const CLASSIFIED: &[(&str, Role, &str)] = &[
        // What the examples say and how they are split; the tuning job's own parameters.
        ("CONVERT_CONFIG", Shapes, "{dir}/convert.toml"),
        ("SPLIT_RATIO", Shapes, "0.8"),
        ("NEAR_DUPLICATE_THRESHOLD", Shapes, "off"),
        ("PROMPT", Shapes, "p"),
        ("SYSTEM_INSTRUCTION", Shapes, "s"),
        ("LABEL_FIELD", Shapes, "/answer"),
        ("SOURCE_MODEL", Shapes, "m"),
        ("EPOCHS", Shapes, "3"),
        ("ADAPTER_SIZE", Shapes, "4"),
        ("LEARNING_RATE_MULTIPLIER", Shapes, "2"),
        ("TRAIN_FILE", Shapes, "train.jsonl"),
        ("VAL_FILE", Shapes, "val.jsonl"),
        ("EVAL_RATIO", Shapes, "0.1"),
        ("EVAL_MAX", Shapes, "500"),
        ("EVAL_CHECKPOINTS", Shapes, "last"),
        // Redacted, rejected or written as uploaded: what the lines say.
        ("PERSONAL_DATA", Shapes, "reject"),
        // Where the samples are and which are read: the files' bytes, which the run key
        // digests too, say what they selected.
        ("BUCKET_NAME", Neutral, "memory://t"),
        ("RAW_DATA_FOLDER", Neutral, "raw"),
        ("LABEL_FOLDER", Neutral, "labels"),
        ("JSONL_FOLDER", Neutral, "datasets"),
        ("MODEL_META_FOLDER", Neutral, "meta"),
        ("SPLIT_SEED", Neutral, "seed"),
        ("TEXT_EXTENSIONS", Neutral, "txt"),
        ("IMAGE_EXTENSIONS", Neutral, "png"),
        ("DOCUMENT_EXTENSIONS", Neutral, "pdf,docx"),
        ("AUDIO_EXTENSIONS", Neutral, "mp3"),
        ("VIDEO_EXTENSIONS", Neutral, "mp4"),
        ("LABEL_EXTENSIONS", Neutral, "json"),
        ("MAX_TEXT_BYTES", Neutral, "1024"),
        // Gates, budgets, pacing and the lock: whether and when a run tunes, not what.
        ("MIN_SAMPLES", Neutral, "11"),
        ("RESPLIT", Neutral, ""),
        ("FULL_REBUILD", Neutral, ""),
        ("NO_READ_AHEAD", Neutral, ""),
        ("MAX_REJECTED_RATIO", Neutral, "0.2"),
        ("MAX_BYTES_IN_FLIGHT", Neutral, "2097152"),
        ("READ_CONCURRENCY", Neutral, "8"),
        ("LEASE_DURATION", Neutral, "10m"),
        ("MAX_TRAINING_TOKENS", Neutral, "1000"),
        ("DRY_RUN_DURATION", Neutral, "1s"),
        ("QUIET_PERIOD", Neutral, "0s"),
        ("MAX_QUIET_WAIT", Neutral, "1m"),
        ("MAX_CYCLES", Neutral, "1"),
        ("TASK_DEADLINE", Neutral, "1h"),
        ("MAX_CONCURRENT_TUNING_JOBS", Neutral, "2"),
        ("PRICE_PER_MILLION_TRAINING_TOKENS", Neutral, "2"),
        ("MODEL_LIMITS_FILE", Neutral, "{dir}/limits.json"),
        ("AUTOTUNE_TODAY", Neutral, "2026-01-01"),
        // Where and how the job runs and is followed, and what its model is called: not what
        // it learns. (TUNING_MODE=continuous starts from the last tuned model; the same data
        // and settings have nothing new to teach it.)
        ("PROJECT_ID", Neutral, "p"),
        ("TUNER", Neutral, "vertex"),
        ("LOCATION", Neutral, "europe-west4"),
        ("TUNED_MODEL_DISPLAY_NAME", Neutral, "model-{run_id}"),
        ("VERTEX_API_ENDPOINT", Neutral, "http://127.0.0.1:9"),
        ("TUNING_QUOTA_REGIONS", Neutral, "us-east1"),
        ("POLL_INTERVAL", Neutral, "5s"),
        ("MAX_TUNING_DURATION", Neutral, "1h"),
        ("TUNING_SERVICE_ACCOUNT", Neutral, "tuner@example.com"),
        ("TUNING_MODE", Neutral, "continuous"),
        // How the tuned model is judged: the evaluation set's size is above (EVAL_RATIO,
        // EVAL_MAX), since it takes samples out of training.
        ("NEW_EVAL_SET", Neutral, ""),
        ("EVAL_MODEL", Neutral, "off"),
        ("EVAL_METRIC", Neutral, "exact_match"),
        ("EVAL_MIN_ROWS", Neutral, "10"),
        ("EVAL_FLOOR", Neutral, "0.5"),
        ("EVAL_MIN_DELTA", Neutral, "0.01"),
        ("EVAL_CONFIDENCE", Neutral, "0.9"),
        ("EVAL_GUARD_EPSILON", Neutral, "0.05"),
        ("EVAL_CONCURRENCY", Neutral, "4"),
        ("EVAL_GOOGLE_METRICS", Neutral, ""),
        ("EVAL_MAX_OUTPUT_TOKENS", Neutral, "512"),
        // Who is told, how requests are made, what started the execution.
        ("NOTIFY_TOPIC", Neutral, "projects/p/topics/t"),
        ("NOTIFY_WEBHOOK", Neutral, "https://hooks.example.com/x"),
        ("NOTIFY_WEBHOOK_SECRET", Neutral, "k"),
        ("PUBSUB_API_ENDPOINT", Neutral, "https://pubsub.example.com"),
        ("HTTP_CONNECT_TIMEOUT", Neutral, "5s"),
        ("HTTP_TIMEOUT", Neutral, "30s"),
        ("HTTP_RETRIES", Neutral, "3"),
        ("HTTP_RETRY_DEADLINE", Neutral, "1m"),
        ("TRIGGER_BUCKET", Neutral, "b"),
        ("TRIGGER_OBJECT", Neutral, "o"),
        ("TRIGGER_GENERATION", Neutral, "1"),
        ("TRIGGER_EVENT_ID", Neutral, "e"),
    ];

    /// Every argument clap knows for `run` and `plan`: its variable and its long flag.
    fn arguments() -> Vec<(String, String)> {
        Settings::augment_args(clap::Command::new("autotune"))
            .get_arguments()
            .map(|a| {
                let id = a.get_id().to_string();
                let env = a.get_env().map_or_else(
                    || panic!("--{id} has no variable: every setting is one"),
                    |e| e.to_string_lossy().into_owned(),
                );
                let long = a.get_long().unwrap_or_else(|| panic!("{env} has no flag"));
                (env, long.to_owned())
            })
            .collect()
    }

    /// The shape digest of the default settings with `var` set to `value` (`BUCKET_NAME`
    /// defaults to `memory://s`, as in every test).
    fn shape_with(var: &str, long: &str, value: &str) -> String {
        let mut args = vec!["autotune".to_owned()];
        if var != "BUCKET_NAME" {
            args.extend(["--bucket-name".to_owned(), "memory://s".to_owned()]);
        }
        args.push(format!("--{long}"));
        if !value.is_empty() {
            args.push(value.to_owned());
        }
        let matches = Settings::augment_args(clap::Command::new("autotune"))
            .try_get_matches_from(&args)
            .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        Settings::from_arg_matches(&matches)
            .unwrap()
            .job_config()
            .unwrap_or_else(|e| panic!("{var}={value}: {e}"))
            .shape
    }

    #[test]
    fn the_shape_digest_changes_with_what_shapes_the_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.toml");
        std::fs::write(&t, "prompt = \"A {label.q}\"").unwrap();
        let t = t.to_str().unwrap();
        let shape = |extra: &[&str]| settings(extra).job_config().unwrap().shape;
        let base = shape(&[]);
        assert_eq!(base, shape(&[]), "stable");
        assert_ne!(base, shape(&["--prompt", "p"]));
        assert_ne!(base, shape(&["--source-model", "m"]));
        assert_ne!(base, shape(&["--split-ratio", "0.8"]));
        let with_templates = shape(&["--convert-config", t]);
        assert_ne!(base, with_templates);
        std::fs::write(t, "prompt = \"B {label.q}\"").unwrap();
        assert_ne!(
            with_templates,
            shape(&["--convert-config", t]),
            "editing the templates changes the key"
        );
    }

    #[test]
    fn every_setting_that_shapes_the_datasets_or_the_job_is_in_the_run_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("convert.toml"), "prompt = \"A {label.q}\"").unwrap();
        std::fs::write(dir.path().join("limits.json"), r#"{"models":[]}"#).unwrap();
        let dir = dir.path().to_str().unwrap();

        let arguments = arguments();
        let unclassified: Vec<&str> = arguments
            .iter()
            .map(|(env, _)| env.as_str())
            .filter(|env| !CLASSIFIED.iter().any(|(var, _, _)| var == env))
            .collect();
        assert!(
            unclassified.is_empty(),
            "settings not classified as shaping the datasets or the tuning job or not: {unclassified:?}; add each to CLASSIFIED (and one that shapes them to SHAPING)"
        );
        let mut seen = BTreeSet::new();
        for (var, _, _) in CLASSIFIED {
            assert!(seen.insert(var), "{var} is classified twice");
            assert!(
                arguments.iter().any(|(env, _)| env == var),
                "{var} is classified but is no argument of `run` and `plan`"
            );
        }

        let base = settings(&[]).job_config().unwrap().shape;
        let mut wrong = Vec::new();
        for (var, role, value) in CLASSIFIED {
            let long = &arguments.iter().find(|(env, _)| env == var).unwrap().1;
            let value = value.replace("{dir}", dir);
            let changed = shape_with(var, long, &value) != base;
            match role {
                Shapes if !changed => wrong.push(format!(
                    "{var} shapes the datasets or the tuning job, but {var}={value:?} leaves the run key's digest unchanged: add it to SHAPING"
                )),
                Neutral if changed => wrong.push(format!(
                    "{var} is classified as not shaping the datasets or the job, but {var}={value:?} changes the run key's digest"
                )),
                _ => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));

        let listed: BTreeSet<&str> = SHAPING.iter().map(|(var, _)| *var).collect();
        let shaping: BTreeSet<&str> = CLASSIFIED
            .iter()
            .filter(|(_, role, _)| *role == Shapes)
            .map(|(var, _, _)| *var)
            .collect();
        assert_eq!(
            listed, shaping,
            "SHAPING lists exactly the shaping settings"
        );
        assert_eq!(
            listed.len(),
            SHAPING.len(),
            "SHAPING names each setting once"
        );
    }

    #[test]
    fn the_default_settings_keep_their_digest() {
        // A changed digest makes every deployment tune its last datasets again, once.
        assert_eq!(
            settings(&[]).job_config().unwrap().shape,
            "d687e76f1f17bb5ee72643adf65e87d9",
            "the run key of the default settings changed: SHAPING's entries or order, or a default that shapes the datasets"
        );
    }
}
