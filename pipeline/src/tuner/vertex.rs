//! The Vertex AI tuner (TUNER=vertex): REST calls to `projects.locations.tuningJobs`
//! (`pipeline/tests/contracts/GOOGLE-APIS.md` §1).
//!
//! * [`Tuner::submit`] creates the job. A create is retried only while no job can exist yet
//!   (refused connection, 429, 503). When its outcome is unknown (a timeout, another 5xx) the
//!   job is first looked up by its run-key label, so a retry never tunes the same data twice.
//! * [`Tuner::find`] looks for a job carrying that label, to re-attach after a crash or a Cloud
//!   Run retry. It lists every job of the location, page by page, and matches the label here:
//!   `tuningJobs.list` takes "the standard list filter" (aiplatform.v1 discovery document) but
//!   Google documents no filter fields for it, and a server that refused a label filter, or
//!   accepted it and matched nothing, would make a lost create's job invisible and start a
//!   second paid job.
//! * [`Tuner::follow`] polls `get` every `POLL_INTERVAL` (429 and 5xx retried with backoff and
//!   jitter), logs state changes, and cancels the job once `MAX_TUNING_DURATION` has passed.
//!
//! HTTP, tokens, deadlines and the back-off policy are the shared Google client core's
//! ([`crate::client`]); what is specific here is which failures of a create may have made a job.
//! All waiting goes through `tokio::time`, so tests run polls and back-off on a paused clock.

mod api;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::time::{Instant, sleep};

use super::{Tuned, Tuner, TunerError, TunerKind, job};
use crate::client::{Credentials, Options, RetryConfig};
use crate::locations::Hosts;
use crate::status::RunStatus;
use api::{Api, Failure};

/// What the Vertex tuner needs, built by the settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// PROJECT_ID.
    pub project: String,
    pub location: String,
    /// Where calls go: Google's host for each resource's location, or VERTEX_API_ENDPOINT.
    pub hosts: Hosts,
    /// Regions whose busy jobs count towards the project's concurrent tuning quota, which
    /// Google counts globally (TUNING_QUOTA_REGIONS; LOCATION among them).
    pub quota_regions: Vec<String>,
    /// SOURCE_MODEL, named in errors when the model is refused.
    pub source_model: String,
    pub poll_interval: Duration,
    pub max_tuning_duration: Duration,
    /// Deadlines of each call (HTTP_CONNECT_TIMEOUT, HTTP_TIMEOUT); creates, lists and polls
    /// keep their own retry policies.
    pub http: crate::client::Options,
}

/// States a job can still reach SUCCEEDED from, or SUCCEEDED itself: a job in one of them is
/// adopted rather than created again.
const REATTACH: &[&str] = &[
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_PAUSED",
    "JOB_STATE_UPDATING",
    "JOB_STATE_SUCCEEDED",
];

const TERMINAL: &[&str] = &[
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
];

/// States of a job that holds a slot of the project's concurrent tuning quota.
const BUSY: &[&str] = &[
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_PAUSED",
    "JOB_STATE_UPDATING",
    "JOB_STATE_CANCELLING",
];

/// The label that carries the run key (see [`job::Request::build`]).
const RUN_KEY_LABEL: &str = "autotune_run_key";

/// Pages of 100 jobs read when looking for a run key's job.
const MAX_LIST_PAGES: usize = 1000;

