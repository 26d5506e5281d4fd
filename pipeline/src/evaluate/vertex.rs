//! Vertex AI behind the [`Model`] seam, and Google's own metrics (`evaluateInstances`).
//!
//! Every URL comes from [`Hosts`]: a resource is called on the host of the location its name
//! carries (regional, `us`/`eu` multi-region, or global). Which location that is, is the model
//! table's business (`validate::models`), applied by the contestants.
//!
//! * [`Vertex::tuned`]: a tuned model through its endpoint,
//!   `POST {host}/v1/projects/{p}/locations/{l}/endpoints/{e}:generateContent`, given the names
//!   it may answer under in the order to try them (Google does not say whether a tuned
//!   Gemini 3 endpoint is named under its tuning region or its multi-region). A 404 moves on
//!   to the next name; the first that answers is kept for every later call and reported by
//!   [`Model::serving`]. [`Vertex::endpoint`] is one name.
//! * With a not-found window ([`Vertex::candidate`], [`VertexModel::with_not_found_window`]),
//!   a freshly tuned model whose every name answers 404 is tried again (back-off with jitter)
//!   until the window has passed: its endpoint may still be deploying after its job succeeded.
//! * [`Vertex::publisher_model`]: a base model through its publisher path,
//!   `POST {host}/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`
//!   (the champion of a first run), in the location the caller chose.
//! * [`GoogleMetrics`]: `POST {host}/v1/projects/{p}/locations/{l}:evaluateInstances` with
//!   `exactMatchInput` and `rougeInput` (rougeL), batched, for `EVAL_GOOGLE_METRICS`.
//!
//! HTTP, tokens, deadlines and back-off are the shared client core's ([`crate::client`]): every
//! call has the deadlines of [`Config::http`]; 429, 5xx, timeouts and broken connections are
//! retried by its policy (`generateContent` and `evaluateInstances` change nothing, so repeating
//! them is safe; a call whose answer was lost may be billed twice), and other 4xx are final. All
//! waiting is on `tokio::time`, so tests run the back-off and the not-found window on a paused
//! clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::Row;
use super::model::{Generation, Model, ModelError, Reply, reply_of, request_body};
use crate::client::{
    Auth, CLOUD_PLATFORM_SCOPE, Client, Credentials, Error, Failed, Idempotency, Options,
    RetryConfig,
};
use crate::locations::Hosts;

/// What the Vertex backends need, built by the settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// PROJECT_ID.
    pub project: String,
    /// LOCATION: where `evaluateInstances` is called, and a base model when no other
    /// location is asked for.
    pub location: String,
    /// Where calls go: Google's host for each resource's location, or VERTEX_API_ENDPOINT.
    pub hosts: Hosts,
    /// Deadlines of each call, and the back-off of 429, 5xx and lost answers.
    pub http: Options,
    /// How long a candidate's endpoint may answer 404 before the evaluation fails.
    pub not_found_window: Duration,
}

impl Config {
    /// The default not-found window of a candidate's endpoint.
    pub const NOT_FOUND_WINDOW: Duration = Duration::from_secs(15 * 60);

    /// Back-off for inference: quota (429) storms on a shared base-model quota last minutes,
    /// so up to 10 retries within 10 minutes, 1 s doubling to 60 s, with jitter.
    pub fn inference_retry() -> RetryConfig {
        RetryConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retries: Some(10),
            deadline: Some(Duration::from_secs(10 * 60)),
        }
    }

    /// Default deadlines ([`Options::default`]) with [`Config::inference_retry`], and the
    /// default not-found window.
    pub fn new(project: &str, location: &str, hosts: Hosts) -> Self {
        Self {
            project: project.to_owned(),
            location: location.to_owned(),
            hosts,
            http: Options {
                retry: Self::inference_retry(),
                ..Options::default()
            },
            not_found_window: Self::NOT_FOUND_WINDOW,
        }
    }
}

/// Makes the Vertex models and the metrics client of one evaluation, sharing one HTTP client.
#[derive(Debug, Clone)]
pub struct Vertex {
    client: Arc<Client>,
    config: Config,
}

/// Whether `name` is `projects/{p}/locations/{l}/endpoints/{e}`.
fn is_endpoint(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    matches!(
        parts[..],
        ["projects", p, "locations", l, "endpoints", e]
            if !p.is_empty() && !l.is_empty() && !e.is_empty()
    )
}

