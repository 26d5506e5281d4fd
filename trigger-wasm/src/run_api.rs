//! Run Admin API v2 and metadata-server requests, and the classification of their answers
//! (GOOGLE-APIS.md §3, §5; field names from run.v2.json).
//!
//! * `jobs.get` → `latestCreatedExecution` is the cheapest "is an execution still going?" check,
//!   used for storm control before `jobs.run`.
//! * `jobs.run` with `overrides.containerOverrides[].env` hands the triggering object to the job
//!   (`TRIGGER_BUCKET`, `TRIGGER_OBJECT`, `TRIGGER_GENERATION`, `TRIGGER_EVENT_ID`); env overrides
//!   are merged with the job's own environment.
//! * Transient upstream failures (429, 5xx, 408, timeouts) become 503 so the event is delivered
//!   again; permanent ones (400, 403, 404, …) become 500 with Google's message in the log.

use crate::config::JobSettings;
use crate::event::StorageEvent;
use crate::upstream::{Method, OutRequest, OutResponse};
use serde_json::{Value, json};

/// Refresh the access token this long before Google says it expires.
pub const TOKEN_REFRESH_MARGIN_SECS: i64 = 60;

/// `projects/{p}/locations/{r}/jobs/{j}`.
pub fn job_name(s: &JobSettings) -> String {
    format!(
        "projects/{}/locations/{}/jobs/{}",
        s.project, s.region, s.job
    )
}

/// `GET` of the metadata server's default service-account token.
pub fn token_request(s: &JobSettings) -> OutRequest {
    OutRequest {
        method: Method::Get,
        url: format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            s.metadata_base
        ),
        headers: vec![("metadata-flavor".into(), "Google".into())],
        body: Vec::new(),
        timeout_ms: s.timeout_ms,
    }
}

/// An OAuth access token and when it stops being usable (Unix seconds, margin applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub refresh_at: i64,
}

/// Parses `{"access_token":…,"expires_in":3599,"token_type":"Bearer"}`.
pub fn parse_token(body: &[u8], now: i64) -> Result<AccessToken, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("metadata token response is not JSON: {e}"))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or("metadata token response has no usable access_token")?;
    let expires_in = v.get("expires_in").and_then(Value::as_i64).unwrap_or(0);
    Ok(AccessToken {
        token: token.to_owned(),
        refresh_at: now + expires_in - TOKEN_REFRESH_MARGIN_SECS,
    })
}

fn authed(s: &JobSettings, method: Method, url: String, token: &str, body: Vec<u8>) -> OutRequest {
    let mut headers = vec![("authorization".into(), format!("Bearer {token}"))];
    if !body.is_empty() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    OutRequest {
        method,
        url,
        headers,
        body,
        timeout_ms: s.timeout_ms,
    }
}

/// `jobs.get`, for the latest execution.
pub fn get_job_request(s: &JobSettings, token: &str) -> OutRequest {
    authed(
        s,
        Method::Get,
        format!("{}/v2/{}", s.run_api_endpoint, job_name(s)),
        token,
        Vec::new(),
    )
}

/// The `RunJobRequest` body (run.v2.json `GoogleCloudRunV2RunJobRequest`).
pub fn run_body(ev: &StorageEvent) -> Value {
    let env = [
        ("TRIGGER_BUCKET", ev.bucket.as_str()),
        ("TRIGGER_OBJECT", ev.object.as_str()),
        ("TRIGGER_GENERATION", ev.generation.as_deref().unwrap_or("")),
        ("TRIGGER_EVENT_ID", ev.id.as_str()),
    ];
    json!({
        "overrides": {
            "containerOverrides": [{
                "env": env
                    .iter()
                    .map(|(name, value)| json!({"name": name, "value": value}))
                    .collect::<Vec<_>>()
            }]
        }
    })
}

/// `jobs.run` with the event in the container environment.
pub fn run_request(s: &JobSettings, token: &str, ev: &StorageEvent) -> OutRequest {
    authed(
        s,
        Method::Post,
        format!("{}/v2/{}:run", s.run_api_endpoint, job_name(s)),
        token,
        run_body(ev).to_string().into_bytes(),
    )
}

/// An execution that is still pending or running, which suppresses a new start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub execution: String,
    pub status: String,
}

