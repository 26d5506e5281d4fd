//! Notifications: what happened to a run (tuning submitted, succeeded or failed; the candidate
//! blessed or not; a champion promoted or rolled back), told to people and machines.
//!
//! Every [`Notice`] is, in this order:
//!
//! * one structured log line (`tracing::info!` with the fields `event`, `run_id` and `status`),
//!   whether or not a sink is configured. On Cloud Run the JSON log line becomes a Cloud
//!   Logging entry whose `jsonPayload.event` a log-based alert can match;
//! * a Pub/Sub message on `NOTIFY_TOPIC` (`topics.publish`): `data` is the notice as JSON,
//!   the attributes `event`, `run_id` and `status` let subscriptions filter without decoding;
//! * an HTTPS `POST` of the same JSON to `NOTIFY_WEBHOOK`, signed with HMAC-SHA256 over the
//!   exact body with `NOTIFY_WEBHOOK_SECRET`, in `X-Autotune-Signature: sha256=<hex>` (the
//!   scheme of GitHub's `X-Hub-Signature-256`). The body carries a unique `id` and the `time`
//!   it was made, both covered by the signature, so a receiver can refuse replays and drop
//!   duplicates. To verify: compute HMAC-SHA256 of the raw request body (before any JSON
//!   parsing) with the secret, compare its lowercase hex with the header after `sha256=` in
//!   constant time, then refuse a `time` older than a few minutes and an `id` already seen.
//!
//! A run does not wait for its receivers: [`Notifier::post`] logs the notice and queues it for
//! a background task that delivers notices one after the other, in order, so a receiver that
//! hangs holds neither the run nor its lease; [`Notifier::flush`] waits for the queue within a
//! bound (what is left of TASK_DEADLINE, or a second after SIGTERM) and says what it leaves
//! undelivered.
//!
//! Delivery never fails the caller: [`Notifier::send`] returns nothing. Each sink is tried
//! with the shared client core ([`crate::client`]): a deadline per call, transient failures
//! (no connection, timeouts, 408, 429, 5xx) retried with back-off and jitter a few times, the
//! whole delivery bounded by [`Config::deadline`]. A sink that stays down costs a warning in
//! the log and at most that deadline; both sinks are tried at once. A retried delivery may
//! arrive twice (Pub/Sub is at-least-once anyway): receivers dedupe on the body's `id`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::retry::{self, Idempotency, RetryConfig, retryable};
use crate::client::{
    Auth, Client, Credentials, Error, GOOGLE_API_DOMAINS, Options, check_token_endpoint,
    is_loopback_host,
};
use crate::status::RunStatus;

/// The header that carries the webhook signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Autotune-Signature";
/// The header that names the event of a webhook delivery (also in the signed body).
pub const EVENT_HEADER: &str = "X-Autotune-Event";
/// The header that carries the delivery's unique id (also in the signed body), for dedupe.
pub const DELIVERY_HEADER: &str = "X-Autotune-Delivery";

/// Publishing needs one of `cloud-platform` and `pubsub`; the narrower one is asked for.
const PUBSUB_SCOPE: &str = "https://www.googleapis.com/auth/pubsub";

/// What is read of a Pub/Sub answer at most (its message ids, or Google's error): the rest of
/// a larger answer is never read.
const PUBSUB_ANSWER_BYTES: usize = 64 * 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A tuning job was created.
    #[serde(rename = "tuning_submitted")]
    Submitted,
    /// The tuning job succeeded.
    #[serde(rename = "tuning_succeeded")]
    Succeeded,
    /// The tuning job, or the run, failed.
    #[serde(rename = "tuning_failed")]
    Failed,
    /// The candidate beat the champion on the evaluation set.
    #[serde(rename = "blessed")]
    Blessed,
    /// The candidate did not beat the champion; it is not promoted.
    #[serde(rename = "not_blessed")]
    NotBlessed,
    /// The candidate is the new champion.
    #[serde(rename = "promoted")]
    Promoted,
    /// The champion was moved back to an earlier model.
    #[serde(rename = "rolled_back")]
    RolledBack,
}