impl Vertex {
    /// Credentials are opened on first use.
    pub fn new(config: Config, credentials: Credentials) -> Result<Self, ModelError> {
        if config.project.is_empty() {
            return Err(ModelError::Unavailable {
                model: "Vertex AI".to_owned(),
                message: "evaluation on Vertex AI needs PROJECT_ID".to_owned(),
            });
        }
        let client = Client::new(
            config.http.clone(),
            Auth::Bearer {
                credentials: Arc::new(credentials),
                scope: CLOUD_PLATFORM_SCOPE,
            },
        )
        .map_err(|e| ModelError::Unavailable {
            model: "Vertex AI".to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self {
            client: Arc::new(client),
            config,
        })
    }

    /// A tuned model's endpoint (`projects/{p}/locations/{l}/endpoints/{e}`, as in
    /// `tunedModel.endpoint`); a 404 is final.
    pub fn endpoint(&self, endpoint: &str) -> Result<VertexModel, ModelError> {
        self.tuned(endpoint, &[endpoint.to_owned()])
    }

    /// A tuned model known as `name` (its endpoint as the tuning job reported it), called
    /// under `candidates` in turn until one answers; a 404 from all of them is final.
    pub fn tuned(&self, name: &str, candidates: &[String]) -> Result<VertexModel, ModelError> {
        if let Some(bad) = std::iter::once(name)
            .chain(candidates.iter().map(String::as_str))
            .find(|n| !is_endpoint(n))
        {
            return Err(ModelError::Unavailable {
                model: bad.to_owned(),
                message:
                    "not an endpoint name (projects/{project}/locations/{location}/endpoints/{id})"
                        .to_owned(),
            });
        }
        if candidates.is_empty() {
            return Err(ModelError::Unavailable {
                model: name.to_owned(),
                message: "no location to call it in".to_owned(),
            });
        }
        Ok(self.model(name.to_owned(), candidates))
    }

    /// The candidate's endpoint: as [`Vertex::endpoint`], with 404 retried for
    /// [`Config::not_found_window`].
    pub fn candidate(&self, endpoint: &str) -> Result<VertexModel, ModelError> {
        Ok(self
            .endpoint(endpoint)?
            .with_not_found_window(Some(self.config.not_found_window)))
    }

    /// The not-found window of candidates.
    pub fn not_found_window(&self) -> Duration {
        self.config.not_found_window
    }

    /// A Google base model (`gemini-2.5-flash`) through its publisher path in LOCATION; a 404
    /// is final.
    pub fn publisher_model(&self, model: &str) -> Result<VertexModel, ModelError> {
        self.publisher_model_in(model, &self.config.location)
    }

    /// A Google base model through its publisher path in `location` (a region, `us`, `eu` or
    /// `global`); a 404 is final.
    pub fn publisher_model_in(
        &self,
        model: &str,
        location: &str,
    ) -> Result<VertexModel, ModelError> {
        if model.is_empty() || model.contains(['/', '?', '#', ':']) {
            return Err(ModelError::Unavailable {
                model: model.to_owned(),
                message: "not a base model ID (e.g. gemini-2.5-flash)".to_owned(),
            });
        }
        let name = format!(
            "projects/{}/locations/{location}/publishers/google/models/{model}",
            self.config.project
        );
        Ok(self.model(name.clone(), &[name]))
    }

    fn model(&self, name: String, candidates: &[String]) -> VertexModel {
        VertexModel {
            targets: candidates
                .iter()
                .map(|n| Target {
                    url: self.config.hosts.url(&format!("{n}:generateContent")),
                    name: n.clone(),
                })
                .collect(),
            name,
            chosen: Arc::new(AtomicUsize::new(NONE)),
            client: self.client.clone(),
            not_found_window: None,
        }
    }

    /// Google's exact match and ROUGE-L, in batches of [`GoogleMetrics::BATCH`].
    pub fn google_metrics(&self) -> GoogleMetrics {
        GoogleMetrics {
            client: self.client.clone(),
            url: self.config.hosts.url(&format!(
                "projects/{}/locations/{}:evaluateInstances",
                self.config.project, self.config.location
            )),
            batch: GoogleMetrics::BATCH,
        }
    }
}

/// No target has answered yet.
const NONE: usize = usize::MAX;

/// One name a model may answer under, and its URL.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    url: String,
}

