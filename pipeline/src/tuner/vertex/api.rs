//! One authorised JSON call to Vertex AI through the Google client core ([`crate::client`]),
//! and what went wrong with it, seen from a create: whether the call can have taken effect.

use std::sync::Arc;

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::client::retry::{self, Idempotency, RetryConfig, retryable};
use crate::client::{Auth, Client, Credentials, Error, Options};

/// The only scope Vertex AI takes.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

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

    /// Worth another try for a call that is safe to repeat (get, list, cancel); the core's
    /// classification ([`retryable`]) seen through this view.
    #[cfg(test)]
    pub(super) fn transient(&self) -> bool {
        match self {
            Self::NotSent(_) | Self::NoAnswer(_) => true,
            Self::Status { http, .. } => retry::transient_status(*http),
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

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match &e {
            Error::Connect { .. } => Self::NotSent(e.to_string()),
            Error::Timeout { .. } | Error::Interrupted { .. } => Self::NoAnswer(e.to_string()),
            Error::Status { status, .. } => Self::Status {
                http: *status,
                error: e.google_error().unwrap_or_default(),
            },
            Error::Auth { message, .. } => Self::Fatal(message.clone()),
            Error::Invalid { .. } => Self::Fatal(e.to_string()),
        }
    }
}

pub(super) struct Api {
    client: Client,
    credentials: Arc<Credentials>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

fn client(credentials: &Arc<Credentials>, options: Options) -> Result<Client, String> {
    Client::new(
        options,
        Auth::Bearer {
            credentials: credentials.clone(),
            scope: SCOPE,
        },
    )
    .map_err(|e| e.to_string())
}

impl Api {
    pub(super) fn new(credentials: Credentials, options: Options) -> Result<Self, String> {
        let credentials = Arc::new(credentials);
        Ok(Self {
            client: client(&credentials, options)?,
            credentials,
        })
    }

    pub(super) fn options(&self) -> &Options {
        self.client.options()
    }

    pub(super) fn set_options(&mut self, options: Options) -> Result<(), String> {
        self.client = client(&self.credentials, options)?;
        Ok(())
    }

    pub(super) fn set_credentials(&mut self, credentials: Credentials) -> Result<(), String> {
        self.credentials = Arc::new(credentials);
        self.client = client(&self.credentials, self.options().clone())?;
        Ok(())
    }

    async fn attempt(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<Value, Error> {
        let mut request = self.client.request(method, url).query(query);
        if let Some(b) = body {
            request = request.json(b);
        }
        self.client.call(request).await?.json()
    }

    /// Sends one request and returns the JSON answer of a 2xx.
    pub(super) async fn call(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<Value, Failure> {
        self.attempt(method, url, query, body)
            .await
            .map_err(Failure::from)
    }

    /// A call that is safe to repeat (get, list, cancel), retried by `policy` on what the
    /// core classifies as transient.
    pub(super) async fn call_idempotent(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&(impl Serialize + Sync)>,
        policy: &RetryConfig,
    ) -> Result<Value, Failure> {
        retry::retry(
            policy,
            &format!("Vertex AI {method} {url}"),
            |e| retryable(e, Idempotency::Idempotent),
            || self.attempt(method.clone(), url, query, body),
        )
        .await
        .map_err(|f| Failure::from(f.error))
    }
}
