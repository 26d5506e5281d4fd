//! Settings: every environment variable of the system we replace keeps its name and default,
//! and each is also a long flag (`MIN_SAMPLES` ↔ `--min-samples`). New settings follow the same
//! rule. A bad value is refused by clap at parse time, naming the flag and its variable, with
//! exit code 2.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// Settings shared by `run` and `plan`.
#[derive(Debug, Clone, Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct Settings {
    /// Bucket: `gs://bucket[/prefix]`, a bare bucket name (GCS), a local folder, `file://` or
    /// `memory://` URL.
    #[arg(long, env = "BUCKET_NAME", value_name = "BUCKET_NAME", value_parser = parse_bucket)]
    pub bucket_name: String,

    /// Google Cloud project; when set, the default tuner is Vertex AI.
    #[arg(long, env = "PROJECT_ID", value_name = "PROJECT_ID")]
    pub project_id: Option<String>,

    /// Folder of raw input files.
    #[arg(
        long,
        env = "RAW_DATA_FOLDER",
        value_name = "RAW_DATA_FOLDER",
        value_parser = parse_folder,
        default_value = "raw_training_data"
    )]
    pub raw_data_folder: String,

    /// Folder of label files (may be the raw folder).
    #[arg(
        long,
        env = "LABEL_FOLDER",
        value_name = "LABEL_FOLDER",
        value_parser = parse_folder,
        default_value = "raw_training_data"
    )]
    pub label_folder: String,

    /// Folder for the generated datasets, one subfolder per run.
    #[arg(
        long,
        env = "JSONL_FOLDER",
        value_name = "JSONL_FOLDER",
        value_parser = parse_folder,
        default_value = "training_datasets"
    )]
    pub jsonl_folder: String,

    /// Folder for run metadata, manifests and the lock.
    #[arg(
        long,
        env = "MODEL_META_FOLDER",
        value_name = "MODEL_META_FOLDER",
        value_parser = parse_folder,
        default_value = "trained_model"
    )]
    pub model_meta_folder: String,

    /// Minimum matched pairs, and minimum new or changed samples since the last successful run.
    #[arg(
        long,
        env = "MIN_SAMPLES",
        value_name = "MIN_SAMPLES",
        default_value_t = 10
    )]
    pub min_samples: u64,

    /// Share of samples for training (the rest validate), in (0, 1].
    #[arg(long, env = "SPLIT_RATIO", value_name = "SPLIT_RATIO", default_value_t = 0.9, value_parser = parse_split_ratio)]
    pub split_ratio: f64,

    /// Seed of the deterministic split. Default: the seed of the last successful run, so that
    /// no validation sample ever moves into training; `autotune` on the first run.
    #[arg(long, env = "SPLIT_SEED", value_name = "SPLIT_SEED")]
    pub split_seed: Option<String>,

    /// Training dataset file name.
    #[arg(long, env = "TRAIN_FILE", value_name = "TRAIN_FILE", default_value = "sft_train.jsonl", value_parser = parse_file_name)]
    pub train_file: String,

    /// Validation dataset file name.
    #[arg(long, env = "VAL_FILE", value_name = "VAL_FILE", default_value = "sft_val.jsonl", value_parser = parse_file_name)]
    pub val_file: String,

    /// Vertex AI region.
    #[arg(
        long,
        env = "LOCATION",
        value_name = "LOCATION",
        default_value = "us-central1"
    )]
    pub location: String,

    /// Tuner: `dry-run` (default without PROJECT_ID) or `vertex` (default with it).
    #[arg(long, env = "TUNER", value_name = "TUNER")]
    pub tuner: Option<TunerKind>,

    /// Instruction placed before the raw content in the user turn; inline text or `@file`.
    #[arg(long, env = "PROMPT", value_name = "PROMPT", value_parser = parse_text_or_file)]
    pub prompt: Option<String>,

    /// System instruction of every example; inline text or `@file`.
    #[arg(long, env = "SYSTEM_INSTRUCTION", value_name = "SYSTEM_INSTRUCTION", value_parser = parse_text_or_file)]
    pub system_instruction: Option<String>,

    /// JSON pointer (e.g. `/answer`) selecting the model answer in `.json` labels; default: the
    /// whole label as compact JSON.
    #[arg(long, env = "LABEL_FIELD", value_name = "LABEL_FIELD", value_parser = parse_json_pointer)]
    pub label_field: Option<String>,

    /// TOML file of conversion templates (`prompt`, `system_instruction`, `answer`, `turns`);
    /// its keys win over PROMPT and SYSTEM_INSTRUCTION when both are set.
    #[arg(long, env = "CONVERT_CONFIG", value_name = "CONVERT_CONFIG")]
    pub convert_config: Option<std::path::PathBuf>,

    /// The run fails before tuning when more than this share of pairs is rejected.
    #[arg(long, env = "MAX_REJECTED_RATIO", value_name = "MAX_REJECTED_RATIO", default_value_t = 0.1, value_parser = parse_unit_ratio)]
    pub max_rejected_ratio: f64,

    /// Raw text extensions (comma-separated; `.gz` variants are decompressed).
    #[arg(long, env = "TEXT_EXTENSIONS", value_name = "TEXT_EXTENSIONS", value_delimiter = ',', default_value = "txt,md,csv,html", value_parser = parse_extension)]
    pub text_extensions: Vec<String>,

    /// Image extensions.
    #[arg(long, env = "IMAGE_EXTENSIONS", value_name = "IMAGE_EXTENSIONS", value_delimiter = ',', default_value = "png,jpg,jpeg,webp", value_parser = parse_extension)]
    pub image_extensions: Vec<String>,

    /// Document extensions.
    #[arg(long, env = "DOCUMENT_EXTENSIONS", value_name = "DOCUMENT_EXTENSIONS", value_delimiter = ',', default_value = "pdf", value_parser = parse_extension)]
    pub document_extensions: Vec<String>,

    /// Audio extensions.
    #[arg(long, env = "AUDIO_EXTENSIONS", value_name = "AUDIO_EXTENSIONS", value_delimiter = ',', default_value = "mp3,wav,flac,m4a,ogg", value_parser = parse_extension)]
    pub audio_extensions: Vec<String>,

    /// Video extensions.
    #[arg(long, env = "VIDEO_EXTENSIONS", value_name = "VIDEO_EXTENSIONS", value_delimiter = ',', default_value = "mp4,mov,webm", value_parser = parse_extension)]
    pub video_extensions: Vec<String>,

    /// Label extensions: `json` (parsed) and `txt` (used as it is).
    #[arg(long, env = "LABEL_EXTENSIONS", value_name = "LABEL_EXTENSIONS", value_delimiter = ',', default_value = "json,txt", value_parser = parse_extension)]
    pub label_extensions: Vec<String>,

    /// Largest text or label object read, in bytes (after decompression).
    #[arg(long, env = "MAX_TEXT_BYTES", value_name = "MAX_TEXT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_text_bytes: u64,

    /// Bytes of sample content held in memory at once during conversion (read, converting or
    /// waiting to be written); a `.gz` counts as what it may inflate to, at most MAX_TEXT_BYTES.
    #[arg(long, env = "MAX_BYTES_IN_FLIGHT", value_name = "MAX_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024 * 1024..=1 << 40))]
    pub max_bytes_in_flight: u64,

    /// Objects read at once during conversion.
    #[arg(long, env = "READ_CONCURRENCY", value_name = "READ_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub read_concurrency: u16,

    /// Lifetime of the run lock; a heartbeat renews it every third of this while the run lives.
    #[arg(long, env = "LEASE_DURATION", value_name = "LEASE_DURATION", default_value = "5m", value_parser = parse_lease)]
    pub lease_duration: Duration,

    /// LoRA adapter size: 1, 2, 4, 8, 16 or 32.
    #[arg(long, env = "ADAPTER_SIZE", value_name = "ADAPTER_SIZE", value_parser = parse_adapter_size)]
    pub adapter_size: Option<u8>,

    /// Learning-rate multiplier (Vertex default 1.0 when unset).
    #[arg(long, env = "LEARNING_RATE_MULTIPLIER", value_name = "LEARNING_RATE_MULTIPLIER", value_parser = parse_positive)]
    pub learning_rate_multiplier: Option<f64>,

    /// Display name of the tuned model; `{run_id}` is replaced by the run id.
    #[arg(
        long,
        env = "TUNED_MODEL_DISPLAY_NAME",
        value_name = "TUNED_MODEL_DISPLAY_NAME",
        default_value = "autotune-{run_id}"
    )]
    pub tuned_model_display_name: String,

    /// Budget: a run whose estimated training tokens (times EPOCHS) exceed this stops before
    /// tuning.
    #[arg(long, env = "MAX_TRAINING_TOKENS", value_name = "MAX_TRAINING_TOKENS")]
    pub max_training_tokens: Option<u64>,

    /// How long the dry-run tuner pretends a tuning job runs (to rehearse locks and signals).
    #[arg(long, env = "DRY_RUN_DURATION", value_name = "DRY_RUN_DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub dry_run_duration: Duration,

    #[command(flatten)]
    pub model: ModelSettings,

    #[command(flatten)]
    pub trigger: Trigger,

    #[command(flatten)]
    pub vertex: crate::tuner::vertex::VertexSettings,
}