/// A Gemini model on Vertex AI answering through `generateContent`.
#[derive(Debug, Clone)]
pub struct VertexModel {
    client: Arc<Client>,
    /// The resource name it is known by (`projects/…/endpoints/…` as the tuning job named
    /// it, or `projects/…/publishers/google/models/…`).
    name: String,
    /// The names it may answer under, in the order they are tried.
    targets: Vec<Target>,
    /// The target that answered first; every later call goes there.
    chosen: Arc<AtomicUsize>,
    not_found_window: Option<Duration>,
}

impl VertexModel {
    /// Retries a 404 for `window` (`None`: a 404 is final).
    #[must_use]
    pub fn with_not_found_window(mut self, window: Option<Duration>) -> Self {
        self.not_found_window = window;
        self
    }

    fn error(&self, failed: &Failed) -> ModelError {
        let model = self.name.clone();
        match &failed.error {
            Error::Status { status: 404, .. } => ModelError::NotFound {
                model,
                waited: Duration::ZERO,
                message: failed.error.message(),
            },
            Error::Status { status, .. } if !crate::client::retry::transient_status(*status) => {
                ModelError::Refused {
                    model,
                    status: *status,
                    message: google_message(&failed.error),
                }
            }
            Error::Auth {
                transient: false, ..
            }
            | Error::Invalid { .. } => ModelError::Unavailable {
                model,
                message: failed.error.to_string(),
            },
            _ => ModelError::Exhausted {
                model,
                attempts: failed.attempts,
                message: failed.error.to_string(),
            },
        }
    }

    /// One round over the targets (only the chosen one once one has answered): the first
    /// answer, or the 404s of every target, or another error.
    async fn round(&self, body: &Value, what: &str) -> Result<Result<Reply, String>, ModelError> {
        let chosen = self.chosen.load(Ordering::Acquire);
        let order: Vec<usize> = if chosen == NONE {
            (0..self.targets.len()).collect()
        } else {
            vec![chosen]
        };
        let mut not_found = Vec::new();
        for i in order {
            let target = &self.targets[i];
            let sent = self
                .client
                .send(what, Idempotency::Idempotent, || {
                    self.client.request(Method::POST, &target.url).json(body)
                })
                .await;
            match sent {
                Ok(answer) => {
                    let response: Value = answer.json().map_err(|e| ModelError::Unavailable {
                        model: self.name.clone(),
                        message: e.to_string(),
                    })?;
                    if chosen == NONE && self.targets.len() > 1 {
                        tracing::info!(model = %self.name, serving = %target.name, "the model answers here; every later call goes there");
                    }
                    self.chosen.store(i, Ordering::Release);
                    return Ok(Ok(reply_of(&response)));
                }
                Err(failed) => match self.error(&failed) {
                    ModelError::NotFound { message, .. } => {
                        not_found.push(format!("{}: {message}", target.name));
                    }
                    other => return Err(other),
                },
            }
        }
        Ok(Err(not_found.join("; ")))
    }
}

/// Google's status name and message (`INVALID_ARGUMENT: …`).
fn google_message(e: &Error) -> String {
    let status = e
        .google_error()
        .and_then(|g| g["status"].as_str().map(str::to_owned));
    match status {
        Some(s) => format!("{s}: {}", e.message()),
        None => e.message(),
    }
}