impl Event {
    pub const ALL: [Self; 7] = [
        Self::Submitted,
        Self::Succeeded,
        Self::Failed,
        Self::Blessed,
        Self::NotBlessed,
        Self::Promoted,
        Self::RolledBack,
    ];

    /// The name in logs, Pub/Sub attributes and webhook bodies: `tuning_submitted`, …
    pub fn name(self) -> &'static str {
        match self {
            Self::Submitted => "tuning_submitted",
            Self::Succeeded => "tuning_succeeded",
            Self::Failed => "tuning_failed",
            Self::Blessed => "blessed",
            Self::NotBlessed => "not_blessed",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing to tell: an event of a run, the run's status, and whatever explains it (the
/// model, the scores, the error), as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub event: Event,
    pub run_id: String,
    pub status: RunStatus,
    /// `{}` when there is nothing more to say.
    pub details: Value,
}

impl Notice {
    pub fn new(event: Event, run_id: impl Into<String>, status: RunStatus) -> Self {
        Self {
            event,
            run_id: run_id.into(),
            status,
            details: json!({}),
        }
    }

    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The JSON body sinks receive: the notice, a unique `id` and the `time` it was sent.
    fn body(&self) -> (String, Vec<u8>) {
        let id = uuid::Uuid::new_v4().to_string();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = json!({
            "id": id,
            "time": time,
            "source": "autotune",
            "event": self.event,
            "run_id": self.run_id,
            "status": self.status,
            "details": self.details,
        });
        (id, body.to_string().into_bytes())
    }
}

/// Where notices go, as the settings build it (`NOTIFY_TOPIC`, `NOTIFY_WEBHOOK`,
/// `NOTIFY_WEBHOOK_SECRET`).
#[derive(Clone)]
pub struct Config {
    /// A Pub/Sub topic, `projects/{project}/topics/{topic}`.
    pub topic: Option<String>,
    /// An `https` URL (`http` only on a loopback host, for tests).
    pub webhook: Option<Url>,
    /// The HMAC key of webhook signatures; required with `webhook`.
    pub webhook_secret: Option<String>,
    /// Deadlines of each call and the retry policy of each sink.
    pub http: Options,
    /// Longest one sink's delivery may take, retries included; `None` for tests on a paused
    /// clock that talk to a live loopback fake.
    pub deadline: Option<Duration>,
    /// The Pub/Sub API root without trailing slash (a loopback fake in tests).
    pub pubsub_root: String,
}

impl Config {
    pub const PUBSUB_ROOT: &'static str = "https://pubsub.googleapis.com";

    /// The deadlines and retries of a notification: connect within 5 s, an answer within 10 s,
    /// at most 3 retries (0.5 s doubling with jitter, up to 8 s) started within 30 s.
    pub fn default_http() -> Options {
        Options {
            connect_timeout: Some(Duration::from_secs(5)),
            request_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(10)),
            retry: RetryConfig {
                min_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(8),
                max_retries: Some(3),
                deadline: Some(Duration::from_secs(30)),
            },
        }
    }
}

impl Default for Config {
    /// No sink (notices are logged only), [`Config::default_http`], a 60 s delivery deadline.
    fn default() -> Self {
        Self {
            topic: None,
            webhook: None,
            webhook_secret: None,
            http: Self::default_http(),
            deadline: Some(Duration::from_secs(60)),
            pubsub_root: Self::PUBSUB_ROOT.to_owned(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("topic", &self.topic)
            .field("webhook", &self.webhook.as_ref().map(shown))
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("http", &self.http)
            .field("deadline", &self.deadline)
            .field("pubsub_root", &self.pubsub_root)
            .finish()
    }
}

/// A notification setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "NOTIFY_TOPIC {topic:?} is not a Pub/Sub topic name ({reason}); expected projects/PROJECT_ID/topics/TOPIC_ID"
    )]
    Topic { topic: String, reason: String },
    #[error("NOTIFY_WEBHOOK {url:?}: {reason}")]
    Webhook { url: String, reason: String },
    #[error("NOTIFY_WEBHOOK_SECRET: {0}")]
    Secret(String),
    #[error("notifications: {0}")]
    Client(String),
    /// PUBSUB_API_ENDPOINT cannot be trusted with a token.
    #[error(transparent)]
    Endpoint(#[from] crate::client::EndpointError),
}