/// The base model and what the token estimate needs: shared by `run`, `plan` and `validate`.
#[derive(Debug, Clone, Args)]
pub struct ModelSettings {
    /// Base model to tune.
    #[arg(
        long,
        visible_alias = "model",
        env = "SOURCE_MODEL",
        value_name = "SOURCE_MODEL",
        default_value = "gemini-2.5-flash"
    )]
    pub source_model: String,

    /// Tuning epochs (Vertex default when unset).
    #[arg(long, env = "EPOCHS", value_name = "EPOCHS", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub epochs: Option<u32>,

    /// A JSON file of model limits (tokens per example, adapter sizes) that replaces or adds to
    /// the built-in table.
    #[arg(long, env = "MODEL_LIMITS_FILE", value_name = "MODEL_LIMITS_FILE")]
    pub model_limits_file: Option<std::path::PathBuf>,

    /// Price of a million training tokens, for the cost estimate (no price is built in).
    #[arg(long, env = "PRICE_PER_MILLION_TRAINING_TOKENS", value_name = "PRICE_PER_MILLION_TRAINING_TOKENS", value_parser = parse_positive)]
    pub price_per_million_training_tokens: Option<f64>,
}

/// The upload event that started this execution, passed by the trigger as container overrides.
#[derive(Debug, Clone, Default, Args, serde::Serialize)]
pub struct Trigger {
    /// Bucket of the object whose upload triggered the run.
    #[arg(long, env = "TRIGGER_BUCKET", value_name = "TRIGGER_BUCKET")]
    pub trigger_bucket: Option<String>,
    /// Object whose upload triggered the run.
    #[arg(long, env = "TRIGGER_OBJECT", value_name = "TRIGGER_OBJECT")]
    pub trigger_object: Option<String>,
    /// Generation of that object.
    #[arg(long, env = "TRIGGER_GENERATION", value_name = "TRIGGER_GENERATION")]
    pub trigger_generation: Option<String>,
    /// Id of the triggering event.
    #[arg(long, env = "TRIGGER_EVENT_ID", value_name = "TRIGGER_EVENT_ID")]
    pub trigger_event_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunerKind {
    DryRun,
    Vertex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

impl Settings {
    pub fn tuner_kind(&self) -> TunerKind {
        self.tuner.unwrap_or(if self.project_id.is_some() {
            TunerKind::Vertex
        } else {
            TunerKind::DryRun
        })
    }
}

fn parse_bucket(s: &str) -> Result<String, String> {
    crate::storage::open(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

fn parse_split_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1]"))
    }
}

fn parse_unit_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in [0, 1]"))
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not a positive number"))
    }
}