/// The Vertex AI tuner.
pub struct Vertex {
    api: Api,
    /// Where each resource is called.
    hosts: Hosts,
    /// `{root}/v1/projects/{p}/locations/{l}/tuningJobs`.
    jobs_url: String,
    /// The jobs URL of every region whose jobs count towards the quota.
    quota_urls: Vec<String>,
    source_model: String,
    poll_interval: Duration,
    max_duration: Duration,
    /// Create and list: a few minutes of tries.
    backoff: RetryConfig,
    /// Polls: a job runs for hours, so an outage of a quarter of an hour is waited out.
    poll_backoff: RetryConfig,
    /// One create at a time in this process, so concurrent callers with the same run key see
    /// each other's job instead of racing (across processes the run lock does this).
    submitting: tokio::sync::Mutex<()>,
    /// The wall clock the watchdog compares a job's `createTime` with.
    now: fn() -> chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for Vertex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vertex")
            .field("jobs_url", &self.jobs_url)
            .field("poll_interval", &self.poll_interval)
            .field("max_duration", &self.max_duration)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl Vertex {
    /// Credentials are chosen now from the environment and opened on first use.
    pub fn new(config: Config) -> Result<Self, TunerError> {
        if config.project.is_empty() {
            return Err(TunerError::Unavailable(
                "TUNER=vertex needs PROJECT_ID (the Google Cloud project to tune in)".to_owned(),
            ));
        }
        let backoff = RetryConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retries: Some(8),
            deadline: None,
        };
        // HTTP_CONNECT_TIMEOUT and HTTP_TIMEOUT; creates and lists keep their own retries
        // (a create is retried only while no job can exist).
        let options = Options {
            retry: backoff,
            ..config.http.clone()
        };
        let api = Api::new(Credentials::from_env(), options).map_err(TunerError::Unavailable)?;
        let jobs_url =
            |location: &str| job::Template::jobs_url(&config.hosts, &config.project, location);
        let mut quota_urls: Vec<String> =
            config.quota_regions.iter().map(|r| jobs_url(r)).collect();
        quota_urls.push(jobs_url(&config.location));
        quota_urls.sort();
        quota_urls.dedup();
        Ok(Self {
            api,
            jobs_url: jobs_url(&config.location),
            quota_urls,
            hosts: config.hosts,
            source_model: config.source_model,
            poll_interval: config.poll_interval,
            max_duration: config.max_tuning_duration,
            backoff,
            poll_backoff: RetryConfig {
                min_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(120),
                max_retries: None,
                deadline: Some(Duration::from_secs(15 * 60)),
            },
            submitting: tokio::sync::Mutex::new(()),
            now: chrono::Utc::now,
        })
    }

    /// Calls `visit` on every tuning job of the location, page by page (no filter: Google
    /// documents none for `tuningJobs.list`). Returns whether the listing was complete; a page
    /// token that never ends is cut off after [`MAX_LIST_PAGES`] pages.
    async fn each_job(
        &self,
        jobs_url: &str,
        why: &str,
        mut visit: impl FnMut(&Value),
    ) -> Result<bool, TunerError> {
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut query = vec![("pageSize", "100")];
            if let Some(t) = &page_token {
                query.push(("pageToken", t));
            }
            let page = self
                .idempotent(Method::GET, jobs_url, &query, &self.backoff)
                .await
                .map_err(|f| TunerError::Failed {
                    message: format!("could not list the tuning jobs to {why}: {}", f.describe()),
                    model_details: json!({ "error": f.error_object() }),
                })?;
            for j in page["tuningJobs"].as_array().into_iter().flatten() {
                visit(j);
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => page_token = Some(t.to_owned()),
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Uses `now` as the wall clock that a job's age is measured with (tests on a paused tokio
    /// clock pair it with the fake's creation time).
    #[must_use]
    pub fn with_clock(mut self, now: fn() -> chrono::DateTime<chrono::Utc>) -> Self {
        self.now = now;
        self
    }

    /// Uses `provider` for tokens instead of the environment's credentials.
    #[must_use]
    pub fn with_token_provider(self, provider: Arc<dyn crate::client::TokenProvider>) -> Self {
        self.with_credentials(Credentials::given(provider))
    }

    /// Uses `credentials` instead of the environment's (Application Default Credentials).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        if let Err(e) = self.api.set_credentials(credentials) {
            tracing::error!(error = %e, "could not rebuild the Vertex AI client");
        }
        self
    }

    /// Bounds each HTTP call (HTTP_TIMEOUT by default). `None` runs no timer during a call, for tests
    /// on a paused clock, where any pending timer fires as soon as the runtime waits on a socket.
    pub fn with_http_timeout(self, timeout: Option<Duration>) -> Result<Self, TunerError> {
        let options = self.api.options().clone().with_timeout(timeout);
        self.with_client_options(options)
    }

    /// The deadlines of each HTTP call, and the retry policy of create and list (polls keep
    /// their own, longer one).
    pub fn with_client_options(mut self, options: Options) -> Result<Self, TunerError> {
        self.backoff = options.retry;
        self.api
            .set_options(options)
            .map_err(TunerError::Unavailable)?;
        Ok(self)
    }

