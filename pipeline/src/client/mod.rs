//! The one Google client core under both Cloud Storage ([`crate::storage::gcs`]) and Vertex AI
//! ([`crate::tuner::vertex`]): an HTTP client with deadlines, access tokens, and retries.
//!
//! Three concerns, kept apart as in `object_store`'s `client/retry.rs` and vector's
//! `sinks/util/retries.rs`:
//!
//! * [`http`]: one attempt of one request, and what went wrong with it ([`Error`]). Every attempt
//!   has a deadline from [`Options`]: a connect timeout, a total deadline for small calls, and for
//!   streams (chunk uploads, media downloads) an idle deadline that any progress resets, so a
//!   large transfer on a slow link is not cut off while a frozen one still fails.
//! * [`retry`]: the *classification* of a failure (can another attempt succeed, and is it safe
//!   to make: [`retry::retryable`]) apart from the *back-off policy* (exponential with jitter,
//!   a maximum number of retries and an overall deadline: [`RetryConfig`]). Callers with their
//!   own notion of safety (a Vertex create that may have made a job, a resumable upload that
//!   asks the server how far it got) use the policy's delays with their own classification.
//! * [`token`]: where access tokens come from: Application Default Credentials of every kind
//!   (google-cloud-auth), chosen once and opened on first use.
//!
//! Timers run on `tokio::time`, so tests can pause the clock. [`Options::without_timers`] turns
//! every per-attempt timer off, for tests on a paused clock that talk to a live loopback fake
//! (a timer pending while the fake answers would fire at once on a paused clock). Such tests
//! also give a [`TokenProvider`] of their own: google-cloud-auth refreshes cached tokens on a
//! timer, which a paused clock would jump to.

pub mod http;
pub mod retry;
pub mod token;

use std::time::Duration;

pub use http::{Answer, Auth, Client, Error};
pub use retry::{Backoff, Failed, Idempotency, RetryConfig};
pub use token::{Credentials, TokenError, TokenProvider};

/// The one OAuth scope Vertex AI takes (and Cloud Storage accepts).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Deadlines and retries for one client.
///
/// `None` for a timeout means no timer (no deadline): for tests on a paused clock only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Option<Duration>,
    /// Longest a small call may take from sending to the last byte of the answer; for streams,
    /// the longest wait for the answer's headers once the request body is sent.
    pub request_timeout: Option<Duration>,
    /// For streams (chunk uploads, media downloads): the longest time without a byte moving.
    pub idle_timeout: Option<Duration>,
    /// How failed attempts are repeated.
    pub retry: RetryConfig,
}

impl Default for Options {
    /// Connect 10 s, small calls 60 s, streams 60 s without progress; retries as
    /// [`RetryConfig::default`].
    fn default() -> Self {
        Self {
            connect_timeout: Some(Duration::from_secs(10)),
            request_timeout: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(60)),
            retry: RetryConfig::default(),
        }
    }
}

impl Options {
    /// These options with every per-attempt timer off (the retry policy is kept).
    #[must_use]
    pub fn without_timers(self) -> Self {
        Self {
            connect_timeout: None,
            request_timeout: None,
            idle_timeout: None,
            ..self
        }
    }

    /// Whether any per-attempt timer runs.
    pub fn has_timers(&self) -> bool {
        self.connect_timeout.is_some()
            || self.request_timeout.is_some()
            || self.idle_timeout.is_some()
    }

    /// These options with one timeout for all three deadlines, the connection's capped at 20 s;
    /// `None` turns the timers off.
    #[must_use]
    pub fn with_timeout(self, timeout: Option<Duration>) -> Self {
        Self {
            connect_timeout: timeout.map(|t| t.min(Duration::from_secs(20))),
            request_timeout: timeout,
            idle_timeout: timeout,
            ..self
        }
    }
}

/// An API root that would receive access tokens and cannot be trusted with them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting} {shown:?}: {reason}")]
pub struct EndpointError {
    /// The setting that names it (`PUBSUB_API_ENDPOINT`, …).
    pub setting: &'static str,
    /// The endpoint as given, without credentials.
    pub shown: String,
    pub reason: String,
}

