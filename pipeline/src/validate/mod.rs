//! `autotune validate`: checks a Vertex AI tuning JSONL file against the rules Vertex applies,
//! locally and before anything is spent, and estimates its tokens and cost.
//!
//! A tuning job on bad data fails after it has queued and billed, or silently drops examples;
//! this module finds the same problems in seconds. Its parts:
//!
//! * [`rules`]: the per-example rules (GOOGLE-APIS.md §2.3–2.4, the `Content`/`Part`/`FileData`
//!   schemas), each finding with its line, JSON path, category and severity.
//! * [`models`]: the base models' limits as data (`models.json`, compiled in, overridable with
//!   MODEL_LIMITS_FILE), and [`check_adapter_size`] for the run.
//! * [`estimate`]: tokens per example by documented rules, totals, epochs and cost; the
//!   [`Estimate`] the run's budget gate uses.
//! * [`stream`]: the file as a stream, cut into batches checked on rayon and merged in file
//!   order, so memory stays flat whatever the file's size.
//! * [`files`]: `--check-files`, lookups of the `gs://` objects that examples name.
//! * [`report`]: counts by category, findings and the estimate, as tables or JSON.
//!
//! File-level limits (example counts, file size) are checked once the stream is merged.

pub mod estimate;
pub mod files;
pub mod models;
pub mod report;
pub mod rules;
pub mod stream;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

pub use estimate::{Estimate, SetEstimate};
pub use models::{ModelLimits, ModelTable, check_adapter_size};
pub use report::{Dataset, Report};
pub use rules::{Category, Finding, Severity};
pub use stream::{LineCheck, Options, Tally, check_line};

use crate::storage::{self, Store, StoreError};

/// The one error type of validation: the file could not be validated at all (as opposed to
/// findings, which are the result of validating it).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{file}: {reason}")]
    Unusable { file: String, reason: String },
    #[error("cannot open {file}: {source}")]
    Open {
        file: String,
        #[source]
        source: StoreError,
    },
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: StoreError,
    },
    #[error("MODEL_LIMITS_FILE {path}: {reason}")]
    ModelLimits { path: String, reason: String },
    #[error("validation failed: {0}")]
    Internal(String),
}

/// What a validation needs besides the file.
#[derive(Debug, Clone)]
pub struct Config {
    pub dataset: Dataset,
    pub model: models::Resolved,
    pub check_files: bool,
    pub max_findings: usize,
    pub epochs: Option<u32>,
    pub price_per_million_training_tokens: Option<f64>,
}

/// Validates the file at `path` (see [`open_path`]).
pub async fn validate_path(path: &str, config: &Config) -> Result<Report, ValidateError> {
    let (store, key) = open_path(path)?;
    validate_object(&*store, &key, config).await
}

/// Splits PATH into a store and an object key: `scheme://bucket/object` opens the bucket;
/// a local path (or `file://` path) opens its folder.
pub fn open_path(path: &str) -> Result<(Arc<dyn Store>, String), ValidateError> {
    let open_err = |source| ValidateError::Open {
        file: path.to_owned(),
        source,
    };
    if let Some((scheme, rest)) = path.split_once("://")
        && scheme != "file"
    {
        let Some((bucket, key)) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        else {
            return Err(ValidateError::Unusable {
                file: path.to_owned(),
                reason: format!("names no object: use {scheme}://BUCKET/OBJECT"),
            });
        };
        let store = storage::open(&format!("{scheme}://{bucket}")).map_err(open_err)?;
        return Ok((store, key.to_owned()));
    }
    let local = path.strip_prefix("file://").unwrap_or(path);
    let unusable = |reason: String| ValidateError::Unusable {
        file: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(local).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => unusable("no such file".into()),
        _ => unusable(format!("cannot read: {e}")),
    })?;
    if meta.is_dir() {
        return Err(unusable("is a folder, not a JSONL file".into()));
    }
    let p = Path::new(local);
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| unusable("has no UTF-8 file name".into()))?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = dir
        .to_str()
        .ok_or_else(|| unusable("is not a UTF-8 path".into()))?;
    let store = storage::local::LocalStore::new(dir).map_err(open_err)?;
    Ok((Arc::new(store), name.to_owned()))
}