    /// A safe-to-repeat call, retried on what the client core classifies as transient.
    async fn idempotent(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        backoff: &RetryConfig,
    ) -> Result<Value, Failure> {
        let body = (method == Method::POST).then(|| json!({}));
        self.api
            .call_idempotent(method, url, query, body.as_ref(), backoff)
            .await
    }

    /// The error of a refused create, naming `SOURCE_MODEL` when the model is the problem.
    fn create_error(&self, request: &job::Request, f: &Failure, attempts: usize) -> TunerError {
        let error = f.error_object();
        let mut details = json!({ "error": error });
        if let Some(http) = f.http() {
            details["http_status"] = http.into();
        }
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        let message = if let Some(parent) = &request.body.pre_tuned_model {
            if model_refused(f, &parent.tuned_model_name) {
                format!(
                    "Vertex AI cannot continue tuning from the previous run's model {:?} (TUNING_MODE=continuous); \
                     set TUNING_MODE=full to tune SOURCE_MODEL instead: {}",
                    parent.tuned_model_name,
                    f.describe()
                )
            } else {
                format!("Vertex AI refused the tuning job{tries}: {}", f.describe())
            }
        } else {
            let model = request
                .body
                .base_model
                .as_deref()
                .unwrap_or(&self.source_model);
            if model_refused(f, model) {
                format!(
                    "Vertex AI does not know the model {model:?} or cannot tune it; set SOURCE_MODEL to a \
                     tunable Gemini model (e.g. gemini-3.5-flash): {}",
                    f.describe()
                )
            } else {
                format!("Vertex AI refused the tuning job{tries}: {}", f.describe())
            }
        };
        tracing::error!(url = %request.url, "{message}");
        TunerError::Failed {
            message,
            model_details: details,
        }
    }

    /// Cancels a job that ran past `MAX_TUNING_DURATION` and reports it as timed out.
    async fn time_out(&self, name: &str, last: &Value) -> Tuned {
        let limit = humantime::format_duration(self.max_duration);
        tracing::error!(job = %name, %limit, "the tuning job ran past MAX_TUNING_DURATION; cancelling it");
        let cancel_url = self.hosts.url(&format!("{name}:cancel"));
        let cancel = self
            .idempotent(Method::POST, &cancel_url, &[], &self.backoff)
            .await;
        // Cancelling is asynchronous; one more read records where the job is now.
        let job = match &cancel {
            Ok(_) => self
                .api
                .call(Method::GET, &self.hosts.url(name), &[], None::<&Value>)
                .await
                .unwrap_or_else(|_| last.clone()),
            Err(_) => last.clone(),
        };
        let mut details = details_of(name, &job);
        if let Some(job_error) = details.remove("error") {
            details.insert("job_error".to_owned(), job_error);
        }
        details.insert("timed_out".to_owned(), true.into());
        details.insert("cancelled".to_owned(), cancel.is_ok().into());
        let mut message = format!(
            "the tuning job did not finish within MAX_TUNING_DURATION ({limit}) and was cancelled"
        );
        if let Err(f) = &cancel {
            tracing::error!(job = %name, error = %f.describe(), "could not cancel the tuning job");
            message = format!(
                "the tuning job did not finish within MAX_TUNING_DURATION ({limit}); cancelling it failed: {}",
                f.describe()
            );
            details.insert("cancel_error".to_owned(), f.error_object());
        }
        details.insert("error".to_owned(), json!({ "message": message }));
        Tuned {
            status: RunStatus::Failed,
            model_details: Value::Object(details),
        }
    }
}

/// Whether a refused create is about `model`: a 400 or 404 that names it or a model field, and
/// says it is unknown or unsupported.
fn model_refused(f: &Failure, model: &str) -> bool {
    let Failure::Status {
        http: http @ (400 | 404),
        error,
    } = f
    else {
        return false;
    };
    let text = api::describe_error(error).to_lowercase();
    let model = model.to_lowercase();
    let short = model.rsplit('/').next().unwrap_or(&model);
    let names_it = text.contains(&model) || text.contains(short);
    let model_field = api::field_violations(error).any(|v| {
        v["field"].as_str().is_some_and(|field| {
            field.contains("base_model")
                || field.contains("pre_tuned_model")
                || field.contains("baseModel")
        })
    });
    let refuses = [
        "not found",
        "unknown",
        "not supported",
        "unsupported",
        "does not exist",
        "not tunable",
        "cannot be tuned",
        "not available",
        "no access",
        "does not have access",
        "invalid",
    ]
    .iter()
    .any(|p| text.contains(p));
    model_field || (names_it && refuses) || (*http == 404 && text.contains("model"))
}