/// The domain of Google's APIs: an endpoint that receives a Google access token must be under
/// it (`pubsub.googleapis.com`, `us-central1-pubsub.googleapis.com`, a Private Service Connect
/// name `pubsub-NAME.p.googleapis.com`).
pub const GOOGLE_API_DOMAINS: &[&str] = &["googleapis.com"];

/// Whether `host` (a URL's host: a name, an IPv4 address or a bracketed IPv6 one) is this
/// machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks an API root that will receive access tokens (PUBSUB_API_ENDPOINT; meant for every
/// such setting, VERTEX_API_ENDPOINT too): `https` to a host in one of `domains` (the domain
/// itself or a name under it), or `http`/`https` to a loopback host (the fakes of tests, a local
/// emulator); no user name or password, no query, no fragment. `setting` names it in the error.
pub fn check_token_endpoint(
    setting: &'static str,
    endpoint: &str,
    domains: &[&str],
) -> Result<reqwest::Url, EndpointError> {
    let mut shown = endpoint.to_owned();
    let url = reqwest::Url::parse(endpoint);
    if let Ok(u) = &url
        && (!u.username().is_empty() || u.password().is_some())
    {
        let mut u = u.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        shown = u.to_string();
    }
    let bad = |reason: String| EndpointError {
        setting,
        shown: shown.clone(),
        reason,
    };
    let url = url.map_err(|e| {
        bad(format!(
            "not a URL ({e}); expected https://HOST, e.g. https://{}",
            domains.first().copied().unwrap_or("example.com")
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad(format!("must be an https URL, not {}:", url.scheme())));
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(bad("has no host".to_owned()));
    }
    let loopback = is_loopback_host(host);
    if url.scheme() == "http" && !loopback {
        return Err(bad(
            "must be https: it receives access tokens (plain http only to a loopback host)"
                .to_owned(),
        ));
    }
    let host = host.to_ascii_lowercase();
    let trusted = domains
        .iter()
        .any(|d| host == *d || host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')));
    if !loopback && !trusted {
        return Err(bad(format!(
            "host {host} is not under {}: it would receive access tokens",
            domains.join(" or ")
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or a fragment".to_owned()));
    }
    Ok(url)
}

/// An error and its sources on one line (reqwest's and google-cloud-auth's top-level messages alone
/// hide the cause).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoints_are_https_to_google_or_loopback() {
        let check = |e: &str| check_token_endpoint("VERTEX_API_ENDPOINT", e, GOOGLE_API_DOMAINS);
        for ok in [
            "https://us-central1-aiplatform.googleapis.com",
            "https://aiplatform.googleapis.com/",
            "https://googleapis.com",
            "http://127.0.0.1:9000",
            "https://127.0.0.2",
            "http://localhost",
            "http://[::1]:1",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            (
                "http://us-central1-aiplatform.googleapis.com",
                "must be https",
            ),
            (
                "https://aiplatform.googleapis.com.example.com",
                "not under googleapis.com",
            ),
            ("https://notgoogleapis.com", "not under googleapis.com"),
            ("https://169.254.169.254", "not under googleapis.com"),
            ("file:///etc/passwd", "https"),
            ("https://aiplatform.googleapis.com/?alt=x", "query"),
            ("aiplatform.googleapis.com", "not a URL"),
        ] {
            let e = check(bad).unwrap_err();
            assert_eq!(e.setting, "VERTEX_API_ENDPOINT");
            let text = e.to_string();
            assert!(text.starts_with("VERTEX_API_ENDPOINT"), "{text}");
            assert!(text.contains(why), "{bad}: {text}");
        }
        // Credentials in the URL are refused, and not repeated in the error.
        let e = check("https://user:hunter2@aiplatform.googleapis.com").unwrap_err();
        assert!(e.to_string().contains("user name or password"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(is_loopback_host("LOCALHOST") && is_loopback_host("[::1]"));
        assert!(!is_loopback_host("localhost.example.com") && !is_loopback_host("10.0.0.1"));
    }
}
