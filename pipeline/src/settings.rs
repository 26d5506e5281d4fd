//! Settings: every environment variable of the system we replace keeps its name and default,
//! and each is also a long flag (`MIN_SAMPLES` ↔ `--min-samples`). New settings follow the same
//! rule. A bad value is refused by clap at parse time, naming the flag and its variable, with
//! exit code 2.
//!
//! This module is the composition root, as ripgrep's `HiArgs` is: the flags live here and
//! nowhere else, and [`Settings::job_config`], [`Settings::tuner`] and
//! [`ValidateArgs::config`] turn them into each component's own typed configuration
//! (`inventory::Rules`, the converter, `tuner::vertex::Config`, `validate::Config`, …). No
//! component sees a flag. Files that settings name (PROMPT=@file, CONVERT_CONFIG,
//! MODEL_LIMITS_FILE) are read here, once; what the run key digests comes from the same bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use autotune_layout as layout;
use clap::{Args, ValueEnum};

use crate::convert::{Converter, Templates};
use crate::inventory::Rules;
use crate::locations::Hosts;
use crate::modality::Modality;
use crate::run;
use crate::tuner::{self, Tuner, TunerKind, TuningMode, job, vertex};
use crate::validate::{self, ModelTable};

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
        default_value = layout::defaults::RAW_DATA_FOLDER
    )]
    pub raw_data_folder: String,

    /// Folder of label files (may be the raw folder).
    #[arg(
        long,
        env = "LABEL_FOLDER",
        value_name = "LABEL_FOLDER",
        value_parser = parse_folder,
        default_value = layout::defaults::LABEL_FOLDER
    )]
    pub label_folder: String,

    /// Folder for the generated datasets, one subfolder per run.
    #[arg(
        long,
        env = "JSONL_FOLDER",
        value_name = "JSONL_FOLDER",
        value_parser = parse_folder,
        default_value = layout::defaults::JSONL_FOLDER
    )]
    pub jsonl_folder: String,

    /// Folder for run metadata, manifests and the lock.
    #[arg(
        long,
        env = "MODEL_META_FOLDER",
        value_name = "MODEL_META_FOLDER",
        value_parser = parse_folder,
        default_value = layout::defaults::MODEL_META_FOLDER
    )]
    pub model_meta_folder: String,

    /// Minimum matched pairs, and minimum new or changed samples since the last successful run.
    #[arg(
        long,
        env = "MIN_SAMPLES",
        value_name = "MIN_SAMPLES",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub min_samples: u64,

    /// Share of samples for training (the rest validate), in (0, 1].
    #[arg(long, env = "SPLIT_RATIO", value_name = "SPLIT_RATIO", default_value_t = 0.9, value_parser = parse_split_ratio)]
    pub split_ratio: f64,

    /// Seed of the deterministic split. Default: the seed of the last successful run, so that
    /// no validation sample ever moves into training; `autotune` on the first run.
    #[arg(long, env = "SPLIT_SEED", value_name = "SPLIT_SEED")]
    pub split_seed: Option<String>,

    /// Accept a SPLIT_RATIO or SPLIT_SEED other than the last run's: samples may change sides
    /// (a trained sample may then validate). Recorded in the run.
    #[arg(long, env = "RESPLIT", value_name = "RESPLIT")]
    pub resplit: bool,

    /// Read and convert every sample, even those whose lines the last successful run kept
    /// (builds are incremental otherwise: only new or changed objects are read).
    #[arg(long, env = "FULL_REBUILD", value_name = "FULL_REBUILD")]
    pub full_rebuild: bool,

    /// On Cloud Storage, read nothing before the gates pass (by default the objects of new or
    /// changed samples are read while the listing arrives, once enough of them for gate 3 are
    /// listed).
    #[arg(long, env = "NO_READ_AHEAD", value_name = "NO_READ_AHEAD")]
    pub no_read_ahead: bool,

    /// Training dataset file name.
    #[arg(long, env = "TRAIN_FILE", value_name = "TRAIN_FILE", default_value = "sft_train.jsonl", value_parser = parse_file_name)]
    pub train_file: String,

    /// Validation dataset file name.
    #[arg(long, env = "VAL_FILE", value_name = "VAL_FILE", default_value = "sft_val.jsonl", value_parser = parse_file_name)]
    pub val_file: String,

    /// Tuner: `dry-run` (default without PROJECT_ID) or `vertex` (default with it).
    #[arg(long, env = "TUNER", value_name = "TUNER")]
    pub tuner: Option<TunerArg>,

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
    pub convert_config: Option<PathBuf>,

    /// The run fails before tuning when more than this share of pairs is rejected.
    #[arg(long, env = "MAX_REJECTED_RATIO", value_name = "MAX_REJECTED_RATIO", default_value_t = 0.1, value_parser = parse_unit_ratio)]
    pub max_rejected_ratio: f64,

    /// Raw text extensions (comma-separated; `.gz` variants are decompressed).
    #[arg(long, env = "TEXT_EXTENSIONS", value_name = "TEXT_EXTENSIONS", value_delimiter = ',', default_value = layout::defaults::TEXT_EXTENSIONS, value_parser = parse_extension)]
    pub text_extensions: Vec<String>,

    /// Image extensions.
    #[arg(long, env = "IMAGE_EXTENSIONS", value_name = "IMAGE_EXTENSIONS", value_delimiter = ',', default_value = layout::defaults::IMAGE_EXTENSIONS, value_parser = parse_extension)]
    pub image_extensions: Vec<String>,

    /// Document extensions.
    #[arg(long, env = "DOCUMENT_EXTENSIONS", value_name = "DOCUMENT_EXTENSIONS", value_delimiter = ',', default_value = layout::defaults::DOCUMENT_EXTENSIONS, value_parser = parse_extension)]
    pub document_extensions: Vec<String>,

    /// Audio extensions.
    #[arg(long, env = "AUDIO_EXTENSIONS", value_name = "AUDIO_EXTENSIONS", value_delimiter = ',', default_value = layout::defaults::AUDIO_EXTENSIONS, value_parser = parse_extension)]
    pub audio_extensions: Vec<String>,

    /// Video extensions.
    #[arg(long, env = "VIDEO_EXTENSIONS", value_name = "VIDEO_EXTENSIONS", value_delimiter = ',', default_value = layout::defaults::VIDEO_EXTENSIONS, value_parser = parse_extension)]
    pub video_extensions: Vec<String>,

    /// Label extensions: `json` (parsed) and `txt` (used as it is).
    #[arg(long, env = "LABEL_EXTENSIONS", value_name = "LABEL_EXTENSIONS", value_delimiter = ',', default_value = layout::defaults::LABEL_EXTENSIONS, value_parser = parse_extension)]
    pub label_extensions: Vec<String>,

    /// Largest text or label object read, in bytes (after decompression).
    #[arg(long, env = "MAX_TEXT_BYTES", value_name = "MAX_TEXT_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_text_bytes: u64,

    /// Bytes of sample content held in memory at once during conversion (read, converting or
    /// waiting to be written); a `.gz` counts as what it may inflate to, at most MAX_TEXT_BYTES.
    #[arg(long, env = "MAX_BYTES_IN_FLIGHT", value_name = "MAX_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024 * 1024..=1 << 40))]
    pub max_bytes_in_flight: u64,

    /// Samples read at once during conversion (a sample's raw text and label are read
    /// together). Unset: adapted between 16 and 256 (from 64) on the reads' latency and on
    /// 429/503 answers, under Cloud Storage's initial read rate of a bucket; set: pinned.
    #[arg(long, env = "READ_CONCURRENCY", value_name = "READ_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub read_concurrency: Option<u16>,

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
    #[arg(long, env = "MAX_TRAINING_TOKENS", value_name = "MAX_TRAINING_TOKENS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_training_tokens: Option<u64>,

    /// How long the dry-run tuner pretends a tuning job runs (to rehearse locks and signals).
    #[arg(long, env = "DRY_RUN_DURATION", value_name = "DRY_RUN_DURATION", default_value = "0s", value_parser = parse_duration)]
    pub dry_run_duration: Duration,

    /// Before a build takes its inventory, wait until nothing under RAW_DATA_FOLDER or
    /// LABEL_FOLDER has been added or changed for this long, so that a bulk upload is trained as
    /// one batch; 0s turns the wait off.
    #[arg(long, env = "QUIET_PERIOD", value_name = "QUIET_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub quiet_period: Duration,

    /// The longest the job waits for uploads to settle; then it builds from what is there.
    #[arg(long, env = "MAX_QUIET_WAIT", value_name = "MAX_QUIET_WAIT", default_value = "10m", value_parser = parse_duration)]
    pub max_quiet_wait: Duration,

    /// Runs one execution makes at most: after a run, it lists again and runs again if enough
    /// new data arrived meanwhile.
    #[arg(long, env = "MAX_CYCLES", value_name = "MAX_CYCLES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_cycles: u32,

    /// How long the execution may live (set it to the Cloud Run task timeout): no further run
    /// starts unless the longest run so far still fits. Unset: only MAX_CYCLES limits.
    #[arg(long, env = "TASK_DEADLINE", value_name = "TASK_DEADLINE", value_parser = parse_positive_duration)]
    pub task_deadline: Option<Duration>,

    #[command(flatten)]
    pub model: ModelSettings,

    #[command(flatten)]
    pub trigger: Trigger,

    #[command(flatten)]
    pub vertex: VertexSettings,

    #[command(flatten)]
    pub eval: EvalSettings,

    #[command(flatten)]
    pub notify: NotifySettings,

    #[command(flatten)]
    pub http: HttpSettings,
}

