//! What the component answers. A request ends in an [`Outcome`] (the event was handled) or a
//! [`Rejection`] (one variant per reason it was not); [`Reply::from`] is the one place that maps
//! either to an HTTP status and a JSON body.
//!
//! Status codes (what Pub/Sub and Eventarc make of them):
//! * 200: started, already running, or ignored with a reason: acknowledged, no redelivery.
//! * 400 malformed event, 401 refused caller, 405 not POST, 413 body over 1 MiB.
//! * 503: transient upstream failure (429, 5xx, 401, timeout, unusable answer): redelivered later.
//! * 500: permanent upstream failure or bad configuration: needs an operator (logged).

use crate::auth::AuthError;
use crate::config::ConfigError;
use crate::event::DecodeError;
use crate::run_api::{self, Failure};
use crate::upstream::{Method, TransportError};
use serde_json::{Value, json};

/// The answer: status and a small JSON document saying what happened and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// The event was handled (answered 200, so it is not delivered again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `jobs.run` accepted: `execution` is the new execution's name (empty if Google's
    /// Operation did not carry it).
    Started {
        job: String,
        execution: String,
        object: String,
        event_id: String,
    },
    /// An execution of the job is still pending or running (storm control).
    AlreadyRunning {
        execution: String,
        status: String,
        object: String,
        event_id: String,
    },
    /// The event cannot change the training set.
    Ignored {
        reason: String,
        object: String,
        event_id: String,
    },
}

/// Why a request did not start the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("method {0} not allowed; POST events")]
    MethodNotAllowed(String),
    #[error("body larger than {} bytes", crate::MAX_BODY_BYTES)]
    BodyTooLarge,
    /// A setting is missing or malformed: every request fails until an operator fixes it.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] AuthError),
    #[error("malformed event: {0}")]
    MalformedEvent(#[from] DecodeError),
    /// An outbound call got no answer (timeout, refused connection, …).
    #[error("{call} {} ({method} {url}): {error}", .error.verb())]
    Unreachable {
        call: &'static str,
        method: Method,
        url: String,
        error: TransportError,
    },
    /// An outbound call answered outside 2xx; `message` is Google's error message.
    #[error("{call} answered {status} ({method} {url}): {message}")]
    Upstream {
        call: &'static str,
        method: Method,
        url: String,
        status: u16,
        message: String,
    },
    /// `JWKS_URL` answered 2xx with something that is not a usable key set.
    #[error("JWKS at JWKS_URL unusable: {0}")]
    UnusableJwks(String),
    /// The metadata server answered 2xx without a usable access token.
    #[error("{0}")]
    UnusableAccessToken(String),
    /// `jobs.get` answered 2xx with something that is not a Job.
    #[error("{0}")]
    UnusableJob(String),
}

impl Rejection {
    /// The HTTP status of this rejection.
    pub fn status(&self) -> u16 {
        match self {
            Self::MethodNotAllowed(_) => 405,
            Self::BodyTooLarge => 413,
            Self::Config(_) => 500,
            Self::Unauthorized(_) => 401,
            Self::MalformedEvent(_) => 400,
            Self::Unreachable { .. }
            | Self::UnusableJwks(_)
            | Self::UnusableAccessToken(_)
            | Self::UnusableJob(_) => 503,
            Self::Upstream { status, .. } => match run_api::classify(*status) {
                Failure::Transient => 503,
                Failure::Permanent => 500,
            },
        }
    }

    /// Google refused the access token: it may have been revoked or rotated, so it is dropped
    /// from the cache.
    pub fn refused_access_token(&self) -> bool {
        matches!(self, Self::Upstream { status: 401, .. })
    }
}

impl From<Outcome> for Reply {
    fn from(o: Outcome) -> Reply {
        let body = match o {
            Outcome::Started {
                job,
                execution,
                object,
                event_id,
            } => json!({
                "outcome": "started",
                "reason": format!("started {job} for {object}"),
                "execution": execution,
                "object": object,
                "event_id": event_id,
            }),
            Outcome::AlreadyRunning {
                execution,
                status,
                object,
                event_id,
            } => json!({
                "outcome": "already_running",
                "reason": format!("execution {execution} is {status}; not starting another"),
                "execution": execution,
                "object": object,
                "event_id": event_id,
            }),
            Outcome::Ignored {
                reason,
                object,
                event_id,
            } => json!({
                "outcome": "ignored",
                "reason": reason,
                "object": object,
                "event_id": event_id,
            }),
        };
        Reply { status: 200, body }
    }
}