/// Reads `latestCreatedExecution` from a `jobs.get` response. An execution counts as busy
/// while its status is RUNNING or PENDING, or while it has neither a final status nor a
/// `completionTime` (a just-created execution may not report a status yet).
pub fn latest_busy_execution(job: &[u8]) -> Result<Option<Busy>, String> {
    let v: Value =
        serde_json::from_slice(job).map_err(|e| format!("jobs.get response is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("jobs.get response is not a Job object".into());
    }
    let Some(latest) = v.get("latestCreatedExecution").filter(|l| l.is_object()) else {
        return Ok(None);
    };
    let name = latest.get("name").and_then(Value::as_str).unwrap_or("");
    let status = latest
        .get("completionStatus")
        .and_then(Value::as_str)
        .unwrap_or("COMPLETION_STATUS_UNSPECIFIED");
    let completed = latest.get("completionTime").is_some_and(|t| !t.is_null());
    let busy = match status {
        "EXECUTION_RUNNING" | "EXECUTION_PENDING" => true,
        "EXECUTION_SUCCEEDED" | "EXECUTION_FAILED" | "EXECUTION_CANCELLED" => false,
        _ => !completed && !name.is_empty(),
    };
    Ok(busy.then(|| Busy {
        execution: name.to_owned(),
        status: status.to_owned(),
    }))
}

/// Execution name from the `jobs.run` Operation (`metadata.name`), if present.
pub fn started_execution(op: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(op).ok()?;
    v.get("metadata")?.get("name")?.as_str().map(str::to_owned)
}

/// How to answer the caller after an upstream error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 503: ask Pub/Sub / Eventarc to deliver again.
    Transient,
    /// 500: retrying will not help; an operator must act on the logged message.
    Permanent,
}

/// Classifies a non-2xx upstream status.
pub fn classify(status: u16) -> Failure {
    match status {
        // 401: the cached access token was revoked or rotated; the next delivery fetches a new one.
        401 | 408 | 429 | 500..=599 => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// Google's error message (`{"error":{"code","message","status"}}`), else the start of the body.
pub fn google_message(resp: &OutResponse) -> String {
    let parsed: Option<String> = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
            let st = e.get("status").and_then(Value::as_str).unwrap_or("");
            Some(format!("{st} {msg}").trim().to_owned())
        });
    parsed.unwrap_or_else(|| {
        String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Form};

    fn settings() -> JobSettings {
        JobSettings {
            project: "p".into(),
            region: "europe-west1".into(),
            job: "tune".into(),
            run_api_endpoint: "https://run.googleapis.com".into(),
            metadata_base: "http://metadata.google.internal".into(),
            timeout_ms: 1000,
        }
    }

    #[test]
    fn run_request_targets_the_job_and_carries_the_event() {
        let ev = StorageEvent {
            form: Form::CloudEventBinary,
            kind: EventKind::Finalize,
            id: "42".into(),
            bucket: "b".into(),
            object: "raw/a \"b\".png".into(),
            generation: Some("17".into()),
        };
        let r = run_request(&settings(), "tok", &ev);
        assert_eq!(r.method, Method::Post);
        assert_eq!(
            r.url,
            "https://run.googleapis.com/v2/projects/p/locations/europe-west1/jobs/tune:run"
        );
        assert!(
            r.headers
                .contains(&("authorization".into(), "Bearer tok".into()))
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let env = &body["overrides"]["containerOverrides"][0]["env"];
        assert_eq!(
            env[1],
            json!({"name": "TRIGGER_OBJECT", "value": "raw/a \"b\".png"})
        );
        assert_eq!(env[2]["value"], "17");
        assert_eq!(env[3]["value"], "42");
    }

    #[test]
    fn busy_detection_follows_the_completion_status() {
        let j = |latest: Value| {
            serde_json::to_vec(&json!({"name": "x", "latestCreatedExecution": latest})).unwrap()
        };
        assert!(
            latest_busy_execution(&j(
                json!({"name": "e1", "completionStatus": "EXECUTION_RUNNING"})
            ))
            .unwrap()
            .is_some()
        );
        assert!(
            latest_busy_execution(&j(
                json!({"name": "e1", "completionStatus": "EXECUTION_PENDING"})
            ))
            .unwrap()
            .is_some()
        );
        assert!(
            latest_busy_execution(&j(json!({"name": "e1"})))
                .unwrap()
                .is_some()
        );
        assert!(
            latest_busy_execution(&j(
                json!({"name": "e1", "completionTime": "2026-01-01T00:00:00Z"})
            ))
            .unwrap()
            .is_none()
        );
        assert!(
            latest_busy_execution(&j(
                json!({"name": "e1", "completionStatus": "EXECUTION_FAILED"})
            ))
            .unwrap()
            .is_none()
        );
        assert!(latest_busy_execution(br#"{"name":"x"}"#).unwrap().is_none());
        assert!(latest_busy_execution(b"[]").is_err());
    }

    #[test]
    fn token_parse_and_classification() {
        let t = parse_token(
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(t.token, "ya29.x");
        assert_eq!(t.refresh_at, 1000 + 3599 - 60);
        assert!(parse_token(br#"{"access_token":"a b"}"#, 0).is_err());
        assert_eq!(classify(429), Failure::Transient);
        assert_eq!(classify(503), Failure::Transient);
        assert_eq!(classify(403), Failure::Permanent);
        assert_eq!(classify(404), Failure::Permanent);
        let resp = OutResponse {
            status: 403,
            cache_control: None,
            body: br#"{"error":{"code":403,"message":"Permission 'run.jobs.runWithOverrides' denied","status":"PERMISSION_DENIED"}}"#.to_vec(),
        };
        assert_eq!(
            google_message(&resp),
            "PERMISSION_DENIED Permission 'run.jobs.runWithOverrides' denied"
        );
    }
}