#[async_trait]
impl Model for VertexModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn serving(&self) -> Option<String> {
        let chosen = self.chosen.load(Ordering::Acquire);
        self.targets.get(chosen).map(|t| t.name.clone())
    }

    async fn generate(&self, row: &Row, config: &Generation) -> Result<Reply, ModelError> {
        let body = request_body(row, config);
        let what = format!("generateContent on {}", self.name);
        // The window's waits: 5 s doubling to a minute, with jitter, none starting past the end.
        let mut window = self.not_found_window.map(|w| {
            RetryConfig {
                min_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(60),
                max_retries: None,
                deadline: Some(w),
            }
            .backoff()
        });
        loop {
            let message = match self.round(&body, &what).await? {
                Ok(reply) => return Ok(reply),
                Err(message) => message,
            };
            let model = self.name.clone();
            let Some(backoff) = window.as_mut() else {
                return Err(ModelError::NotFound {
                    model,
                    waited: Duration::ZERO,
                    message,
                });
            };
            let Some(delay) = backoff.next_delay(None) else {
                return Err(ModelError::NotFound {
                    model,
                    waited: backoff.elapsed(),
                    message,
                });
            };
            tracing::info!(
                model = %model,
                delay = %humantime::format_duration(Duration::from_secs(delay.as_secs())),
                "the candidate's endpoint is not found yet (it may still be deploying); waiting"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Means of Google's metrics over a list of (prediction, reference).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoogleMeans {
    /// Mean of `exactMatchResults.exactMatchMetricValues[].score` (each 1 or 0).
    pub exact_match: f64,
    /// Mean of `rougeResults.rougeMetricValues[].score` with `rougeType: rougeL`.
    pub rouge_l: f64,
    pub instances: usize,
    /// `evaluateInstances` calls made.
    pub calls: usize,
}

/// `evaluateInstances` for the computation-based metrics (exact match, ROUGE-L).
#[derive(Debug, Clone)]
pub struct GoogleMetrics {
    client: Arc<Client>,
    url: String,
    batch: usize,
}

impl GoogleMetrics {
    /// Instances per request. The discovery document and Google's pages state no limit on
    /// `instances` [UNVERIFIED live], and Google's Python SDK sends one instance per call; 100
    /// keeps a request far below any plausible size limit while making 1,000 rows 20 calls.
    pub const BATCH: usize = 100;

    /// Sends at most `n` instances per request (at least 1).
    #[must_use]
    pub fn with_batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Google's exact match and ROUGE-L for each (prediction, reference), averaged. A blocked or
    /// empty answer is passed as an empty prediction.
    pub async fn means(&self, pairs: &[(String, String)]) -> Result<GoogleMeans, ModelError> {
        let mut exact = 0.0;
        let mut rouge = 0.0;
        let mut calls = 0;
        for chunk in pairs.chunks(self.batch) {
            let instances: Vec<Value> = chunk
                .iter()
                .map(|(p, r)| json!({ "prediction": p, "reference": r }))
                .collect();
            let em = self
                .call(
                    &json!({ "exactMatchInput": { "metricSpec": {}, "instances": instances } }),
                    "exactMatchResults",
                    "exactMatchMetricValues",
                    chunk.len(),
                )
                .await?;
            let rl = self
                .call(
                    &json!({ "rougeInput": { "metricSpec": { "rougeType": "rougeL" }, "instances": instances } }),
                    "rougeResults",
                    "rougeMetricValues",
                    chunk.len(),
                )
                .await?;
            calls += 2;
            exact += em;
            rouge += rl;
        }
        let n = pairs.len();
        let mean = |sum: f64| if n == 0 { 0.0 } else { sum / n as f64 };
        Ok(GoogleMeans {
            exact_match: mean(exact),
            rouge_l: mean(rouge),
            instances: n,
            calls,
        })
    }

    /// One request; the sum of its `score`s (a score of 0 may be left out, as proto3 JSON does).
    async fn call(
        &self,
        body: &Value,
        results: &str,
        values: &str,
        expected: usize,
    ) -> Result<f64, ModelError> {
        let model = "Vertex AI evaluateInstances".to_owned();
        let answer = self
            .client
            .send("evaluateInstances", Idempotency::Idempotent, || {
                self.client.request(Method::POST, &self.url).json(body)
            })
            .await
            .map_err(|f| match &f.error {
                Error::Status { status, .. }
                    if !crate::client::retry::transient_status(*status) =>
                {
                    ModelError::Refused {
                        model: model.clone(),
                        status: *status,
                        message: google_message(&f.error),
                    }
                }
                _ => ModelError::Exhausted {
                    model: model.clone(),
                    attempts: f.attempts,
                    message: f.error.to_string(),
                },
            })?;
        let response: Value = answer.json().map_err(|e| ModelError::Unavailable {
            model: model.clone(),
            message: e.to_string(),
        })?;
        let scores = response[results][values]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if scores.len() != expected {
            return Err(ModelError::Unavailable {
                model,
                message: format!(
                    "{results}.{values} has {} scores for {expected} instances",
                    scores.len()
                ),
            });
        }
        Ok(scores
            .iter()
            .map(|s| s["score"].as_f64().unwrap_or(0.0))
            .sum())
    }
}