/// Where run events go besides the log. (Doc comments here are `--help` text.)
#[allow(clippy::doc_markdown)]
#[derive(Debug, Clone, Args)]
pub struct NotifySettings {
    /// Pub/Sub topic (projects/PROJECT/topics/TOPIC) that receives an event on: tuning
    /// submitted, succeeded, failed, blessed, not blessed, promoted, rolled back.
    #[arg(long, env = "NOTIFY_TOPIC", value_name = "NOTIFY_TOPIC")]
    pub notify_topic: Option<String>,

    /// HTTPS URL that receives the same events as JSON POSTs, signed with HMAC-SHA256
    /// (header X-Autotune-Signature) when NOTIFY_WEBHOOK_SECRET is set.
    #[arg(
        long,
        env = "NOTIFY_WEBHOOK",
        value_name = "NOTIFY_WEBHOOK",
        hide_env_values = true
    )]
    pub notify_webhook: Option<String>,

    /// The key of the webhook signatures.
    #[arg(
        long,
        env = "NOTIFY_WEBHOOK_SECRET",
        value_name = "NOTIFY_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub notify_webhook_secret: Option<String>,

    /// Pub/Sub API root (a regional or private endpoint).
    #[arg(
        long,
        env = "PUBSUB_API_ENDPOINT",
        value_name = "PUBSUB_API_ENDPOINT",
        default_value = "https://pubsub.googleapis.com"
    )]
    pub pubsub_api_endpoint: String,
}

/// Which model answers the evaluation rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum EvalModelArg {
    /// Vertex AI with TUNER=vertex, the rehearsal stand-in with the dry-run tuner.
    Auto,
    /// The tuned model's endpoint against the champion's (Vertex AI).
    Vertex,
    /// Deterministic answers derived from the labels, with a set error rate per model; only
    /// with the dry-run tuner, to rehearse the loop without a cloud account.
    Rehearsal,
    /// No evaluation: every successful run becomes the champion.
    Off,
}

/// Settings of the evaluation, the blessing and the promotion. (Doc comments here are `--help`
/// text, where backticks would show.)
#[allow(clippy::doc_markdown)]
#[derive(Debug, Clone, Args)]
pub struct EvalSettings {
    /// Share of the samples (by content digest) frozen into the evaluation set, never trained
    /// or validated on, in [0, 0.5]; 0 turns evaluation off.
    #[arg(long, env = "EVAL_RATIO", value_name = "EVAL_RATIO", default_value_t = 0.05, value_parser = parse_eval_ratio)]
    pub eval_ratio: f64,

    /// The most rows the evaluation set holds.
    #[arg(long, env = "EVAL_MAX", value_name = "EVAL_MAX", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub eval_max: u64,

    /// Pick a new evaluation set in this run (recorded; later runs compare on it).
    #[arg(long, env = "NEW_EVAL_SET", value_name = "NEW_EVAL_SET")]
    pub new_eval_set: bool,