fn parse_adapter_size(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(v @ (1 | 2 | 4 | 8 | 16 | 32)) => Ok(v),
        _ => Err(format!("{s:?} is not one of 1, 2, 4, 8, 16, 32")),
    }
}

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(d)
}

fn parse_extension(s: &str) -> Result<String, String> {
    let e = s.trim().trim_start_matches('.').to_ascii_lowercase();
    if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("{s:?} is not a file extension"));
    }
    Ok(e)
}

fn parse_file_name(s: &str) -> Result<String, String> {
    crate::storage::validate_key(s).map_err(|e| e.to_string())?;
    if s.contains('/') {
        return Err(format!("{s:?} must be a file name, not a path"));
    }
    Ok(s.to_owned())
}

/// A folder inside the bucket: relative, without `.` or `..` segments, so that nothing
/// outside the bucket is ever listed or read. Empty means the bucket's root.
fn parse_folder(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        return Err(format!(
            "{s:?} is an absolute path: folders are relative to the bucket"
        ));
    }
    let body = s.trim_end_matches('/');
    if !body.is_empty() && crate::storage::validate_key(body).is_err() {
        return Err(format!(
            "{s:?} has an empty, '.' or '..' segment, or a line break: folders stay inside the bucket"
        ));
    }
    Ok(s.to_owned())
}

fn parse_json_pointer(s: &str) -> Result<String, String> {
    if s.is_empty() || s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a JSON pointer (it must start with '/', e.g. /answer)"
        ))
    }
}

/// `@path` reads the text from a file, so long prompts live beside the configuration.
fn parse_text_or_file(s: &str) -> Result<String, String> {
    match s.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read prompt file {path}: {e}"))?;
            Ok(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => Ok(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_bounded() {
        assert!(parse_split_ratio("0.9").is_ok());
        assert!(parse_split_ratio("1").is_ok());
        assert!(
            parse_split_ratio("1.5")
                .unwrap_err()
                .contains("not in (0, 1]")
        );
        assert!(parse_split_ratio("0").is_err());
        assert!(parse_split_ratio("abc").is_err());
        assert!(parse_unit_ratio("0").is_ok());
        assert!(parse_unit_ratio("-0.1").is_err());
    }

    #[test]
    fn extensions_are_normalised() {
        assert_eq!(parse_extension(".PNG").unwrap(), "png");
        assert!(parse_extension("a/b").is_err());
        assert!(parse_adapter_size("3").is_err());
        assert_eq!(parse_adapter_size("16").unwrap(), 16);
        assert!(parse_json_pointer("answer").is_err());
        assert!(parse_file_name("a/b.jsonl").is_err());
    }

    #[test]
    fn folders_stay_inside_the_bucket() {
        for good in ["", "raw", "raw/", "data/raw", "a.b/c"] {
            assert!(parse_folder(good).is_ok(), "{good:?}");
        }
        for bad in [
            "/etc",
            "../../../../etc",
            "..",
            "a/../b",
            "./a",
            "a//b",
            "a\nb",
        ] {
            assert!(parse_folder(bad).is_err(), "{bad:?}");
        }
    }
}