/// What the run record keeps of a job: name, state, tuned model and endpoint, data stats, and
/// Google's error word for word.
fn details_of(name: &str, job: &Value) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert(
        "tuning_job".to_owned(),
        job["name"].as_str().unwrap_or(name).into(),
    );
    d.insert("state".to_owned(), job["state"].clone());
    for (key, value) in [
        ("tuned_model", &job["tunedModel"]["model"]),
        ("endpoint", &job["tunedModel"]["endpoint"]),
        ("base_model", &job["baseModel"]),
        ("pre_tuned_model", &job["preTunedModel"]["tunedModelName"]),
        ("create_time", &job["createTime"]),
        ("start_time", &job["startTime"]),
        ("end_time", &job["endTime"]),
    ] {
        if let Some(s) = value.as_str() {
            d.insert(key.to_owned(), s.into());
        }
    }
    // Every checkpoint with its endpoint (a job that kept intermediate checkpoints), each a
    // contestant of the evaluation (`evaluate::checkpoints`).
    let checkpoints = crate::evaluate::checkpoints::Checkpoint::of_job(&job["tunedModel"]);
    if !checkpoints.is_empty() {
        d.insert(
            crate::evaluate::checkpoints::DETAILS_KEY.to_owned(),
            serde_json::to_value(&checkpoints).unwrap_or_default(),
        );
    }
    let stats = &job["tuningDataStats"]["supervisedTuningDataStats"];
    let mut kept = Map::new();
    for key in [
        "tuningDatasetExampleCount",
        "totalBillableTokenCount",
        "totalTruncatedExampleCount",
    ] {
        // int64 travels as a string in proto3 JSON; the record keeps numbers.
        let n = match &stats[key] {
            Value::String(s) => s.parse::<u64>().ok(),
            v => v.as_u64(),
        };
        if let Some(n) = n {
            kept.insert(key.to_owned(), n.into());
        }
    }
    if !kept.is_empty() {
        d.insert("tuning_data_stats".to_owned(), Value::Object(kept));
    }
    if job["error"].is_object() {
        d.insert("error".to_owned(), job["error"].clone());
    }
    d
}