    /// Which model answers the rows: auto, vertex, rehearsal or off.
    #[arg(
        long,
        env = "EVAL_MODEL",
        value_name = "EVAL_MODEL",
        value_enum,
        default_value = "auto"
    )]
    pub eval_model: EvalModelArg,

    /// The metric that decides: auto (by the labels), exact_match, json, class or rouge_l.
    #[arg(
        long,
        env = "EVAL_METRIC",
        value_name = "EVAL_METRIC",
        default_value = "auto"
    )]
    pub eval_metric: String,

    /// Rows that must be scored for a candidate to be blessed.
    #[arg(
        long,
        env = "EVAL_MIN_ROWS",
        value_name = "EVAL_MIN_ROWS",
        default_value_t = 50
    )]
    pub eval_min_rows: u64,

    /// The lowest score a blessed candidate may have, in [0, 1].
    #[arg(long, env = "EVAL_FLOOR", value_name = "EVAL_FLOOR", default_value_t = 0.0, value_parser = parse_unit_ratio)]
    pub eval_floor: f64,

    /// How much better than the champion a blessed candidate must be (candidate − champion),
    /// judged on the paired rows.
    #[arg(long, env = "EVAL_MIN_DELTA", value_name = "EVAL_MIN_DELTA", default_value_t = 0.0, value_parser = parse_unit_ratio)]
    pub eval_min_delta: f64,

    /// Confidence of the paired test (McNemar, paired bootstrap), in [0.5, 1).
    #[arg(long, env = "EVAL_CONFIDENCE", value_name = "EVAL_CONFIDENCE", default_value_t = 0.95, value_parser = parse_confidence)]
    pub eval_confidence: f64,

    /// How much worse a guard metric (JSON validity, blocked or empty answers) may be.
    #[arg(long, env = "EVAL_GUARD_EPSILON", value_name = "EVAL_GUARD_EPSILON", default_value_t = 0.02, value_parser = parse_unit_ratio)]
    pub eval_guard_epsilon: f64,

    /// generateContent calls in flight at once during the evaluation.
    #[arg(long, env = "EVAL_CONCURRENCY", value_name = "EVAL_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub eval_concurrency: u16,

    /// Also score the rows with Vertex's evaluateInstances (exact match, ROUGE) as a
    /// cross-check with Google's definitions.
    #[arg(long, env = "EVAL_GOOGLE_METRICS", value_name = "EVAL_GOOGLE_METRICS")]
    pub eval_google_metrics: bool,

    /// The longest answer a model may give to an evaluation row, in tokens.
    #[arg(long, env = "EVAL_MAX_OUTPUT_TOKENS", value_name = "EVAL_MAX_OUTPUT_TOKENS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub eval_max_output_tokens: u32,
}

/// Settings of the Vertex tuner. (Doc comments here are `--help` text, where backticks would show.)
#[allow(clippy::doc_markdown)]
#[derive(Debug, Clone, Args)]
pub struct VertexSettings {
    /// Vertex AI API root for every call (a private endpoint, a test fake); `{LOCATION}` in it
    /// is replaced by each call's location. Default: Google's host for each call's location
    /// (`https://{LOCATION}-aiplatform.googleapis.com` for a region,
    /// `https://aiplatform.{us|eu}.rep.googleapis.com` for a multi-region,
    /// `https://aiplatform.googleapis.com` for global).
    #[arg(long, env = "VERTEX_API_ENDPOINT", value_name = "VERTEX_API_ENDPOINT")]
    pub vertex_api_endpoint: Option<String>,

    /// Regions whose tuning jobs count towards MAX_CONCURRENT_TUNING_JOBS (comma-separated).
    /// Google's concurrent tuning quota is global, shared by every region: the default counts
    /// every tuning region of the model table, and LOCATION.
    #[arg(
        long,
        env = "TUNING_QUOTA_REGIONS",
        value_name = "TUNING_QUOTA_REGIONS",
        value_delimiter = ','
    )]
    pub tuning_quota_regions: Option<Vec<String>>,

    /// How often the tuning job's state is read.
    #[arg(long, env = "POLL_INTERVAL", value_name = "POLL_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    pub poll_interval: Duration,

    /// Longest a tuning job may run; then it is cancelled and the run records `timed_out`.
    #[arg(long, env = "MAX_TUNING_DURATION", value_name = "MAX_TUNING_DURATION", default_value = "24h", value_parser = parse_positive_duration)]
    pub max_tuning_duration: Duration,

    /// Service account the tuning job runs as (default: Vertex AI's fine-tuning service agent).
    #[arg(
        long,
        env = "TUNING_SERVICE_ACCOUNT",
        value_name = "TUNING_SERVICE_ACCOUNT"
    )]
    pub tuning_service_account: Option<String>,

    /// With this many tuning jobs queued or running in the project's LOCATION (not ours to
    /// adopt), a run is deferred before it builds anything; a later run goes on.
    #[arg(long, env = "MAX_CONCURRENT_TUNING_JOBS", value_name = "MAX_CONCURRENT_TUNING_JOBS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_concurrent_tuning_jobs: u32,

    /// `full` tunes SOURCE_MODEL; `continuous` starts from the last successful run's tuned model.
    #[arg(long, env = "TUNING_MODE", value_name = "TUNING_MODE", value_enum, default_value_t = TuningModeArg::Full)]
    pub tuning_mode: TuningModeArg,
}

/// The template VERTEX_API_ENDPOINT defaulted to before multi-region and global endpoints:
/// set by hand, it still means Google's host for each location.
const LEGACY_VERTEX_TEMPLATE: &str = "https://{LOCATION}-aiplatform.googleapis.com";

impl VertexSettings {
    /// Where Vertex AI calls go: Google's host for each location, or VERTEX_API_ENDPOINT.
    /// The endpoint receives access tokens: it must be https, or http on a loopback host
    /// (tests, a local relay).
    pub fn hosts(&self) -> Result<Hosts, SettingsError> {
        let Some(root) = self.vertex_api_endpoint.as_deref().map(str::trim) else {
            return Ok(Hosts::google());
        };
        if root.is_empty() || root.trim_end_matches('/') == LEGACY_VERTEX_TEMPLATE {
            return Ok(Hosts::google());
        }
        Hosts::checked(root)
            .map_err(|reason| invalid("VERTEX_API_ENDPOINT", format!("{root:?} {reason}")))
    }
}

#[allow(clippy::doc_markdown)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum TuningModeArg {
    /// Tune SOURCE_MODEL on the whole dataset.
    #[default]
    Full,
    /// Tune the previous run's tuned model (`preTunedModel`); SOURCE_MODEL on the first run.
    Continuous,
}

