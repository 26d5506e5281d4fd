//! The clap argument groups: every setting's flag, variable, default, help text and value
//! parser. Nothing here builds a component's configuration (that is `compose`).

use std::path::PathBuf;
use std::time::Duration;

use autotune_layout as layout;
use clap::{Args, ValueEnum};

use super::parse::{
    NearDuplicates, parse_adapter_size, parse_bucket, parse_checkpoints, parse_confidence,
    parse_duration, parse_eval_ratio, parse_extension, parse_file_name, parse_folder,
    parse_http_timeout, parse_json_pointer, parse_lease, parse_near_duplicate_threshold,
    parse_positive, parse_positive_duration, parse_retry_deadline, parse_split_ratio,
    parse_text_or_file, parse_unit_ratio,
};

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

    /// Near-duplicates: samples whose text and label are at least this similar (estimated
    /// Jaccard similarity of their pairs of consecutive words, in (0, 1]) train once, the
    /// first by key; the others are reported as `near_duplicate`. `off` trains them all. The
    /// same similarity keeps near-copies of evaluation rows out of training (0.6 when off).
    #[arg(long, env = "NEAR_DUPLICATE_THRESHOLD", value_name = "NEAR_DUPLICATE_THRESHOLD", default_value = "0.6", value_parser = parse_near_duplicate_threshold)]
    pub near_duplicate_threshold: NearDuplicates,

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

    /// What personal data or a secret found in a sample's text or label does: redact
    /// (replaced by a typed placeholder such as `[EMAIL_ADDRESS]` in the written line), reject
    /// (the sample is rejected as `personal_data`) or off.
    #[arg(
        long,
        env = "PERSONAL_DATA",
        value_name = "PERSONAL_DATA",
        value_enum,
        default_value = "redact"
    )]
    pub personal_data: PersonalDataArg,

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

/// What a personal-data hit does (PERSONAL_DATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PersonalDataArg {
    /// Each value is replaced by a typed placeholder; the sample trains.
    Redact,
    /// The sample is rejected as `personal_data`, naming the kinds found.
    Reject,
    /// Nothing is screened.
    Off,
}

impl PersonalDataArg {
    pub fn mode(self) -> crate::screen::Mode {
        match self {
            Self::Redact => crate::screen::Mode::Redact,
            Self::Reject => crate::screen::Mode::Reject,
            Self::Off => crate::screen::Mode::Off,
        }
    }
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

    /// Which checkpoints of a tuned model are judged: all (Vertex keeps one about every epoch,
    /// each judged; the best blessed one wins, Holm-corrected), last:K (the last K), or last
    /// (the job exports the last checkpoint only).
    #[arg(long, env = "EVAL_CHECKPOINTS", value_name = "EVAL_CHECKPOINTS", default_value = "all", value_parser = parse_checkpoints)]
    pub eval_checkpoints: crate::evaluate::checkpoints::Selection,

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

    /// The table once read ([`ModelSettings::table`]).
    #[arg(skip)]
    pub table: std::sync::OnceLock<crate::validate::ModelTable>,

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{parse_err, settings};

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
}