impl From<Rejection> for Reply {
    fn from(r: Rejection) -> Reply {
        let mut body = json!({ "outcome": "error", "reason": r.to_string() });
        if let Rejection::Upstream { status, .. } = r {
            body["upstream_status"] = Value::from(status);
        }
        Reply {
            status: r.status(),
            body,
        }
    }
}

impl From<Result<Outcome, Rejection>> for Reply {
    fn from(r: Result<Outcome, Rejection>) -> Reply {
        r.map_or_else(Reply::from, Reply::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16) -> Rejection {
        Rejection::Upstream {
            call: "jobs.run",
            method: Method::Post,
            url: "https://run.googleapis.com/v2/x:run".into(),
            status,
            message: "PERMISSION_DENIED denied".into(),
        }
    }

    #[test]
    fn each_rejection_has_its_status_and_says_why() {
        let cases: Vec<(Rejection, u16, &str)> = vec![
            (
                Rejection::MethodNotAllowed("GET".into()),
                405,
                "method GET not allowed; POST events",
            ),
            (
                Rejection::BodyTooLarge,
                413,
                "body larger than 1048576 bytes",
            ),
            (
                Rejection::Config(ConfigError {
                    setting: "JOB_NAME",
                    problem: "is required but not set".into(),
                }),
                500,
                "configuration error: setting JOB_NAME: is required but not set",
            ),
            (
                Rejection::Unauthorized(AuthError("token expired".into())),
                401,
                "unauthorized: token expired",
            ),
            (
                Rejection::MalformedEvent(DecodeError("no bucket".into())),
                400,
                "malformed event: no bucket",
            ),
            (
                Rejection::Unreachable {
                    call: "jobs.get",
                    method: Method::Get,
                    url: "http://x/j".into(),
                    error: TransportError::Timeout("first byte".into()),
                },
                503,
                "jobs.get timed out (GET http://x/j): timed out: first byte",
            ),
            (
                upstream(403),
                500,
                "jobs.run answered 403 (POST https://run.googleapis.com/v2/x:run): \
                 PERMISSION_DENIED denied",
            ),
            (upstream(429), 503, "jobs.run answered 429"),
            (upstream(401), 503, "jobs.run answered 401"),
            (
                Rejection::UnusableJwks("JWKS has no usable RS256 key".into()),
                503,
                "JWKS at JWKS_URL unusable: JWKS has no usable RS256 key",
            ),
            (
                Rejection::UnusableAccessToken("no access_token".into()),
                503,
                "no access_token",
            ),
            (Rejection::UnusableJob("not a Job".into()), 503, "not a Job"),
        ];
        for (r, status, reason) in cases {
            let refused = r.refused_access_token();
            let reply = Reply::from(r);
            assert_eq!(reply.status, status, "{reason}");
            assert_eq!(reply.body["outcome"], "error");
            let got = reply.body["reason"].as_str().unwrap();
            assert!(got.starts_with(reason), "{got}");
            assert_eq!(refused, reason.contains("answered 401"), "{reason}");
        }
        assert_eq!(Reply::from(upstream(404)).body["upstream_status"], 404);
    }

    #[test]
    fn outcomes_are_acknowledged_with_200() {
        let r = Reply::from(Ok::<_, Rejection>(Outcome::Started {
            job: "projects/p/locations/r/jobs/j".into(),
            execution: "e-1".into(),
            object: "gs://b/o".into(),
            event_id: "7".into(),
        }));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            json!({"outcome": "started", "reason": "started projects/p/locations/r/jobs/j for gs://b/o",
                   "execution": "e-1", "object": "gs://b/o", "event_id": "7"})
        );
        let r = Reply::from(Outcome::AlreadyRunning {
            execution: "e-0".into(),
            status: "EXECUTION_RUNNING".into(),
            object: "gs://b/o".into(),
            event_id: "8".into(),
        });
        assert_eq!(
            (r.status, &r.body["outcome"]),
            (200, &json!("already_running"))
        );
        let r = Reply::from(Outcome::Ignored {
            reason: "why".into(),
            object: "gs://b/o".into(),
            event_id: "9".into(),
        });
        assert_eq!((r.status, &r.body["reason"]), (200, &json!("why")));
    }
}