/// Deadlines and retries of every request to Cloud Storage and Vertex AI (issue 9 item 6).
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Longest wait for a connection to a Google API (or the storage emulator).
    #[arg(long, env = "HTTP_CONNECT_TIMEOUT", value_name = "HTTP_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_http_timeout)]
    pub http_connect_timeout: Duration,

    /// Longest a request may take: a small call from sending to the last byte of its answer;
    /// an upload chunk or a download, without a byte moving.
    #[arg(long, env = "HTTP_TIMEOUT", value_name = "HTTP_TIMEOUT", default_value = "60s", value_parser = parse_http_timeout)]
    pub http_timeout: Duration,

    /// Retries of a failed storage request (408, 429, 5xx, timeouts, lost connections).
    #[arg(long, env = "HTTP_RETRIES", value_name = "HTTP_RETRIES", default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub http_retries: u32,

    /// No retry of a storage request starts later than this after its first attempt.
    #[arg(long, env = "HTTP_RETRY_DEADLINE", value_name = "HTTP_RETRY_DEADLINE", default_value = "2m", value_parser = parse_retry_deadline)]
    pub http_retry_deadline: Duration,
}

impl HttpSettings {
    /// The client core's options: these deadlines, and Google's back-off (1 s doubling to
    /// 32 s) within these retries.
    pub fn client_options(&self) -> crate::client::Options {
        crate::client::Options {
            connect_timeout: Some(self.http_connect_timeout),
            request_timeout: Some(self.http_timeout),
            idle_timeout: Some(self.http_timeout),
            retry: crate::client::RetryConfig {
                max_retries: Some(self.http_retries as usize),
                deadline: Some(self.http_retry_deadline),
                ..crate::client::RetryConfig::default()
            },
        }
    }
}

fn parse_bounded_duration(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min || d > max {
        return Err(format!(
            "{s} is not between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_http_timeout(s: &str) -> Result<Duration, String> {
    parse_bounded_duration(s, Duration::from_millis(100), Duration::from_secs(3600))
}

fn parse_retry_deadline(s: &str) -> Result<Duration, String> {
    parse_bounded_duration(s, Duration::ZERO, Duration::from_secs(6 * 3600))
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
        default_value = "gemini-3.5-flash"
    )]
    pub source_model: String,

    /// Vertex AI region the tuning job runs in: one of the model's tuning regions
    /// (`autotune models`). Calls to the base and tuned models go where Google serves them.
    #[arg(
        long,
        env = "LOCATION",
        value_name = "LOCATION",
        default_value = "us-central1"
    )]
    pub location: String,

    /// The date retirement checks use (tests; default: today, UTC).
    #[arg(
        long,
        env = "AUTOTUNE_TODAY",
        value_name = "AUTOTUNE_TODAY",
        hide = true
    )]
    pub today: Option<chrono::NaiveDate>,

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TunerArg {
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

impl From<LogFormat> for crate::logging::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Auto => Self::Auto,
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

/// Arguments of `autotune validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// A JSONL file: a local path, `gs://bucket/object`, or any store URL followed by the object.
    pub path: String,

    /// The file is a validation dataset (its own example limit; no training-file limits).
    #[arg(long)]
    pub validation: bool,

    /// Base model whose limits apply, the limits file, and what the estimate needs.
    #[command(flatten)]
    pub model: ModelSettings,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// Look up every `gs://` fileData object: missing or oversized objects become findings.
    #[arg(long)]
    pub check_files: bool,

    /// Findings listed in full (all are counted).
    #[arg(
        long,
        env = "MAX_FINDINGS",
        value_name = "MAX_FINDINGS",
        default_value_t = 100
    )]
    pub max_findings: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

impl ValidateArgs {
    /// The validator's configuration.
    pub fn config(&self) -> Result<validate::Config, SettingsError> {
        let table = self.model.table()?;
        Ok(validate::Config {
            dataset: if self.validation {
                validate::Dataset::Validation
            } else {
                validate::Dataset::Training
            },
            model: self.model.resolve(&table)?,
            check_files: self.check_files,
            max_findings: self.max_findings,
            epochs: self.model.epochs,
            price_per_million_training_tokens: self.model.price_per_million_training_tokens,
        })
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// A setting that cannot be used, named as the user set it. The binary exits 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingsError {
    pub setting: &'static str,
    pub reason: String,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        setting,
        reason: reason.into(),
    }
}

/// Largest file a setting may name (a prompt, templates, model limits): these are
/// configuration, never data, and must not exhaust memory (`PROMPT=@/dev/zero`).
pub const MAX_SETTING_FILE_BYTES: u64 = 1 << 20;

/// Where kernel and device files live: never configuration (`@/proc/self/environ` would put
/// the environment's secrets into every dataset).
const SYSTEM_FOLDERS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// File systems of kernel state, wherever they are mounted (procfs, sysfs, debugfs, tracefs,
/// securityfs, cgroup and cgroup2, configfs, efivarfs, bpf).
const KERNEL_FILE_SYSTEMS: [u64; 10] = [
    0x9fa0,
    0x6265_6572,
    0x6462_6720,
    0x7472_6163,
    0x7363_6673,
    0x0027_e0eb,
    0x6367_7270,
    0x6265_6570,
    0xde5e_81e4,
    0xcafe_4a11,
];

/// Reads a file a setting names: a regular file of at most [`MAX_SETTING_FILE_BYTES`], as
/// UTF-8 text, that is not a kernel or device file: the path is resolved (links followed) and
/// refused under /proc, /sys or /dev, and on a kernel file system mounted anywhere else.
pub fn read_setting_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let real = std::fs::canonicalize(path).map_err(cannot)?;
    let kernel = || {
        format!(
            "{} is a kernel or device file ({}), not a configuration file",
            path.display(),
            real.display()
        )
    };
    if SYSTEM_FOLDERS.iter().any(|f| real.starts_with(f)) {
        return Err(kernel());
    }
    let file = std::fs::File::open(&real).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if let Ok(fs) = rustix::fs::fstatfs(&file)
        && KERNEL_FILE_SYSTEMS.contains(&(fs.f_type as u64))
    {
        return Err(kernel());
    }
    if meta.len() > MAX_SETTING_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_SETTING_FILE_BYTES} bytes ({} bytes)",
            path.display(),
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_SETTING_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SETTING_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_SETTING_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

impl ModelSettings {
    /// The model table, with MODEL_LIMITS_FILE's entries.
    pub fn table(&self) -> Result<ModelTable, SettingsError> {
        ModelTable::load(self.model_limits_file.as_deref()).map_err(|e| {
            let text = e.to_string();
            let text = text.strip_prefix("MODEL_LIMITS_FILE ").unwrap_or(&text);
            invalid("MODEL_LIMITS_FILE", text)
        })
    }

    pub fn today(&self) -> chrono::NaiveDate {
        self.today
            .unwrap_or_else(|| chrono::Utc::now().date_naive())
    }