/// Validates one object of a store: the library entry point (the run calls it on the files it
/// has written).
pub async fn validate_object(
    store: &dyn Store,
    key: &str,
    config: &Config,
) -> Result<Report, ValidateError> {
    let uri = store.uri(key);
    let started = Instant::now();
    let get = store.get(key).await.map_err(|source| match source {
        StoreError::NotFound { .. } => ValidateError::Unusable {
            file: uri.clone(),
            reason: "no such object".into(),
        },
        source => ValidateError::Open {
            file: uri.clone(),
            source,
        },
    })?;

    let mut opts = Options::new(config.model.limits.clone());
    opts.max_findings = config.max_findings;
    opts.collect_refs = config.check_files;
    opts.personal_data = true;
    let opts = Arc::new(opts);

    let (refs_tx, lookups) = if config.check_files {
        let (tx, rx) = mpsc::channel(1024);
        (
            Some(tx),
            Some(tokio::spawn(files::check(rx, config.max_findings))),
        )
    } else {
        (None, None)
    };
    let mut tally = stream::run(get.body, &uri, opts, refs_tx).await?;
    if let Some(task) = lookups {
        let looked = task
            .await
            .map_err(|e| ValidateError::Internal(format!("file lookups: {e}")))?;
        merge_findings(&mut tally.findings, looked);
    }
    Ok(report(uri, config, tally, started.elapsed().as_secs_f64()))
}

/// The options of a check of lines as they are written (no `fileData` lookups).
pub fn line_options(config: &Config) -> Options {
    let mut opts = Options::new(config.model.limits.clone());
    opts.max_findings = config.max_findings;
    opts
}

/// The report of a whole file from the tally of its lines: the file-level limits and the
/// estimate are added here.
pub fn report(uri: String, config: &Config, tally: stream::Tally, seconds: f64) -> Report {
    let mut findings = tally.findings;
    file_level(
        &mut findings,
        config,
        tally.bytes,
        tally.set.examples,
        tally.multimodal_examples,
    );
    let (train, validation) = match config.dataset {
        Dataset::Training => (tally.set, SetEstimate::default()),
        Dataset::Validation => (SetEstimate::default(), tally.set),
    };
    let estimate = Estimate::new(
        train,
        validation,
        config.epochs,
        config.price_per_million_training_tokens,
    );
    let mut report = Report::new(
        uri,
        config.dataset,
        config.model.clone(),
        findings,
        tally.bytes,
        tally.lines,
        tally.multimodal_examples,
        estimate,
        seconds,
    );
    report.personal_data = tally.personal_data;
    report
}

/// Adds the lookup findings, keeping the first ones in line order.
fn merge_findings(into: &mut rules::Findings, other: rules::Findings) {
    for (a, b) in into.counts.iter_mut().zip(other.counts) {
        *a += b;
    }
    into.kept.extend(other.kept);
    into.kept.sort_by_key(|f| f.line);
    into.kept.truncate(into.cap);
}

/// Limits of the whole file, listed before the per-line findings whatever the cap.
fn file_level(
    findings: &mut rules::Findings,
    config: &Config,
    bytes: u64,
    examples: u64,
    multimodal: u64,
) {
    let l = &config.model.limits;
    let mut add = Vec::new();
    let mut push = |category: Category, message: String| {
        findings.counts[category as usize] += 1;
        add.push(Finding {
            line: None,
            path: String::new(),
            category,
            severity: category.severity(),
            message,
        });
    };
    if !config.model.known {
        push(
            Category::UnknownModel,
            config.model.warning().unwrap_or_default(),
        );
    }
    if examples == 0 {
        push(Category::NoExamples, "the file has no examples".into());
    }
    match config.dataset {
        Dataset::Training => {
            let (max, what) = if multimodal > 0 {
                (l.max_training_examples_multimodal, "multimodal")
            } else {
                (l.max_training_examples_text, "text-only")
            };
            if examples > max {
                push(
                    Category::TooManyExamples,
                    format!(
                        "{examples} training examples; {} allows {max} for a {what} dataset",
                        l.name
                    ),
                );
            }
            if bytes > l.max_training_file_bytes {
                push(
                    Category::FileTooLarge,
                    format!(
                        "{bytes} bytes; {} allows a training file of {} bytes",
                        l.name, l.max_training_file_bytes
                    ),
                );
            }
        }
        Dataset::Validation => {
            if examples > l.max_validation_examples {
                push(
                    Category::TooManyValidationExamples,
                    format!(
                        "{examples} validation examples; {} allows {}",
                        l.name, l.max_validation_examples
                    ),
                );
            }
        }
    }
    findings.kept.splice(0..0, add);
}