/// The outcome of a job in a terminal state. `PARTIALLY_SUCCEEDED` counts as failed: its model
/// must not become the baseline of the next delta.
fn finished(name: &str, job: &Value) -> Tuned {
    let state = job["state"].as_str().unwrap_or_default();
    let mut details = details_of(name, job);
    let status = if state == "JOB_STATE_SUCCEEDED" {
        RunStatus::Success
    } else {
        let error = details
            .entry("error")
            .or_insert_with(|| json!({ "message": format!("the tuning job ended in {state}") }));
        tracing::error!(job = %name, %state, error = %api::describe_error(error), "the tuning job did not succeed");
        RunStatus::Failed
    };
    if status == RunStatus::Success {
        let tuned_model = details
            .get("tuned_model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let endpoint = details
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default();
        tracing::info!(job = %name, %tuned_model, %endpoint, "the tuning job succeeded");
    }
    Tuned {
        status,
        model_details: Value::Object(details),
    }
}

/// Of the jobs for one run key, the one every caller adopts: a succeeded one first, then the
/// oldest, so that callers who raced still converge on the same job.
fn pick(mut jobs: Vec<Value>) -> Option<String> {
    jobs.sort_by(|a, b| {
        let done = |j: &Value| j["state"] != "JOB_STATE_SUCCEEDED";
        let key = |j: &Value| {
            (
                done(j),
                j["createTime"].as_str().unwrap_or_default().to_owned(),
                j["name"].as_str().unwrap_or_default().to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    jobs.into_iter()
        .find_map(|j| j["name"].as_str().map(str::to_owned))
}

fn lost(name: &str, f: &Failure) -> TunerError {
    TunerError::Failed {
        message: format!("could not read the tuning job {name}: {}", f.describe()),
        model_details: json!({ "tuning_job": name, "error": f.error_object() }),
    }
}

#[async_trait]
impl Tuner for Vertex {
    fn kind(&self) -> TunerKind {
        TunerKind::Vertex
    }

    async fn find(&self, run_key: &str) -> Result<Option<String>, TunerError> {
        let label = job::label_value(run_key);
        let mut found = Vec::new();
        let complete = self
            .each_job(&self.jobs_url, "look for this run key's", |j| {
                let ours = j["labels"][RUN_KEY_LABEL].as_str() == Some(label.as_str());
                let alive = j["state"].as_str().is_some_and(|s| REATTACH.contains(&s));
                if ours && alive {
                    found.push(j.clone());
                } else if ours {
                    tracing::info!(job = %j["name"].as_str().unwrap_or_default(), state = %j["state"].as_str().unwrap_or_default(), "an earlier job for this run key ended without success; not adopting it");
                }
            })
            .await?;
        match pick(found) {
            Some(name) => Ok(Some(name)),
            None if complete => Ok(None),
            None => Err(TunerError::Failed {
                message: format!(
                    "the tuning jobs of {} fill more than {MAX_LIST_PAGES} pages; could not make sure no job exists for this run key",
                    self.jobs_url
                ),
                model_details: json!({}),
            }),
        }
    }

    async fn busy(&self) -> Result<Vec<String>, TunerError> {
        // Google's concurrent tuning quota is global: "a global quota, shared across all
        // available regions and supported models" (supervised-tuning page, 2026-09-25), so the
        // jobs of every tuning region count.
        let mut busy = Vec::new();
        for url in &self.quota_urls {
            self.each_job(url, "count the running ones", |j| {
                if j["state"].as_str().is_some_and(|s| BUSY.contains(&s))
                    && let Some(name) = j["name"].as_str()
                {
                    busy.push(name.to_owned());
                }
            })
            .await?;
        }
        busy.sort();
        busy.dedup();
        Ok(busy)
    }

    async fn submit(&self, request: &job::Request) -> Result<String, TunerError> {
        let _one_at_a_time = self.submitting.lock().await;
        if let Some(name) = self.find(&request.run_key).await? {
            tracing::info!(job = %name, "a tuning job for this run key exists already; adopting it");
            return Ok(name);
        }
        let mut delays = self.backoff.backoff();
        let mut maybe_created = false;
        let mut attempts = 0;
        loop {
            if maybe_created && let Some(name) = self.find(&request.run_key).await? {
                tracing::info!(job = %name, "the create whose answer was lost made the job; adopting it");
                return Ok(name);
            }
            attempts += 1;
            let failure = match self
                .api
                .call(Method::POST, &request.url, &[], Some(&request.body))
                .await
            {
                Ok(created) => {
                    return match created["name"].as_str() {
                        Some(name) => {
                            tracing::info!(job = %name, state = %created["state"], "tuning job created");
                            Ok(name.to_owned())
                        }
                        None => Err(TunerError::Failed {
                            message: format!(
                                "Vertex AI created a tuning job but its answer has no name: {created}"
                            ),
                            model_details: json!({ "created": created }),
                        }),
                    };
                }
                Err(f) => f,
            };
            maybe_created |= failure.maybe_created();
            if !failure.nothing_created() && !failure.maybe_created() {
                return Err(self.create_error(request, &failure, attempts));
            }
            let Some(delay) = delays.next_delay(None) else {
                return Err(self.create_error(request, &failure, attempts));
            };
            tracing::warn!(
                url = %request.url,
                error = %failure.describe(),
                delay = %humantime::format_duration(delay),
                lookup_first = maybe_created,
                "creating the tuning job failed; retrying"
            );
            sleep(delay).await;
        }
    }

    async fn check(&self, name: &str) -> Result<Option<Tuned>, TunerError> {
        let url = self.hosts.url(name);
        let job = self
            .idempotent(Method::GET, &url, &[], &self.poll_backoff)
            .await
            .map_err(|f| lost(name, &f))?;
        let state = job["state"].as_str().unwrap_or("JOB_STATE_UNSPECIFIED");
        if TERMINAL.contains(&state) {
            return Ok(Some(finished(name, &job)));
        }
        // The watchdog holds for detached jobs too: past MAX_TUNING_DURATION, cancel.
        let age = job["createTime"]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .and_then(|created| ((self.now)() - created).to_std().ok())
            .unwrap_or_default();
        if age >= self.max_duration {
            return Ok(Some(self.time_out(name, &job).await));
        }
        tracing::info!(job = %name, %state, "tuning job state");
        Ok(None)
    }

    async fn follow(&self, name: &str) -> Result<Tuned, TunerError> {
        let url = self.hosts.url(name);
        let mut deadline = None;
        let mut last_state = String::new();
        loop {
            let job = self
                .idempotent(Method::GET, &url, &[], &self.poll_backoff)
                .await
                .map_err(|f| lost(name, &f))?;
            // MAX_TUNING_DURATION counts from the job's creation, not from when this run began
            // to follow it: a run that adopts a job must not restart the clock.
            let deadline = *deadline.get_or_insert_with(|| {
                let age = job["createTime"]
                    .as_str()
                    .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .and_then(|created| ((self.now)() - created).to_std().ok())
                    .unwrap_or_default();
                Instant::now() + self.max_duration.saturating_sub(age)
            });
            let state = job["state"].as_str().unwrap_or("JOB_STATE_UNSPECIFIED");
            if state != last_state {
                tracing::info!(job = %name, %state, "tuning job state");
                state.clone_into(&mut last_state);
            }
            if TERMINAL.contains(&state) {
                return Ok(finished(name, &job));
            }
            // One timer at a time: the watchdog is a deadline checked between polls, not a
            // timer racing the requests.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(self.time_out(name, &job).await);
            }
            sleep(self.poll_interval.min(left)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            project: "p".to_owned(),
            location: "us-east5".to_owned(),
            hosts: Hosts::google(),
            quota_regions: vec!["us-east5".to_owned()],
            source_model: "gemini-2.5-flash".to_owned(),
            poll_interval: Duration::from_secs(60),
            max_tuning_duration: Duration::from_secs(24 * 3600),
            http: Options::default(),
        }
    }

    fn template() -> job::Template {
        let c = config();
        job::Template {
            jobs_url: job::Template::jobs_url(&c.hosts, &c.project, &c.location),
            location: c.location.clone(),
            source_model: c.source_model,
            epochs: None,
            adapter_size: None,
            learning_rate_multiplier: None,
            display_name: "autotune-{run_id}".to_owned(),
            service_account: Some("sa@p.iam.gserviceaccount.com".to_owned()),
            export_last_checkpoint_only: false,
        }
    }

    fn status(http: u16, error: Value) -> Failure {
        Failure::Status { http, error }
    }

    #[test]
    fn the_request_follows_settings_and_continuous_mode() {
        let t = template();
        let mut r = job::Request::build(&t, "run-1", "abc", "gs://b/t.jsonl", None);
        assert_eq!(
            r.url,
            "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/tuningJobs"
        );
        let body = serde_json::to_value(&r.body).unwrap();
        assert_eq!(body["baseModel"], t.source_model.as_str());
        assert_eq!(body["serviceAccount"], "sa@p.iam.gserviceaccount.com");
        assert!(body.get("preTunedModel").is_none());
        r.continue_from("projects/p/locations/us-east5/models/1@2", None);
        let body = serde_json::to_value(&r.body).unwrap();
        assert!(body.get("baseModel").is_none());
        assert!(
            body.get("tunedModelDisplayName").is_none(),
            "a version under the parent, not a new model"
        );
        assert_eq!(
            body["preTunedModel"],
            json!({"tunedModelName": "projects/p/locations/us-east5/models/1@2"})
        );
        assert_ne!(r.run_key, "abc");
        assert_eq!(r.run_key.len(), 32);
        assert_eq!(body["labels"]["autotune_run_key"], r.run_key.as_str());
        let again = {
            let mut x = job::Request::build(&t, "run-2", "abc", "gs://b/t.jsonl", None);
            x.continue_from("projects/p/locations/us-east5/models/1@2", None);
            x.run_key
        };
        assert_eq!(
            again, r.run_key,
            "the same data and parent give the same key"
        );
    }

    #[test]
    fn create_failures_are_classified_by_whether_a_job_can_exist() {
        let e = || json!({});
        assert!(Failure::NotSent(String::new()).nothing_created());
        assert!(status(429, e()).nothing_created() && status(503, e()).nothing_created());
        for maybe in [
            Failure::NoAnswer(String::new()),
            status(500, e()),
            status(504, e()),
        ] {
            assert!(
                maybe.maybe_created() && !maybe.nothing_created(),
                "{maybe:?}"
            );
        }
        for final_ in [
            status(400, e()),
            status(403, e()),
            status(404, e()),
            Failure::Fatal(String::new()),
        ] {
            assert!(
                !final_.maybe_created() && !final_.nothing_created() && !final_.transient(),
                "{final_:?}"
            );
        }
        assert!(status(502, e()).transient() && status(429, e()).transient());
    }

    #[test]
    fn only_model_problems_name_the_model() {
        let err =
            |code: u16, message: &str| status(code, json!({"code": code, "message": message}));
        assert!(model_refused(
            &err(
                404,
                "Publisher Model `projects/p/locations/l/publishers/google/models/gemini-9` not found."
            ),
            "gemini-9"
        ));
        assert!(model_refused(
            &err(400, "Base model gemini-1.0-pro-002 is not supported."),
            "gemini-1.0-pro-002"
        ));
        assert!(model_refused(
            &err(400, "Base model gemini-9 is not supported."),
            "publishers/google/models/gemini-9"
        ));
        assert!(!model_refused(
            &err(
                400,
                "The adapter size is not supported for this base model."
            ),
            "gemini-2.5-flash"
        ));
        assert!(!model_refused(&err(500, "gemini-9 not found"), "gemini-9"));
        let violation = status(
            400,
            json!({"code": 400, "message": "Request contains an invalid argument.", "details": [{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "tuning_job.base_model", "description": "Unsupported."}]
            }]}),
        );
        assert!(model_refused(&violation, "whatever"));
        assert_eq!(
            violation.describe(),
            "HTTP 400: Request contains an invalid argument.; tuning_job.base_model: Unsupported."
        );
    }

    #[test]
    fn details_keep_numbers_and_googles_error() {
        let job = json!({
            "name": "projects/p/locations/l/tuningJobs/1",
            "state": "JOB_STATE_FAILED",
            "baseModel": "gemini-2.5-flash",
            "tuningDataStats": {"supervisedTuningDataStats": {
                "tuningDatasetExampleCount": "10", "totalBillableTokenCount": 7, "totalTruncatedExampleCount": "x"
            }},
            "error": {"code": 3, "message": "m", "details": [{"@type": "t", "k": "v"}]}
        });
        let t = finished("ignored", &job);
        assert_eq!(t.status, RunStatus::Failed);
        let d = &t.model_details;
        assert_eq!(d["tuning_job"], "projects/p/locations/l/tuningJobs/1");
        assert_eq!(
            d["tuning_data_stats"],
            json!({"tuningDatasetExampleCount": 10, "totalBillableTokenCount": 7})
        );
        assert_eq!(d["error"], job["error"]);
        let expired = finished("n", &json!({"state": "JOB_STATE_EXPIRED"}));
        assert_eq!(expired.status, RunStatus::Failed);
        assert!(
            expired.model_details["error"]["message"]
                .as_str()
                .unwrap()
                .contains("EXPIRED")
        );
        let partial = finished("n", &json!({"state": "JOB_STATE_PARTIALLY_SUCCEEDED"}));
        assert_eq!(partial.status, RunStatus::Failed);
    }

    #[test]
    fn callers_converge_on_one_job() {
        let j = |name: &str, state: &str, created: &str| json!({"name": name, "state": state, "createTime": created});
        let jobs = vec![
            j("b", "JOB_STATE_RUNNING", "2026-01-02T00:00:00Z"),
            j("a", "JOB_STATE_RUNNING", "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(pick(jobs.clone()).as_deref(), Some("a"), "the oldest");
        let mut with_done = jobs;
        with_done.push(j("c", "JOB_STATE_SUCCEEDED", "2026-01-03T00:00:00Z"));
        assert_eq!(
            pick(with_done).as_deref(),
            Some("c"),
            "a succeeded job first"
        );
        assert_eq!(pick(Vec::new()), None);
    }

    #[test]
    fn project_id_is_needed() {
        let mut c = config();
        c.project = String::new();
        let e = Vertex::new(c).unwrap_err();
        assert!(e.to_string().contains("PROJECT_ID"), "{e}");
    }
}
