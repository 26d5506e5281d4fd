//! The composition root, as ripgrep's `HiArgs` is: each component's typed configuration,
//! built from the argument groups, checked together, with the files they name read once.

use std::sync::Arc;

use super::error::{SettingsError, invalid};
use super::groups::{
    EvalModelArg, HttpSettings, LogFormat, ModelSettings, OutputFormat, Settings, TunerArg,
    TuningModeArg, ValidateArgs, VertexSettings,
};
use super::parse::read_setting_file;
use crate::convert::{Converter, Templates};
use crate::inventory::Rules;
use crate::locations::Hosts;
use crate::modality::Modality;
use crate::run;
use crate::tuner::{self, Tuner, TunerKind, TuningMode, job, vertex};
use crate::validate::{self, ModelTable};

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

impl From<LogFormat> for crate::logging::Format {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Auto => Self::Auto,
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
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

/// The built-in model table, with the entries of `file` (`MODEL_LIMITS_FILE)`: a regular file of
/// at most 1 MiB, never a kernel or device file (`/dev/zero`).
pub fn model_table(file: Option<&std::path::Path>) -> Result<ModelTable, SettingsError> {
    let Some(path) = file else {
        return Ok(ModelTable::built_in());
    };
    ModelTable::with_file(path, super::read_setting_file(path)).map_err(|e| {
        let text = e.to_string();
        let text = text.strip_prefix("MODEL_LIMITS_FILE ").unwrap_or(&text);
        invalid("MODEL_LIMITS_FILE", text)
    })
}

impl ModelSettings {
    /// The model table, with MODEL_LIMITS_FILE's entries; the file is read once, however many
    /// components ask.
    pub fn table(&self) -> Result<ModelTable, SettingsError> {
        if let Some(table) = self.table.get() {
            return Ok(table.clone());
        }
        let table = model_table(self.model_limits_file.as_deref())?;
        Ok(self.table.get_or_init(|| table).clone())
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
            export_last_checkpoint_only: self.eval.eval_checkpoints.export_last_only(),
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
        let shape = super::shape::digest(self, templates_text.as_deref());
        Ok(run::Config {
            bucket: self.bucket_name.clone(),
            jsonl_folder: self.jsonl_folder.clone(),
            model_meta_folder: self.model_meta_folder.clone(),
            train_file: self.train_file.clone(),
            val_file: self.val_file.clone(),
            min_samples: self.min_samples,
            split_ratio: self.split_ratio,
            near_duplicates: self.near_duplicate_threshold.0,
            split_seed: self.split_seed.clone(),
            resplit: self.resplit,
            full_rebuild: self.full_rebuild,
            read_ahead: !self.no_read_ahead,
            rules: self.rules(),
            converter: Arc::new(converter),
            read_concurrency: self.read_concurrency.map(usize::from),
            max_text_bytes: self.max_text_bytes,
            max_bytes_in_flight: self.max_bytes_in_flight,
            personal_data: self.personal_data.mode(),
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
            checkpoints: e.eval_checkpoints,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{parse_err, settings};
    use super::*;

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
}