    /// SOURCE_MODEL resolved, refused when retired or when LOCATION is not one of its tuning
    /// regions, and warned about when it retires soon.
    pub fn resolve(&self, table: &ModelTable) -> Result<validate::models::Resolved, SettingsError> {
        let model = table.resolve(&self.source_model);
        match model.check_retirement("SOURCE_MODEL", self.today()) {
            Ok(Some(warning)) => tracing::warn!("{warning}"),
            Ok(None) => {}
            Err(retired) => return Err(invalid("SOURCE_MODEL", retired)),
        }
        if model.known {
            model
                .limits
                .check_tuning_location(&self.location)
                .map_err(|e| invalid("LOCATION", e))?;
        }
        Ok(model)
    }
}

impl Settings {
    pub fn tuner_kind(&self) -> TunerKind {
        match self.tuner {
            Some(TunerArg::Vertex) => TunerKind::Vertex,
            None if self.project_id.is_some() => TunerKind::Vertex,
            Some(TunerArg::DryRun) | None => TunerKind::DryRun,
        }
    }

    /// The Vertex tuner's configuration.
    pub fn vertex_config(&self) -> Result<vertex::Config, SettingsError> {
        let project = self
            .project_id
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                invalid(
                    "PROJECT_ID",
                    "TUNER=vertex needs PROJECT_ID (the Google Cloud project to tune in)",
                )
            })?;
        Ok(vertex::Config {
            project,
            location: self.model.location.clone(),
            hosts: self.vertex.hosts()?,
            quota_regions: self.quota_regions()?,
            source_model: self.model.source_model.clone(),
            poll_interval: self.vertex.poll_interval,
            max_tuning_duration: self.vertex.max_tuning_duration,
            http: self.http.client_options(),
        })
    }

    /// Vertex AI reads datasets and media from Cloud Storage only: the Vertex tuner on a local
    /// folder (or any other store) is refused before any work, naming both settings. A custom
    /// VERTEX_API_ENDPOINT that is not Google's (a proxy, a test fake) is left to decide.
    pub fn check_store(&self, store: &dyn crate::storage::Store) -> Result<(), SettingsError> {
        let google = self.vertex.hosts()?.is_google();
        let uri = store.uri("");
        if self.tuner_kind() == TunerKind::Vertex && google && !uri.starts_with("gs://") {
            return Err(invalid(
                "TUNER",
                format!(
                    "TUNER=vertex needs a Cloud Storage bucket, and BUCKET_NAME {:?} is {uri}: Vertex AI reads datasets and media from gs:// only (use TUNER=dry-run to rehearse locally)",
                    self.bucket_name
                ),
            ));
        }
        Ok(())
    }

    /// The tuner the settings ask for.
    pub fn tuner(&self) -> Result<Arc<dyn Tuner>, SettingsError> {
        match self.tuner_kind() {
            TunerKind::DryRun => Ok(Arc::new(tuner::dry_run::DryRun {
                duration: self.dry_run_duration,
            })),
            TunerKind::Vertex => {
                let v = vertex::Vertex::new(self.vertex_config()?)
                    .map_err(|e| invalid("TUNER", e.to_string()))?;
                Ok(Arc::new(v))
            }
        }
    }

    /// The sample rules of the inventory: the layout the trigger shares.
    pub fn rules(&self) -> Rules {
        let mut layout = autotune_layout::Layout::new(
            &self.raw_data_folder,
            &self.label_folder,
            &self.jsonl_folder,
            &self.model_meta_folder,
        )
        .with_label_extensions(&self.label_extensions);
        for (m, exts) in [
            (Modality::Text, &self.text_extensions),
            (Modality::Image, &self.image_extensions),
            (Modality::Document, &self.document_extensions),
            (Modality::Audio, &self.audio_extensions),
            (Modality::Video, &self.video_extensions),
        ] {
            layout = layout.with_extensions(m, exts);
        }
        Rules::new(layout)
    }

    /// CONVERT_CONFIG's text, read once.
    fn convert_config_text(&self) -> Result<Option<String>, SettingsError> {
        self.convert_config
            .as_deref()
            .map(read_setting_file)
            .transpose()
            .map_err(|e| invalid("CONVERT_CONFIG", e))
    }

    /// The converter, and the text of the templates it was parsed from.
    pub fn converter(&self) -> Result<(Converter, Option<String>), SettingsError> {
        let text = self.convert_config_text()?;
        let templates = match (&text, &self.convert_config) {
            (Some(t), Some(path)) => Templates::parse(t, &path.display().to_string())
                .map_err(|e| invalid("CONVERT_CONFIG", strip_setting(&e.to_string())))?,
            _ => Templates::default(),
        };
        let converter = Converter {
            prompt: self.prompt.clone(),
            system_instruction: self.system_instruction.clone(),
            label_field: self.label_field.clone(),
            templates,
        };
        Ok((converter, text))
    }

    /// The create-request template of the tuner.
    pub fn request_template(&self) -> Result<job::Template, SettingsError> {
        let hosts = self.vertex.hosts()?;
        Ok(job::Template {
            jobs_url: job::Template::jobs_url(
                &hosts,
                self.project_id.as_deref().unwrap_or("PROJECT_ID"),
                &self.model.location,
            ),
            location: self.model.location.clone(),
            source_model: self.model.source_model.clone(),
            epochs: self.model.epochs,
            adapter_size: self.adapter_size,
            learning_rate_multiplier: self.learning_rate_multiplier,
            display_name: self.tuned_model_display_name.clone(),
            service_account: self.vertex.tuning_service_account.clone(),
        })
    }

    /// The regions whose busy tuning jobs count towards MAX_CONCURRENT_TUNING_JOBS:
    /// TUNING_QUOTA_REGIONS, or every tuning region of the model table; LOCATION always.
    pub fn quota_regions(&self) -> Result<Vec<String>, SettingsError> {
        let mut regions: Vec<String> = match &self.vertex.tuning_quota_regions {
            Some(given) => given.iter().map(|r| r.trim().to_owned()).collect(),
            None => self
                .model
                .table()?
                .models()
                .iter()
                .flat_map(|m| m.tuning_regions.iter().cloned())
                .collect(),
        };
        if let Some(bad) = regions.iter().find(|r| {
            r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) {
            return Err(invalid(
                "TUNING_QUOTA_REGIONS",
                format!("{bad:?} is not a region name (e.g. us-central1)"),
            ));
        }
        regions.push(self.model.location.clone());
        regions.sort();
        regions.dedup();
        Ok(regions)
    }

    /// Checks that the settings make sense together: outputs never overwrite each other or
    /// hide the samples.
    fn check(&self) -> Result<(), SettingsError> {
        let names = [
            ("TRAIN_FILE", self.train_file.as_str()),
            ("VAL_FILE", self.val_file.as_str()),
            ("rejected.jsonl", run::REJECTED_FILE),
            ("index.jsonl", run::INDEX_FILE),
        ];
        for (i, (a, x)) in names.iter().enumerate() {
            for (b, y) in &names[i + 1..] {
                if x == y {
                    return Err(invalid(
                        a,
                        format!("{a} and {b} are both {x:?}: one file would replace the other"),
                    ));
                }
            }
        }
        // The evaluation writes its own files beside the datasets: a dataset named like one of
        // them would be overwritten by the verdict, or break every evaluation.
        for (var, name) in [
            ("TRAIN_FILE", self.train_file.as_str()),
            ("VAL_FILE", self.val_file.as_str()),
        ] {
            let name = name.trim_matches('/');
            let taken = [run::BLESSING_FILE, run::RESPONSES_FOLDER]
                .into_iter()
                .find(|own| name == *own || name.starts_with(&format!("{own}/")));
            if let Some(own) = taken {
                return Err(invalid(
                    var,
                    format!(
                        "{var} {name:?} is the evaluation's own {own:?} in the run's folder: the evaluation would overwrite it or fail writing beside it; choose another name"
                    ),
                ));
            }
        }
        let folder = |f: &str| f.trim_matches('/').to_owned();
        let outputs = [
            ("JSONL_FOLDER", folder(&self.jsonl_folder)),
            ("MODEL_META_FOLDER", folder(&self.model_meta_folder)),
        ];
        let inputs = [
            ("RAW_DATA_FOLDER", folder(&self.raw_data_folder)),
            ("LABEL_FOLDER", folder(&self.label_folder)),
        ];
        for (o, out) in &outputs {
            for (i, input) in &inputs {
                let inside = |inner: &str, outer: &str| {
                    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
                };
                if inside(input, out) {
                    return Err(invalid(
                        o,
                        format!(
                            "{o} ({out:?}) contains {i} ({input:?}): the job's own files are never samples, so no sample would ever be found"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Everything the job needs, checked and composed. Files the settings name are read here,
    /// once.
    pub fn job_config(&self) -> Result<run::Config, SettingsError> {
        self.check()?;
        let (converter, templates_text) = self.converter()?;
        let table = self.model.table()?;
        if let Some(size) = self.adapter_size {
            table
                .check_adapter_size(&self.model.source_model, size)
                .map_err(|e| invalid("ADAPTER_SIZE", e))?;
        }
        let model = self.model.resolve(&table)?;
        let shape = job::digest(&serde_json::json!([
            templates_text,
            self.split_ratio,
            self.prompt,
            self.system_instruction,
            self.label_field,
            self.model.source_model,
            self.model.epochs,
            self.adapter_size,
            self.learning_rate_multiplier,
            self.train_file,
            self.val_file,
            self.eval.eval_ratio,
            self.eval.eval_max,
        ]));
        Ok(run::Config {
            bucket: self.bucket_name.clone(),
            jsonl_folder: self.jsonl_folder.clone(),
            model_meta_folder: self.model_meta_folder.clone(),
            train_file: self.train_file.clone(),
            val_file: self.val_file.clone(),
            min_samples: self.min_samples,
            split_ratio: self.split_ratio,
            split_seed: self.split_seed.clone(),
            resplit: self.resplit,
            full_rebuild: self.full_rebuild,
            read_ahead: !self.no_read_ahead,
            rules: self.rules(),
            converter: Arc::new(converter),
            read_concurrency: self.read_concurrency.map(usize::from),
            max_text_bytes: self.max_text_bytes,
            max_bytes_in_flight: self.max_bytes_in_flight,
            lease_duration: self.lease_duration,
            max_rejected_ratio: self.max_rejected_ratio,
            max_training_tokens: self.max_training_tokens,
            model,
            epochs: self.model.epochs,
            price_per_million_training_tokens: self.model.price_per_million_training_tokens,
            request: self.request_template()?,
            hosts: self.vertex.hosts()?,
            max_concurrent_tuning_jobs: self.vertex.max_concurrent_tuning_jobs,
            tuning_mode: match self.vertex.tuning_mode {
                TuningModeArg::Full => TuningMode::Full,
                TuningModeArg::Continuous => TuningMode::Continuous,
            },
            shape,
            table,
            today: self.model.today(),
            trigger: run::Trigger {
                bucket: self.trigger.trigger_bucket.clone(),
                object: self.trigger.trigger_object.clone(),
                generation: self.trigger.trigger_generation.clone(),
                event_id: self.trigger.trigger_event_id.clone(),
            },
            quiet_period: self.quiet_period,
            max_quiet_wait: self.max_quiet_wait,
            max_cycles: self.max_cycles,
            task_deadline: self.task_deadline,
            evaluation: self.evaluation()?,
        })
    }

    /// Where notices go: the log always, Pub/Sub and a webhook when set.
    pub fn notifier(&self) -> Result<crate::notify::Notifier, SettingsError> {
        let n = &self.notify;
        let webhook = n
            .notify_webhook
            .as_deref()
            .filter(|w| !w.is_empty())
            .map(|w| {
                // Not the value itself: a webhook's URL may carry its credential.
                reqwest::Url::parse(w).map_err(|e| {
                    invalid(
                        "NOTIFY_WEBHOOK",
                        format!("is not a URL ({e}); expected https://HOST/PATH"),
                    )
                })
            })
            .transpose()?;
        let config = crate::notify::Config {
            topic: n.notify_topic.clone().filter(|t| !t.is_empty()),
            webhook,
            webhook_secret: n.notify_webhook_secret.clone().filter(|t| !t.is_empty()),
            pubsub_root: n.pubsub_api_endpoint.clone(),
            ..crate::notify::Config::default()
        };
        crate::notify::Notifier::new(config).map_err(|e| {
            let setting = e.setting();
            let text = e.to_string();
            let text = text
                .strip_prefix(setting)
                .map_or(text.as_str(), str::trim_start);
            invalid(setting, text)
        })
    }

    /// The Model Registry the champion alias lives in: Vertex AI's with the Vertex tuner.
    pub fn registry(&self) -> Result<Arc<dyn crate::registry::Registry>, SettingsError> {
        match self.tuner_kind() {
            TunerKind::DryRun => Ok(Arc::new(crate::registry::NoRegistry)),
            TunerKind::Vertex => {
                let r = crate::registry::VertexRegistry::new(crate::registry::Config {
                    hosts: self.vertex.hosts()?,
                    http: self.http.client_options(),
                })
                .map_err(|e| invalid("TUNER", e.to_string()))?;
                Ok(Arc::new(r))
            }
        }
    }

    /// Who answers the evaluation rows: Vertex AI with the Vertex tuner, the rehearsal
    /// stand-ins with the dry-run tuner.
    pub fn contestants(
        &self,
    ) -> Result<Arc<dyn crate::evaluate::contestants::Contestants>, SettingsError> {
        use crate::evaluate::contestants::{RehearsalContestants, VertexContestants};
        match self.tuner_kind() {
            TunerKind::DryRun => Ok(Arc::new(RehearsalContestants)),
            TunerKind::Vertex => {
                let v = self.vertex_config()?;
                let mut config =
                    crate::evaluate::vertex::Config::new(&v.project, &v.location, v.hosts.clone());
                config.http = crate::client::Options {
                    retry: crate::evaluate::vertex::Config::inference_retry(),
                    ..self.http.client_options()
                };
                let vertex = crate::evaluate::vertex::Vertex::new(
                    config,
                    crate::client::Credentials::from_env(),
                )
                .map_err(|e| invalid("EVAL_MODEL", e.to_string()))?;
                Ok(Arc::new(VertexContestants {
                    vertex,
                    table: self.model.table()?,
                    project: v.project,
                    location: v.location,
                }))
            }
        }
    }

    /// The evaluation's configuration; `None` when it is off. The rehearsal stand-in is
    /// refused with the Vertex tuner: a real model is never judged by made-up answers.
    pub fn evaluation(&self) -> Result<Option<run::Evaluation>, SettingsError> {
        let e = &self.eval;
        let kind = self.tuner_kind();
        let model = match (e.eval_model, kind) {
            (EvalModelArg::Off, _) => return Ok(None),
            _ if e.eval_ratio == 0.0 => return Ok(None),
            (EvalModelArg::Rehearsal, TunerKind::Vertex) => {
                return Err(invalid(
                    "EVAL_MODEL",
                    "rehearsal answers are made up from the labels: they may judge only the dry-run tuner's stand-in models, never a model tuned on Vertex AI (use EVAL_MODEL=vertex)",
                ));
            }
            (EvalModelArg::Vertex, TunerKind::DryRun) => {
                return Err(invalid(
                    "EVAL_MODEL",
                    "the dry-run tuner makes no model for Vertex AI to answer with: use EVAL_MODEL=rehearsal (or TUNER=vertex)",
                ));
            }
            (EvalModelArg::Auto | EvalModelArg::Vertex, TunerKind::Vertex) => {
                run::EvalModel::Vertex
            }
            (EvalModelArg::Auto | EvalModelArg::Rehearsal, TunerKind::DryRun) => {
                run::EvalModel::Rehearsal
            }
        };
        let metric = crate::evaluate::metrics::Metric::parse_or_auto(&e.eval_metric)
            .map_err(|err| invalid("EVAL_METRIC", err.to_string()))?;
        let thresholds = crate::evaluate::bless::Thresholds {
            min_rows: e.eval_min_rows,
            floor: e.eval_floor,
            min_delta: e.eval_min_delta,
            confidence: e.eval_confidence,
            guard_epsilon: e.eval_guard_epsilon,
        };
        thresholds
            .check()
            .map_err(|err| invalid(err.setting, err.to_string()))?;
        Ok(Some(run::Evaluation {
            ratio: e.eval_ratio,
            max: e.eval_max,
            new_set: e.new_eval_set,
            model,
            metric,
            thresholds,
            concurrency: usize::from(e.eval_concurrency),
            google_metrics: e.eval_google_metrics,
            max_output_tokens: e.eval_max_output_tokens,
        }))
    }
}

/// A component's error names its setting already (`CONVERT_CONFIG: …`); the composed error
/// names it once.
fn strip_setting(message: &str) -> String {
    message
        .strip_prefix("CONVERT_CONFIG: ")
        .unwrap_or(message)
        .to_owned()
}

fn parse_bucket(s: &str) -> Result<String, String> {
    crate::storage::open(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

fn parse_eval_ratio(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| (0.0..=0.5).contains(&v), "[0, 0.5]")
}

fn parse_confidence(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| (0.5..1.0).contains(&v), "[0.5, 1)")
}

/// A number `within` the range `shown` (as the error names it).
fn parse_f64_in(s: &str, within: impl Fn(f64) -> bool, shown: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if within(v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in {shown}"))
    }
}

fn parse_split_ratio(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| v > 0.0 && v <= 1.0, "(0, 1]")
}

fn parse_unit_ratio(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| (0.0..=1.0).contains(&v), "[0, 1]")
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

/// Lease bounds: a second at least (renewals every third of it), the lease's own longest
/// (a dead run's lock must expire within a day).
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = crate::lease::MAX_DURATION;

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_LEASE || d > MAX_LEASE {
        return Err("must be between 1s and 24h".to_owned());
    }
    Ok(d)
}

/// A humantime duration of at most a year: larger values overflow the clocks they are added to.
fn parse_duration(s: &str) -> Result<Duration, String> {
    const MAX: Duration = Duration::from_secs(366 * 24 * 3600);
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(d)
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than 0s".to_owned());
    }
    Ok(d)
}

fn parse_extension(s: &str) -> Result<String, String> {
    layout::parse_extension(s).map_err(|e| e.to_string())
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
            let text = read_setting_file(Path::new(path))?;
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

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn settings(extra: &[&str]) -> Settings {
        use clap::Parser;
        let mut args = vec!["autotune", "--bucket-name", "memory://s"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().settings
    }

    fn parse_err(extra: &[&str]) -> String {
        use clap::Parser;
        let mut args = vec!["autotune", "--bucket-name", "memory://s"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).err().unwrap().to_string()
    }

    #[test]
    fn default_settings_are_the_shared_layout_defaults() {
        // The trigger's defaults are the same `Layout::default()` (trigger-wasm's config tests).
        assert_eq!(
            settings(&[]).rules().layout(),
            &autotune_layout::Layout::default()
        );
        let r = settings(&["--image-extensions", ".GIF,png"]).rules();
        assert_eq!(r.layout().extensions(Modality::Image), ["gif", "png"]);
    }

    #[test]
    fn vertex_settings_have_defaults_flags_and_checks() {
        let s = settings(&["--project-id", "p"]);
        let c = s.vertex_config().unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.max_tuning_duration, Duration::from_secs(24 * 3600));
        assert_eq!(s.vertex.tuning_mode, TuningModeArg::Full);
        assert_eq!(s.vertex.hosts().unwrap(), Hosts::google());
        assert_eq!(
            s.vertex.hosts().unwrap().root("europe-west4"),
            "https://europe-west4-aiplatform.googleapis.com"
        );
        assert_eq!(
            c.quota_regions,
            ["europe-west4", "us-central1"],
            "every tuning region of the table counts towards the global quota"
        );
        let s = settings(&[
            "--project-id",
            "p",
            "--vertex-api-endpoint",
            "http://127.0.0.1:9/",
            "--poll-interval",
            "5s",
            "--max-tuning-duration",
            "2h 30m",
            "--tuning-mode",
            "continuous",
        ]);
        let c = s.vertex_config().unwrap();
        assert_eq!(c.hosts, Hosts::custom("http://127.0.0.1:9"));
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert_eq!(c.max_tuning_duration, Duration::from_secs(9000));
        assert_eq!(s.job_config().unwrap().tuning_mode, TuningMode::Continuous);
        assert!(parse_err(&["--poll-interval", "0s"]).contains("POLL_INTERVAL"));
        assert!(parse_err(&["--tuning-mode", "partial"]).contains("TUNING_MODE"));
        let e = settings(&[]).vertex_config().unwrap_err().to_string();
        assert!(e.contains("PROJECT_ID"), "{e}");
    }

    #[test]
    fn quiet_and_cycle_settings_have_defaults_and_bounds() {
        let c = settings(&[]).job_config().unwrap();
        assert_eq!(c.quiet_period, Duration::from_secs(30));
        assert_eq!(c.max_quiet_wait, Duration::from_secs(600));
        assert_eq!(c.max_cycles, 3);
        assert_eq!(c.task_deadline, None);
        let c = settings(&[
            "--quiet-period",
            "0s",
            "--max-cycles",
            "1",
            "--task-deadline",
            "23h 50m",
        ])
        .job_config()
        .unwrap();
        assert!(c.quiet_period.is_zero(), "0 turns the wait off");
        assert_eq!(c.max_cycles, 1);
        assert_eq!(c.task_deadline, Some(Duration::from_secs(23 * 3600 + 3000)));
        assert!(parse_err(&["--max-cycles", "0"]).contains("MAX_CYCLES"));
        assert!(parse_err(&["--task-deadline", "0s"]).contains("TASK_DEADLINE"));
        assert!(parse_err(&["--quiet-period", "soon"]).contains("QUIET_PERIOD"));
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
    fn a_bad_convert_config_names_the_setting_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("convert.toml");
        std::fs::write(&path, "prompt = \"Q: {label.question\"\n").unwrap();
        let s = settings(&["--convert-config", path.to_str().unwrap()]);
        let e = s.job_config().unwrap_err().to_string();
        assert!(e.starts_with("CONVERT_CONFIG: "), "{e}");
        assert!(!e.contains("CONVERT_CONFIG: CONVERT_CONFIG"), "{e}");
        assert!(e.contains("template `prompt`, line 1, column 4"), "{e}");
        std::fs::write(&path, "prompt = \"Q: {label.question}\"\n").unwrap();
        let c = s.job_config().unwrap();
        assert_eq!(
            c.converter.templates.prompt.clone().unwrap().to_string(),
            "Q: {label.question}"
        );
        let e = settings(&["--convert-config", "/nonexistent/c.toml"])
            .job_config()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("CONVERT_CONFIG: cannot read /nonexistent/c.toml"),
            "{e}"
        );
    }

    #[test]
    fn setting_files_are_ordinary_files_never_kernel_or_device_files() {
        // The environment (secrets) must never become a prompt, and so land in datasets.
        for (flag, setting) in [
            ("--system-instruction", "SYSTEM_INSTRUCTION"),
            ("--prompt", "PROMPT"),
        ] {
            let e = parse_err(&[flag, "@/proc/self/environ"]);
            assert!(e.contains(setting), "{e}");
            assert!(e.contains("/proc"), "{e}");
            assert!(e.contains("kernel or device"), "names the reason: {e}");
        }
        // Through a link, or a path that only resolves into /proc, /sys or /dev.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("innocent.txt");
        std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
        let e = read_setting_file(&link).unwrap_err();
        assert!(e.contains("innocent.txt"), "{e}");
        assert!(
            e.contains("kernel or device file (/proc/"),
            "names where it leads: {e}"
        );
        for bad in [
            "/proc/self/status",
            "/proc/../proc/self/cmdline",
            "/sys/kernel/mm/../uevent_seqnum",
            "/dev/null",
        ] {
            let e = read_setting_file(Path::new(bad)).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        // Not a regular file.
        let e = read_setting_file(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        // Too large: refused without reading it whole.
        let big = dir.path().join("big.txt");
        std::fs::write(&big, vec![b'a'; (MAX_SETTING_FILE_BYTES + 1) as usize]).unwrap();
        let e = read_setting_file(&big).unwrap_err();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
        // An ordinary file, also through a link.
        let ok = dir.path().join("prompt.txt");
        std::fs::write(&ok, "Answer briefly.\n").unwrap();
        let ok_link = dir.path().join("prompt-link.txt");
        std::os::unix::fs::symlink(&ok, &ok_link).unwrap();
        assert_eq!(read_setting_file(&ok_link).unwrap(), "Answer briefly.\n");
        let at = format!("@{}", ok.display());
        assert_eq!(
            settings(&["--system-instruction", &at])
                .system_instruction
                .as_deref(),
            Some("Answer briefly.")
        );
    }

    #[test]
    fn model_limits_files_are_bounded_setting_files() {
        let s = settings(&["--model-limits-file", "/dev/zero"]);
        let e = s.model.table().unwrap_err().to_string();
        assert!(e.starts_with("MODEL_LIMITS_FILE: /dev/zero"), "{e}");
        assert_eq!(e.matches("MODEL_LIMITS_FILE").count(), 1, "named once: {e}");
        assert!(e.contains("/dev/zero"), "{e}");
        let s = settings(&["--model-limits-file", "/proc/self/environ"]);
        let e = s.model.table().unwrap_err().to_string();
        assert!(e.contains("kernel or device"), "{e}");
    }

    #[test]
    fn notification_settings_name_themselves_and_never_show_a_webhook_token() {
        let e = settings(&["--notify-webhook", "hooks.example.com/services/XOXB-TOKEN"])
            .notifier()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("NOTIFY_WEBHOOK: "), "{e}");
        assert!(!e.contains("XOXB-TOKEN"), "{e}");
        for endpoint in [
            "http://receiver.example.com",
            "https://receiver.example.com",
        ] {
            let e = settings(&[
                "--notify-topic",
                "projects/p/topics/autotune",
                "--pubsub-api-endpoint",
                endpoint,
            ])
            .notifier()
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("PUBSUB_API_ENDPOINT: "), "{endpoint}: {e}");
        }
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
