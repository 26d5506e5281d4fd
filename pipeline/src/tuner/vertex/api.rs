//! One authorised JSON call to Vertex AI, and what went wrong with it, classified by what it
//! means for a retry: whether the call can have taken effect.

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::auth::Credentials;

/// Why a call did not return a usable answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// The request never reached Google (connection refused, no route): nothing happened.
    NotSent(String),
    /// Sent, but no answer came back (timeout, reset): the call may have taken effect.
    NoAnswer(String),
    /// Google answered with an error; `error` is its `google.rpc.Status` word for word.
    Status { http: u16, error: Value },
    /// Nothing a retry mends: no credentials, a bad URL, an unreadable success.
    Fatal(String),
}

impl Failure {
    pub(super) fn http(&self) -> Option<u16> {
        match self {
            Self::Status { http, .. } => Some(*http),
            _ => None,
        }
    }

    /// Worth another try for a call that is safe to repeat (get, list, cancel).
    pub(super) fn transient(&self) -> bool {
        match self {
            Self::NotSent(_) | Self::NoAnswer(_) => true,
            Self::Status { http, .. } => *http == 429 || *http >= 500,
            Self::Fatal(_) => false,
        }
    }

    /// For a create: Google certainly made no job (refused connection, 429, 503).
    pub(super) fn nothing_created(&self) -> bool {
        matches!(
            self,
            Self::NotSent(_)
                | Self::Status {
                    http: 429 | 503,
                    ..
                }
        )
    }

    /// For a create: a job may exist although we got no name (timeout, other 5xx).
    pub(super) fn maybe_created(&self) -> bool {
        match self {
            Self::NoAnswer(_) => true,
            Self::Status { http, .. } => *http >= 500 && *http != 503,
            _ => false,
        }
    }

    /// Google's error object, or one made from our own message.
    pub(super) fn error_object(&self) -> Value {
        match self {
            Self::Status { error, .. } => error.clone(),
            Self::NotSent(m) | Self::NoAnswer(m) | Self::Fatal(m) => json!({ "message": m }),
        }
    }

    /// One line: HTTP status, Google's status and message, then each field violation.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Status { http, error } => {
                let status = error["status"]
                    .as_str()
                    .map_or_else(String::new, |s| format!(" {s}"));
                format!("HTTP {http}{status}: {}", describe_error(error))
            }
            Self::NotSent(m) | Self::NoAnswer(m) | Self::Fatal(m) => m.clone(),
        }
    }
}

/// Google's message followed by every `google.rpc.BadRequest` field violation, word for word.
pub(super) fn describe_error(error: &Value) -> String {
    let mut s = error["message"].as_str().unwrap_or_default().to_owned();
    for v in field_violations(error) {
        let field = v["field"].as_str().unwrap_or_default();
        let description = v["description"].as_str().unwrap_or_default();
        if !s.is_empty() {
            s.push_str("; ");
        }
        s.push_str(field);
        s.push_str(": ");
        s.push_str(description);
    }
    s
}

/// The `fieldViolations` of every `google.rpc.BadRequest` in `details`.
pub(super) fn field_violations(error: &Value) -> impl Iterator<Item = &Value> {
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.rpc.BadRequest"))
        })
        .filter_map(|d| d["fieldViolations"].as_array())
        .flatten()
}

pub(super) struct Api {
    http: reqwest::Client,
    credentials: Credentials,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub(super) fn new(credentials: Credentials, timeout: Option<Duration>) -> Result<Self, String> {
        Ok(Self {
            http: client(timeout)?,
            credentials,
        })
    }

    pub(super) fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), String> {
        self.http = client(timeout)?;
        Ok(())
    }

    pub(super) fn set_credentials(&mut self, credentials: Credentials) {
        self.credentials = credentials;
    }

    /// Sends one request and returns the JSON answer of a 2xx.
    pub(super) async fn call(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<Value, Failure> {
        let token = self.credentials.token().await.map_err(Failure::Fatal)?;
        let mut request = self
            .http
            .request(method, url)
            .query(query)
            .bearer_auth(token.as_str());
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.map_err(|e| sent_error(&e, url))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Failure::NoAnswer(format!("reading the answer of {url}: {}", chain(&e)))
        })?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(json!({}));
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure::Fatal(format!("unreadable answer from {url}: {e}")));
        }
        Err(Failure::Status {
            http: status.as_u16(),
            error: error_of(status.as_u16(), &bytes),
        })
    }
}

/// `timeout` bounds each call; `None` also turns off the pool's idle timer, so no timer runs
/// while a request is in flight (what tests on a paused clock need).
fn client(timeout: Option<Duration>) -> Result<reqwest::Client, String> {
    let mut b =
        reqwest::Client::builder().user_agent(concat!("autotune/", env!("CARGO_PKG_VERSION")));
    b = match timeout {
        Some(t) => b.timeout(t).connect_timeout(t.min(Duration::from_secs(20))),
        None => b.pool_idle_timeout(None),
    };
    b.build().map_err(|e| format!("HTTP client: {}", chain(&e)))
}

fn sent_error(e: &reqwest::Error, url: &str) -> Failure {
    let m = format!("{url}: {}", chain(e));
    if e.is_builder() {
        Failure::Fatal(m)
    } else if e.is_connect() {
        Failure::NotSent(m)
    } else {
        Failure::NoAnswer(m)
    }
}

/// The `error` object of a Google error body; a body that is not one (a proxy's HTML page)
/// becomes `{code, message}` with its text.
fn error_of(http: u16, body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["error"].is_object() => v["error"].clone(),
        _ => {
            let text: String = String::from_utf8_lossy(body).chars().take(1000).collect();
            json!({ "code": http, "message": text.trim() })
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