impl NotifyError {
    /// The setting at fault.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Topic { .. } => "NOTIFY_TOPIC",
            Self::Webhook { .. } | Self::Client(_) => "NOTIFY_WEBHOOK",
            Self::Secret(_) => "NOTIFY_WEBHOOK_SECRET",
            Self::Endpoint(e) => e.setting,
        }
    }
}

/// Checks a Pub/Sub topic name: `projects/{project}/topics/{topic}`, with Pub/Sub's rules for
/// the topic ID (3 to 255 characters of letters, digits and `-_.~+%`, starting with a letter,
/// not starting with `goog`).
pub fn check_topic(topic: &str) -> Result<(), NotifyError> {
    let bad = |reason: &str| NotifyError::Topic {
        topic: topic.to_owned(),
        reason: reason.to_owned(),
    };
    let parts: Vec<&str> = topic.split('/').collect();
    let [projects, project, topics, id] = parts[..] else {
        return Err(bad("it must have exactly four parts separated by '/'"));
    };
    if projects != "projects" || topics != "topics" {
        return Err(bad("it must start with projects/ and have /topics/ third"));
    }
    if project.is_empty()
        || !project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
    {
        return Err(bad(
            "the project ID must be lowercase letters, digits and hyphens",
        ));
    }
    if !(3..=255).contains(&id.len()) {
        return Err(bad("the topic ID must be 3 to 255 characters long"));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad("the topic ID must start with a letter"));
    }
    if id.starts_with("goog") {
        return Err(bad("the topic ID must not start with \"goog\""));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '%'))
    {
        return Err(bad(
            "the topic ID may only have letters, digits and - _ . ~ + %",
        ));
    }
    Ok(())
}

/// Checks a webhook URL: `https`, or `http` to a loopback host (tests, a local relay).
pub fn check_webhook(url: &Url) -> Result<(), NotifyError> {
    let bad = |reason: &str| NotifyError::Webhook {
        url: shown(url),
        reason: reason.to_owned(),
    };
    match url.scheme() {
        "https" => {}
        "http" => {
            if !url.host_str().is_some_and(is_loopback_host) {
                return Err(bad(
                    "must be https (plain http is accepted only for a loopback host)",
                ));
            }
        }
        other => return Err(bad(&format!("must be an https URL, not {other}:"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials; the body is signed with NOTIFY_WEBHOOK_SECRET",
        ));
    }
    Ok(())
}

/// `e` as logs and errors may show it: the request named by `shown` (a webhook's scheme and
/// host, never its path or query, which may carry a token), the message without any trace of
/// the URL, and nothing of the answer's body but a Google error's status name (`NOT_FOUND`).
fn quiet(e: Error, url: &str, shown: &str) -> Error {
    let clean = |message: String| {
        let parsed = Url::parse(url).ok();
        let mut message = message.replace(url, shown);
        if let Some(u) = parsed {
            for part in [Some(u.path()), u.query()].into_iter().flatten() {
                if part.len() > 1 {
                    message = message.replace(part, "/…");
                }
            }
        }
        message
    };
    let shown = shown.to_owned();
    match e {
        Error::Connect { message, .. } => Error::Connect {
            url: shown,
            message: clean(message),
        },
        Error::Interrupted { message, .. } => Error::Interrupted {
            url: shown,
            message: clean(message),
        },
        Error::Invalid { message, .. } => Error::Invalid {
            url: shown,
            message: clean(message),
        },
        Error::Timeout { after, .. } => Error::Timeout { url: shown, after },
        Error::Status {
            status,
            retry_after,
            ref body,
            ..
        } => {
            let name = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["error"]["status"].as_str().map(str::to_owned))
                .filter(|n| n.len() <= 64 && n.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            Error::Status {
                url: shown,
                status,
                body: name.map_or_else(bytes::Bytes::new, |n| {
                    bytes::Bytes::from(json!({ "error": { "message": n } }).to_string())
                }),
                retry_after,
            }
        }
        auth @ Error::Auth { .. } => auth,
    }
}

/// A webhook URL as logs and errors show it: its origin, and `/…` for a path or query that
/// may carry a token.
fn shown(url: &Url) -> String {
    let origin = url.origin().ascii_serialization();
    if url.path() == "/" && url.query().is_none() {
        origin
    } else {
        format!("{origin}/…")
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body`: `sha256=` and the lowercase hex of
/// HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!(
        "sha256={}",
        crate::delta::hex(hmac::sign(&key, body).as_ref())
    )
}

/// Whether `header` is the signature of `body` with `secret` (compared in constant time), as
/// a receiver written in Rust would check it.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = unhex(hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &tag).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

struct PubSub {
    client: Client,
    topic: String,
    /// `{root}/v1/{topic}:publish`.
    url: String,
    /// The endpoint's origin, as logs show it.
    origin: String,
}

struct Webhook {
    client: Client,
    url: Url,
    secret: Vec<u8>,
}

/// Sends notices to the configured sinks; logs each one either way.
pub struct Notifier {
    pubsub: Option<PubSub>,
    webhook: Option<Webhook>,
    deadline: Option<Duration>,
    /// Notices posted and not yet delivered, and the task delivering them (started by the
    /// first post).
    queue: std::sync::Mutex<Option<Queue>>,
    /// Notices posted and not yet through delivery.
    pending: std::sync::atomic::AtomicUsize,
}

/// The background delivery of posted notices.
struct Queue {
    notices: tokio::sync::mpsc::UnboundedSender<Notice>,
    worker: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("topic", &self.pubsub.as_ref().map(|p| &p.topic))
            .field("webhook", &self.webhook.as_ref().map(|w| shown(&w.url)))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::log_only()
    }
}

impl Notifier {
    /// No sink: notices are log lines only.
    pub fn log_only() -> Self {
        Self {
            pubsub: None,
            webhook: None,
            deadline: None,
            queue: std::sync::Mutex::default(),
            pending: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Checks `config`; Pub/Sub tokens come from Application Default Credentials (opened on
    /// the first publish).
    pub fn new(config: Config) -> Result<Self, NotifyError> {
        Self::with_credentials(config, Credentials::from_env())
    }

    /// As [`Notifier::new`], with Pub/Sub tokens from `credentials`.
    pub fn with_credentials(config: Config, credentials: Credentials) -> Result<Self, NotifyError> {
        let Config {
            topic,
            webhook,
            webhook_secret,
            http,
            deadline,
            pubsub_root,
        } = config;
        let client =
            |auth| Client::new(http.clone(), auth).map_err(|e| NotifyError::Client(e.to_string()));
        // It receives a bearer token: https to Google (a loopback fake in tests), checked
        // whether or not a topic is set.
        let root = check_token_endpoint("PUBSUB_API_ENDPOINT", &pubsub_root, GOOGLE_API_DOMAINS)?;
        let pubsub = match topic {
            None => None,
            Some(topic) => {
                check_topic(&topic)?;
                let base = root.as_str().trim_end_matches('/');
                Some(PubSub {
                    client: client(Auth::Bearer {
                        credentials: Arc::new(credentials),
                        scope: PUBSUB_SCOPE,
                    })?,
                    url: format!("{base}/v1/{topic}:publish"),
                    origin: root.origin().ascii_serialization(),
                    topic,
                })
            }
        };
        let webhook = match (webhook, webhook_secret) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(NotifyError::Secret(
                    "is set but NOTIFY_WEBHOOK is not; set both, or neither".to_owned(),
                ));
            }
            (Some(url), secret) => {
                check_webhook(&url)?;
                let secret = match secret {
                    Some(s) if !s.is_empty() => s.into_bytes(),
                    _ => {
                        return Err(NotifyError::Secret(format!(
                            "NOTIFY_WEBHOOK {:?} needs a secret to sign its bodies with \
                             (a long random string the receiver also knows)",
                            shown(&url)
                        )));
                    }
                };
                Some(Webhook {
                    client: client(Auth::Anonymous)?,
                    url,
                    secret,
                })
            }
        };
        Ok(Self {
            pubsub,
            webhook,
            deadline,
            queue: std::sync::Mutex::default(),
            pending: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Whether any sink is configured (else notices are only logged).
    pub fn has_sinks(&self) -> bool {
        self.pubsub.is_some() || self.webhook.is_some()
    }

    /// Logs `notice` now and queues its delivery, which a background task makes after the
    /// notices posted before it: the caller never waits for a receiver. [`Notifier::flush`]
    /// waits for the queue (within a bound) before the process exits.
    pub fn post(self: &Arc<Self>, notice: Notice) {
        Self::log(&notice);
        if !self.has_sinks() {
            return;
        }
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let queue = queue.get_or_insert_with(|| {
            let (notices, mut rx) = tokio::sync::mpsc::unbounded_channel::<Notice>();
            let this = Arc::clone(self);
            let worker = tokio::spawn(async move {
                while let Some(notice) = rx.recv().await {
                    this.deliver_all(&notice).await;
                    this.pending
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            Queue { notices, worker }
        });
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if queue.notices.send(notice).is_err() {
            self.pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Waits until every posted notice went through delivery, for at most `limit`; what is
    /// still undelivered then is given up, with a warning saying how many. Later posts start
    /// a new queue.
    pub async fn flush(&self, limit: Duration) {
        let taken = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(Queue {
            notices,
            mut worker,
        }) = taken
        else {
            return;
        };
        // Closing the channel ends the worker once it has delivered what was queued.
        drop(notices);
        if tokio::time::timeout(limit, &mut worker).await.is_err() {
            worker.abort();
            let left = self.pending.swap(0, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(
                undelivered = left,
                "{left} notification(s) not delivered within {}; the process does not wait longer",
                humantime::format_duration(limit)
            );
        }
    }

    fn log(notice: &Notice) {
        tracing::info!(
            event = notice.event.name(),
            run_id = %notice.run_id,
            status = notice.status.as_str(),
            "autotune event {} for run {}",
            notice.event,
            notice.run_id
        );
    }

    /// Logs `notice`, then delivers it to every sink at once. Never fails: a sink that cannot
    /// be reached within its retries and deadline costs a warning.
    pub async fn send(&self, notice: &Notice) {
        Self::log(notice);
        self.deliver_all(notice).await;
    }

    /// Delivers `notice` to every sink at once.
    async fn deliver_all(&self, notice: &Notice) {
        if !self.has_sinks() {
            return;
        }
        let (id, body) = notice.body();
        let publish = async {
            if let Some(p) = &self.pubsub {
                self.deliver(&p.what(), notice, p.publish(notice, &body))
                    .await;
            }
        };
        let post = async {
            if let Some(w) = &self.webhook {
                self.deliver(&w.what(), notice, w.post(notice, &id, &body))
                    .await;
            }
        };
        tokio::join!(publish, post);
    }

    /// Runs one sink's delivery within the deadline and logs how it ended.
    async fn deliver(
        &self,
        what: &str,
        notice: &Notice,
        delivery: impl Future<Output = Result<(), retry::Failed>>,
    ) {
        let outcome = match self.deadline {
            None => delivery.await.map_err(|f| f.to_string()),
            Some(limit) => match tokio::time::timeout(limit, delivery).await {
                Ok(r) => r.map_err(|f| f.to_string()),
                Err(_) => Err(format!(
                    "no delivery within {}",
                    humantime::format_duration(limit)
                )),
            },
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(event = notice.event.name(), run_id = %notice.run_id, "{what}: delivered");
            }
            Err(error) => tracing::warn!(
                event = notice.event.name(),
                run_id = %notice.run_id,
                %error,
                "{what}: the notification was not delivered"
            ),
        }
    }
}

/// The retry classification of a notification: at-least-once, so anything transient is
/// repeated (receivers dedupe on the body's `id`).
fn transient(e: &Error) -> bool {
    retryable(e, Idempotency::Idempotent)
}

impl PubSub {
    fn what(&self) -> String {
        format!("Pub/Sub publish to {}", self.topic)
    }

    async fn publish(&self, notice: &Notice, body: &[u8]) -> Result<(), retry::Failed> {
        let request = json!({
            "messages": [{
                "data": base64::engine::general_purpose::STANDARD.encode(body),
                "attributes": {
                    "event": notice.event.name(),
                    "run_id": notice.run_id,
                    "status": notice.status.as_str(),
                },
            }]
        });
        retry::retry(&self.client.options().retry, &self.what(), transient, || async {
            let shown = format!("{}/v1/{}:publish", self.origin, self.topic);
            let answer = self
                .client
                .call_bounded(
                    self.client.request(Method::POST, &self.url).json(&request),
                    PUBSUB_ANSWER_BYTES,
                )
                .await
                .map_err(|e| quiet(e, &self.url, &shown))?;
            let published: Value = answer.json().map_err(|_| Error::Invalid {
                url: shown.clone(),
                message: format!(
                    "the answer is not Pub/Sub's PublishResponse (JSON of at most {PUBSUB_ANSWER_BYTES} bytes)"
                ),
            })?;
            // How many, not what: nothing of an answer is logged.
            let messages = published["messageIds"].as_array().map_or(0, Vec::len);
            tracing::debug!(topic = %self.topic, messages, "published");
            Ok(())
        })
        .await
    }
}

impl Webhook {
    /// Names the receiver by its origin only: webhook URLs often carry a token in the path.
    fn what(&self) -> String {
        format!("webhook POST to {}", shown(&self.url))
    }

    async fn post(&self, notice: &Notice, id: &str, body: &[u8]) -> Result<(), retry::Failed> {
        let sig = signature(&self.secret, body);
        retry::retry(
            &self.client.options().retry,
            &self.what(),
            transient,
            || async {
                let request = self
                    .client
                    .request(Method::POST, self.url.as_str())
                    .header(CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, &sig)
                    .header(EVENT_HEADER, notice.event.name())
                    .header(DELIVERY_HEADER, id)
                    .body(body.to_vec());
                // Only the status matters: not one byte of the answer's body is read (a reply
                // of gigabytes costs nothing), and none is logged.
                let shown = shown(&self.url);
                let answer = self
                    .client
                    .call_bounded(request, 0)
                    .await
                    .map_err(|e| quiet(e, self.url.as_str(), &shown))?;
                if answer.status.is_success() {
                    Ok(())
                } else {
                    // A redirect is not a delivery (and is not followed: the body is signed for
                    // this URL).
                    Err(Error::Status {
                        url: shown,
                        status: answer.status.as_u16(),
                        body: bytes::Bytes::new(),
                        retry_after: None,
                    })
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_their_documented_names() {
        let names: Vec<&str> = Event::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [
                "tuning_submitted",
                "tuning_succeeded",
                "tuning_failed",
                "blessed",
                "not_blessed",
                "promoted",
                "rolled_back"
            ]
        );
        for e in Event::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.name());
            assert_eq!(e.to_string(), e.name());
        }
    }

    #[test]
    fn signatures_match_the_rfc_4231_vector_and_verify() {
        // RFC 4231 test case 2.
        let s = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &s));
        assert!(!verify(b"jefe", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"what do ya want for nothing?", &s[7..]));
        assert!(!verify(
            b"Jefe",
            b"what do ya want for nothing?",
            "sha256=zz"
        ));
    }

    #[test]
    fn topics_follow_pubsub_naming() {
        assert!(check_topic("projects/my-proj/topics/autotune-events").is_ok());
        assert!(check_topic("projects/example.com:proj/topics/a.b~c+d%20").is_ok());
        for bad in [
            "autotune-events",
            "projects/p/topics",
            "projects/p/subscriptions/s",
            "projects//topics/abc",
            "projects/p/topics/ab",
            "projects/p/topics/1abc",
            "projects/p/topics/google-things",
            "projects/p/topics/a b c",
            "projects/p/topics/abc/extra",
            "//pubsub.googleapis.com/projects/p/topics/abc",
        ] {
            let e = check_topic(bad).unwrap_err().to_string();
            assert!(e.starts_with("NOTIFY_TOPIC"), "{e}");
            assert!(e.contains(bad), "{e}");
        }
    }
}
