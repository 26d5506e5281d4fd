//! The request flow, host-independent: method and size checks, authentication, decoding,
//! filtering, storm control and the job start. Every outbound call goes through
//! [`Upstream`], so this module is exercised natively with scripted fakes and, compiled to
//! wasm, by the end-to-end tests under `wasmtime serve`.
//!
//! The answer is an [`Outcome`] or a [`Rejection`]; [`crate::reply`] maps both to HTTP.

use crate::auth::{self, AuthError, Expect};
use crate::config::{self, AuthMode, Settings};
use crate::event::{self, header};
use crate::filter::{self, Decision};
use crate::log::{Severity, emit};
use crate::reply::{Outcome, Rejection, Reply};
use crate::run_api::{self, AccessToken};
use crate::upstream::{Method, OutRequest, OutResponse, Upstream};
use sha2::Digest as _;

/// JWKS lifetime when the response has no usable `Cache-Control: max-age`.
pub const DEFAULT_JWKS_MAX_AGE_SECS: i64 = 3600;
/// A token with an unknown `kid` triggers a JWKS refetch (key rotation) at most this often.
pub const JWKS_MIN_REFETCH_SECS: i64 = 60;

/// An inbound request as the glue hands it over.
#[derive(Debug, Clone, Default)]
pub struct InboundRequest {
    pub method: String,
    /// Lower-case names; values that are not UTF-8 are dropped.
    pub headers: Vec<(String, String)>,
    /// At most [`crate::MAX_BODY_BYTES`] bytes.
    pub body: Vec<u8>,
    /// The body was longer than the limit (reading stopped there).
    pub body_too_large: bool,
}

#[derive(Debug, Clone)]
struct CachedJwks {
    jwks: auth::Jwks,
    fetched_at: i64,
    max_age: i64,
}

/// The key set of `JWKS_JSON`, parsed once per instance; `source` is the text it came from, so
/// a changed setting (only possible in tests) is parsed again.
#[derive(Debug)]
struct PreloadedJwks {
    source: String,
    jwks: auth::Jwks,
}

/// State kept between requests served by the same instance: the metadata access token and
/// the JWKS. Hosts that reuse instances (`wasmtime serve --max-instance-reuse-count`, Spin
/// with instance reuse) skip those fetches; with one instance per request they are refetched,
/// unless `JWKS_JSON` preloads the keys.
#[derive(Debug, Default)]
pub struct State {
    token: Option<AccessToken>,
    jwks: Option<CachedJwks>,
    preloaded: Option<PreloadedJwks>,
    /// SHA-256 of ID tokens that passed verification, with their `exp`. Pub/Sub and Eventarc
    /// reuse one token for many deliveries; this skips the RSA work for them.
    verified: Vec<([u8; 32], i64)>,
}

/// Verified ID tokens remembered per instance.
pub const VERIFIED_TOKEN_CACHE: usize = 32;

/// Handles one request. `env` reads a setting, `now` is Unix seconds.
pub fn handle(
    req: &InboundRequest,
    env: &dyn Fn(&str) -> Option<String>,
    up: &mut dyn Upstream,
    state: &mut State,
    now: i64,
) -> Reply {
    let reply = Reply::from(handle_inner(req, env, up, state, now));
    let outcome = reply.body["outcome"].as_str().unwrap_or("");
    let reason = reply.body["reason"].as_str().unwrap_or("");
    let severity = match reply.status {
        200..=299 => Severity::Info,
        400..=499 => Severity::Warning,
        _ => Severity::Error,
    };
    let status = reply.status.to_string();
    emit(
        severity,
        &format!("{outcome}: {reason}"),
        &[("status", &status)],
    );
    reply
}

fn handle_inner(
    req: &InboundRequest,
    env: &dyn Fn(&str) -> Option<String>,
    up: &mut dyn Upstream,
    state: &mut State,
    now: i64,
) -> Result<Outcome, Rejection> {
    if req.method != "POST" {
        return Err(Rejection::MethodNotAllowed(req.method.clone()));
    }
    if req.body_too_large {
        return Err(Rejection::BodyTooLarge);
    }
    let settings = config::load(env)?;
    preload_jwks(&settings, state)?;
    authenticate(req, &settings, up, state, now)?;
    let ev = event::decode(&req.headers, &req.body)?;
    let object = format!("gs://{}/{}", ev.bucket, ev.object);
    if let Decision::Ignore(reason) = filter::decide(&ev, &settings.filter) {
        return Ok(Outcome::Ignored {
            reason,
            object,
            event_id: ev.id,
        });
    }
    start_job(&settings, &ev, object, up, state, now)
}

/// Parses `JWKS_JSON` into `state.preloaded` unless the same text is already parsed there: once
/// per instance, so a host that reuses instances pays for the JSON and the key construction once.
fn preload_jwks(s: &Settings, state: &mut State) -> Result<(), config::ConfigError> {
    let AuthMode::Oidc {
        jwks_json: Some(text),
        ..
    } = &s.auth
    else {
        state.preloaded = None;
        return Ok(());
    };
    if state.preloaded.as_ref().is_some_and(|p| p.source == *text) {
        return Ok(());
    }
    state.preloaded = None;
    let jwks = auth::parse_jwks(text.as_bytes()).map_err(|problem| config::ConfigError {
        setting: "JWKS_JSON",
        problem: format!(
            "{problem} (expected the JSON key set served at JWKS_URL, e.g. \
             `curl https://www.googleapis.com/oauth2/v3/certs`)"
        ),
    })?;
    state.preloaded = Some(PreloadedJwks {
        source: text.clone(),
        jwks,
    });
    Ok(())
}

fn authenticate(
    req: &InboundRequest,
    s: &Settings,
    up: &mut dyn Upstream,
    state: &mut State,
    now: i64,
) -> Result<(), Rejection> {
    match &s.auth {
        AuthMode::None => {
            emit(
                Severity::Warning,
                "AUTH_MODE=none: request accepted without authentication (local use only)",
                &[],
            );
            Ok(())
        }
        AuthMode::Token { secret } => Ok(auth::check_shared_secret(
            header(&req.headers, auth::TOKEN_HEADER),
            secret,
        )?),
        AuthMode::Oidc {
            audience,
            allowed_invokers,
            jwks_url,
            ..
        } => {
            let token = auth::bearer(header(&req.headers, "authorization"))?;
            let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            state
                .verified
                .retain(|(_, exp)| exp + auth::LEEWAY_SECS >= now);
            if state.verified.iter().any(|(d, _)| *d == digest) {
                return Ok(());
            }
            let t = auth::parse_token(token)?;
            let expect = Expect {
                audience,
                allowed_invokers,
                now,
            };
            // JWKS_JSON first (no fetch); a kid it lacks (Google rotated its keys since the
            // setting was filled) falls back to JWKS_URL, rate-limited like any unknown kid.
            let preloaded = state.preloaded.as_ref().map(|p| p.jwks.key(&t.kid));
            let verified = if let Some(Some(key)) = preloaded {
                auth::verify(&t, key, expect)
            } else {
                if preloaded.is_some() {
                    emit(
                        Severity::Warning,
                        &format!(
                            "JWT kid {:?} is not in JWKS_JSON; using JWKS_URL \
                             (refresh JWKS_JSON from {jwks_url})",
                            t.kid
                        ),
                        &[],
                    );
                }
                let key = jwks_key(&t.kid, jwks_url, s.job.timeout_ms, up, state, now)?;
                auth::verify(&t, &key, expect)
            };
            let caller = verified?;
            if state.verified.len() >= VERIFIED_TOKEN_CACHE {
                state.verified.remove(0);
            }
            state.verified.push((digest, caller.exp));
            Ok(())
        }
    }
}

/// The key for `kid`, from the cache or a fresh JWKS fetch.
fn jwks_key(
    kid: &str,
    url: &str,
    timeout_ms: u32,
    up: &mut dyn Upstream,
    state: &mut State,
    now: i64,
) -> Result<rsa::RsaPublicKey, Rejection> {
    if let Some(c) = &state.jwks {
        let fresh = now - c.fetched_at < c.max_age;
        if fresh {
            if let Some(k) = c.jwks.key(kid) {
                return Ok(k.clone());
            }
            if now - c.fetched_at < JWKS_MIN_REFETCH_SECS {
                return Err(unknown_kid());
            }
        }
    }
    let req = OutRequest {
        method: Method::Get,
        url: url.to_owned(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
        timeout_ms,
    };
    let resp = call(up, &req, "JWKS fetch")?;
    let jwks = auth::parse_jwks(&resp.body).map_err(Rejection::UnusableJwks)?;
    let max_age = resp
        .cache_control
        .as_deref()
        .and_then(max_age)
        .unwrap_or(DEFAULT_JWKS_MAX_AGE_SECS)
        .clamp(JWKS_MIN_REFETCH_SECS, 86_400);
    let key = jwks.key(kid).cloned();
    state.jwks = Some(CachedJwks {
        jwks,
        fetched_at: now,
        max_age,
    });
    key.ok_or_else(unknown_kid)
}

fn unknown_kid() -> Rejection {
    Rejection::Unauthorized(AuthError("unknown JWT kid".into()))
}

/// `max-age=N` from a Cache-Control value.
fn max_age(cc: &str) -> Option<i64> {
    cc.split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim().parse().ok())
}

/// Sends `req`; a transport error or a non-2xx answer is the rejection to answer with.
fn call(
    up: &mut dyn Upstream,
    req: &OutRequest,
    what: &'static str,
) -> Result<OutResponse, Rejection> {
    match up.send(req) {
        Err(error) => Err(Rejection::Unreachable {
            call: what,
            method: req.method,
            url: req.url.clone(),
            error,
        }),
        Ok(r) if (200..300).contains(&r.status) => Ok(r),
        Ok(r) => Err(Rejection::Upstream {
            call: what,
            method: req.method,
            url: req.url.clone(),
            status: r.status,
            message: run_api::google_message(&r),
        }),
    }
}

/// The cached access token, or a fresh one from the metadata server.
fn access_token(
    s: &Settings,
    up: &mut dyn Upstream,
    state: &mut State,
    now: i64,
) -> Result<String, Rejection> {
    if let Some(t) = &state.token
        && now < t.refresh_at
    {
        return Ok(t.token.clone());
    }
    let resp = call(
        up,
        &run_api::token_request(&s.job),
        "metadata token request",
    )?;
    let t = run_api::parse_token(&resp.body, now).map_err(Rejection::UnusableAccessToken)?;
    let token = t.token.clone();
    state.token = Some(t);
    Ok(token)
}

fn start_job(
    s: &Settings,
    ev: &event::StorageEvent,
    object: String,
    up: &mut dyn Upstream,
    state: &mut State,
    now: i64,
) -> Result<Outcome, Rejection> {
    let started = try_start_job(s, ev, object, up, state, now);
    if let Err(r) = &started
        && r.refused_access_token()
    {
        // A refused access token may have been revoked or rotated: fetch a new one next time.
        state.token = None;
    }
    started
}

fn try_start_job(
    s: &Settings,
    ev: &event::StorageEvent,
    object: String,
    up: &mut dyn Upstream,
    state: &mut State,
    now: i64,
) -> Result<Outcome, Rejection> {
    let token = access_token(s, up, state, now)?;

    // Storm control: a bulk upload of thousands of files must not start thousands of runs.
    // Two events racing past this check can still start two executions; the pipeline's lock
    // gate is the second line of defence.
    let job = call(up, &run_api::get_job_request(&s.job, &token), "jobs.get")?;
    if let Some(busy) = run_api::latest_busy_execution(&job.body).map_err(Rejection::UnusableJob)? {
        return Ok(Outcome::AlreadyRunning {
            execution: busy.execution,
            status: busy.status,
            object,
            event_id: ev.id.clone(),
        });
    }

    let op = call(up, &run_api::run_request(&s.job, &token, ev), "jobs.run")?;
    Ok(Outcome::Started {
        job: run_api::job_name(&s.job),
        execution: run_api::started_execution(&op.body).unwrap_or_default(),
        object,
        event_id: ev.id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        AUDIENCE, INVOKER, SECRET, check_against_discovery, fixture, good_claims, test_key, with,
    };
    use crate::upstream::TransportError;
    use serde_json::{Value, json};
    use std::collections::HashMap;

    /// In-process upstream: answers by URL suffix, records every request.
    #[derive(Default)]
    struct Script {
        answers: HashMap<&'static str, Result<OutResponse, TransportError>>,
        sent: Vec<OutRequest>,
    }

    #[allow(clippy::unnecessary_wraps)] // the scripted answer type
    fn ok(status: u16, body: &str) -> Result<OutResponse, TransportError> {
        Ok(OutResponse {
            status,
            cache_control: None,
            body: body.as_bytes().to_vec(),
        })
    }

    const TOKEN_URL: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
    const JOB_URL: &str = "/v2/projects/p/locations/r/jobs/j";
    const RUN_URL: &str = "/v2/projects/p/locations/r/jobs/j:run";
    const JWKS_URL: &str = "/certs";

    impl Script {
        fn google() -> Self {
            let mut s = Script::default();
            s.answers.insert(
                TOKEN_URL,
                ok(
                    200,
                    r#"{"access_token":"ya29.t","expires_in":3599,"token_type":"Bearer"}"#,
                ),
            );
            s.answers.insert(
                JOB_URL,
                ok(200, r#"{"name":"projects/p/locations/r/jobs/j"}"#),
            );
            s.answers.insert(
                RUN_URL,
                ok(200, r#"{"name":"op","metadata":{"name":"projects/p/locations/r/jobs/j/executions/j-1"}}"#),
            );
            let jwks = String::from_utf8(test_key().jwks()).unwrap();
            s.answers.insert(
                JWKS_URL,
                Ok(OutResponse {
                    status: 200,
                    cache_control: Some("public, max-age=20000, must-revalidate".into()),
                    body: jwks.into_bytes(),
                }),
            );
            s
        }

        fn count(&self, suffix: &str) -> usize {
            self.sent.iter().filter(|r| r.url.ends_with(suffix)).count()
        }
    }

    impl Upstream for Script {
        fn send(&mut self, req: &OutRequest) -> Result<OutResponse, TransportError> {
            self.sent.push(req.clone());
            self.answers
                .iter()
                .filter(|(k, _)| req.url.ends_with(**k))
                .max_by_key(|(k, _)| k.len())
                .map_or_else(|| ok(404, "{}"), |(_, v)| v.clone())
        }
    }

    fn env(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let mut m: HashMap<&str, &str> = [
            ("BUCKET_NAME", "ml-bucket"),
            ("GCP_PROJECT", "p"),
            ("REGION", "r"),
            ("JOB_NAME", "j"),
            ("RUN_API_ENDPOINT", "http://run.test"),
            ("GCE_METADATA_HOST", "metadata.test"),
            ("JWKS_URL", "http://keys.test/certs"),
            ("AUDIENCE", AUDIENCE),
            ("ALLOWED_INVOKERS", INVOKER),
        ]
        .into_iter()
        .collect();
        m.extend(extra.iter().copied());
        let m: HashMap<String, String> = m
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn pubsub_request(auth: Option<String>) -> InboundRequest {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(a) = auth {
            headers.push(("authorization".into(), a));
        }
        InboundRequest {
            method: "POST".into(),
            headers,
            body: fixture("pubsub_finalize.json"),
            body_too_large: false,
        }
    }

    #[allow(clippy::unnecessary_wraps)] // the optional Authorization header of `pubsub_request`
    fn bearer() -> Option<String> {
        Some(format!("Bearer {}", test_key().sign(&good_claims())))
    }

    fn run(req: &InboundRequest, up: &mut Script, state: &mut State) -> Reply {
        handle(req, &env(&[]), up, state, crate::testutil::now())
    }

    #[test]
    fn accepted_event_starts_exactly_one_execution() {
        let mut up = Script::google();
        let mut state = State::default();
        let r = run(&pubsub_request(bearer()), &mut up, &mut state);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["outcome"], "started");
        assert_eq!(
            r.body["execution"],
            "projects/p/locations/r/jobs/j/executions/j-1"
        );
        assert_eq!(up.count(":run"), 1);
        let run = up.sent.iter().find(|r| r.url.ends_with(":run")).unwrap();
        assert_eq!(run.url, format!("http://run.test{RUN_URL}"));
        assert!(
            run.headers
                .contains(&("authorization".into(), "Bearer ya29.t".into()))
        );
        let body: Value = serde_json::from_slice(&run.body).unwrap();
        assert!(check_against_discovery(&body, "GoogleCloudRunV2RunJobRequest").is_empty());
        let env = &body["overrides"]["containerOverrides"][0]["env"];
        assert_eq!(
            env[0],
            json!({"name": "TRIGGER_BUCKET", "value": "ml-bucket"})
        );
        assert_eq!(env[1]["value"], "raw_training_data/batch-7/sample_001.png");
        assert_eq!(env[2]["value"], "1732442400123456");
        assert_eq!(env[3]["value"], "2070443601311540");
        // The metadata request carries Metadata-Flavor and goes to GCE_METADATA_HOST.
        let tok = up.sent.iter().find(|r| r.url.ends_with(TOKEN_URL)).unwrap();
        assert_eq!(tok.url, format!("http://metadata.test{TOKEN_URL}"));
        assert!(
            tok.headers
                .contains(&("metadata-flavor".into(), "Google".into()))
        );
    }

    #[test]
    fn token_and_jwks_are_cached_between_requests() {
        let mut up = Script::google();
        let mut state = State::default();
        for _ in 0..3 {
            let r = run(&pubsub_request(bearer()), &mut up, &mut state);
            assert_eq!(r.status, 200, "{}", r.body);
        }
        assert_eq!(up.count(TOKEN_URL), 1);
        assert_eq!(up.count(JWKS_URL), 1);
        assert_eq!(up.count(":run"), 3);
        // Past the refresh point the token is fetched again.
        let later = crate::testutil::now() + 3600;
        let claims = with(&good_claims(), "exp", json!(later + 3600));
        let req = pubsub_request(Some(format!("Bearer {}", test_key().sign(&claims))));
        let r = handle(&req, &env(&[]), &mut up, &mut state, later);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(up.count(TOKEN_URL), 2);
    }

    #[test]
    fn a_percent_encoded_ce_subject_starts_the_job() {
        // Binary mode as a spec-following CloudEvents SDK sends it (issue 10 item 6).
        let name = "raw_training_data/naïve café 100%.txt";
        let headers = [
            ("content-type", "application/json; charset=utf-8"),
            ("ce-specversion", "1.0"),
            ("ce-id", "ev-encoded"),
            ("ce-type", "google.cloud.storage.object.v1.finalized"),
            (
                "ce-source",
                "//storage.googleapis.com/projects/_/buckets/ml-bucket",
            ),
            (
                "ce-subject",
                "objects/raw_training_data/na%C3%AFve%20caf%C3%A9%20100%25.txt",
            ),
            ("x-trigger-token", SECRET),
        ];
        let req = InboundRequest {
            method: "POST".into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: json!({"bucket": "ml-bucket", "name": name, "generation": "3"})
                .to_string()
                .into_bytes(),
            body_too_large: false,
        };
        let e = env(&[("AUTH_MODE", "token"), ("TRIGGER_TOKEN", SECRET)]);
        let mut up = Script::google();
        let r = handle(
            &req,
            &e,
            &mut up,
            &mut State::default(),
            crate::testutil::now(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["outcome"], "started");
        assert_eq!(r.body["object"], format!("gs://ml-bucket/{name}"));
        let run = up.sent.iter().find(|r| r.url.ends_with(":run")).unwrap();
        let body: Value = serde_json::from_slice(&run.body).unwrap();
        assert_eq!(
            body["overrides"]["containerOverrides"][0]["env"][1],
            json!({"name": "TRIGGER_OBJECT", "value": name})
        );
    }

    #[test]
    fn running_execution_suppresses_a_start() {
        for latest in [
            r#"{"name":"j-0","completionStatus":"EXECUTION_RUNNING"}"#,
            r#"{"name":"j-0","completionStatus":"EXECUTION_PENDING"}"#,
        ] {
            let mut up = Script::google();
            up.answers.insert(
                JOB_URL,
                ok(
                    200,
                    &format!(r#"{{"name":"x","latestCreatedExecution":{latest}}}"#),
                ),
            );
            let r = run(&pubsub_request(bearer()), &mut up, &mut State::default());
            assert_eq!(r.status, 200);
            assert_eq!(r.body["outcome"], "already_running");
            assert_eq!(r.body["execution"], "j-0");
            assert_eq!(up.count(":run"), 0);
        }
    }

    #[test]
    fn ignored_events_start_nothing_and_say_why() {
        let mut up = Script::google();
        let mut state = State::default();
        for f in ["pubsub_delete.json", "pubsub_metadata_update.json"] {
            let mut req = pubsub_request(bearer());
            req.body = fixture(f);
            let r = run(&req, &mut up, &mut state);
            assert_eq!(r.status, 200);
            assert_eq!(r.body["outcome"], "ignored");
            assert!(
                r.body["reason"]
                    .as_str()
                    .unwrap()
                    .contains("not an object finalize")
            );
        }
        let mut req = pubsub_request(bearer());
        let mut v: Value = serde_json::from_slice(&req.body).unwrap();
        v["message"]["attributes"]["objectId"] = json!("training_datasets/run-1/sft_train.jsonl");
        v["message"]["payloadFormat"] = json!("NONE");
        v["message"].as_object_mut().unwrap().remove("data");
        req.body = v.to_string().into_bytes();
        let r = run(&req, &mut up, &mut state);
        assert_eq!(r.body["outcome"], "ignored");
        assert!(r.body["reason"].as_str().unwrap().contains("JSONL_FOLDER"));
        assert_eq!(up.count(":run"), 0);
        assert_eq!(
            up.count(TOKEN_URL),
            0,
            "ignored events must not touch Google"
        );
    }

    #[test]
    fn upstream_failures_map_to_503_or_500() {
        let cases: Vec<(&str, Result<OutResponse, TransportError>, u16)> = vec![
            (
                RUN_URL,
                ok(
                    429,
                    r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
                ),
                503,
            ),
            (RUN_URL, ok(503, "unavailable"), 503),
            (
                RUN_URL,
                Err(TransportError::Timeout("first byte".into())),
                503,
            ),
            (
                RUN_URL,
                ok(
                    403,
                    r#"{"error":{"code":403,"message":"Permission 'run.jobs.runWithOverrides' denied","status":"PERMISSION_DENIED"}}"#,
                ),
                500,
            ),
            (
                RUN_URL,
                ok(
                    404,
                    r#"{"error":{"code":404,"message":"Job not found","status":"NOT_FOUND"}}"#,
                ),
                500,
            ),
            (
                RUN_URL,
                ok(
                    400,
                    r#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#,
                ),
                500,
            ),
            (JOB_URL, ok(500, "boom"), 503),
            (JOB_URL, ok(200, "not json"), 503),
            (
                TOKEN_URL,
                Err(TransportError::Failed("connection refused".into())),
                503,
            ),
            (TOKEN_URL, ok(200, "{}"), 503),
            (JWKS_URL, ok(503, ""), 503),
            (JWKS_URL, ok(200, r#"{"keys":[]}"#), 503),
        ];
        for (url, answer, want) in cases {
            let mut up = Script::google();
            up.answers.insert(url, answer.clone());
            let r = run(&pubsub_request(bearer()), &mut up, &mut State::default());
            assert_eq!(r.status, want, "{url} {answer:?}: {}", r.body);
            assert_eq!(r.body["outcome"], "error");
            if want == 500 {
                let reason = r.body["reason"].as_str().unwrap();
                assert!(reason.contains("jobs.run answered"), "{reason}");
            }
        }
        // Google's message reaches the reason (and so the log).
        let mut up = Script::google();
        up.answers.insert(RUN_URL, ok(403, r#"{"error":{"code":403,"message":"Permission denied on job","status":"PERMISSION_DENIED"}}"#));
        let r = run(&pubsub_request(bearer()), &mut up, &mut State::default());
        assert!(
            r.body["reason"]
                .as_str()
                .unwrap()
                .contains("PERMISSION_DENIED Permission denied on job")
        );
    }

    #[test]
    fn a_refused_access_token_is_dropped_from_the_cache() {
        let mut up = Script::google();
        let mut state = State::default();
        up.answers.insert(
            JOB_URL,
            ok(
                401,
                r#"{"error":{"code":401,"message":"expired","status":"UNAUTHENTICATED"}}"#,
            ),
        );
        let r = run(&pubsub_request(bearer()), &mut up, &mut state);
        assert_eq!(r.status, 503);
        up.answers.insert(JOB_URL, ok(200, "{}"));
        let r = run(&pubsub_request(bearer()), &mut up, &mut state);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(up.count(TOKEN_URL), 2);
    }

    #[test]
    fn refused_callers_get_401_and_start_nothing() {
        let mut up = Script::google();
        let mut state = State::default();
        let k = test_key();
        let bad = [
            None,
            Some("Bearer not-a-jwt".to_owned()),
            Some(format!(
                "Bearer {}",
                k.sign(&with(&good_claims(), "aud", json!("x")))
            )),
            Some(format!(
                "Bearer {}",
                crate::testutil::other_key().sign(&good_claims())
            )),
            Some(format!("Basic {}", k.sign(&good_claims()))),
        ];
        for auth in bad {
            let r = run(&pubsub_request(auth.clone()), &mut up, &mut state);
            assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
            assert!(
                r.body["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("unauthorized")
            );
        }
        assert_eq!(up.count(":run"), 0);
        assert_eq!(up.count(TOKEN_URL), 0);
    }

    #[test]
    fn unknown_kid_refetches_jwks_at_most_once_a_minute() {
        let mut up = Script::google();
        let mut state = State::default();
        let k = test_key();
        let unknown = k.sign_with_header(&json!({"alg":"RS256","kid":"rotated"}), &good_claims());
        let now = crate::testutil::now();
        let req = pubsub_request(Some(format!("Bearer {unknown}")));
        for _ in 0..5 {
            assert_eq!(
                handle(&req, &env(&[]), &mut up, &mut state, now).status,
                401
            );
        }
        assert_eq!(up.count(JWKS_URL), 1);
        assert_eq!(
            handle(&req, &env(&[]), &mut up, &mut state, now + 61).status,
            401
        );
        assert_eq!(up.count(JWKS_URL), 2);
    }

    fn jwks_json() -> String {
        String::from_utf8(test_key().jwks()).unwrap()
    }

    #[test]
    fn preloaded_jwks_verifies_without_a_fetch() {
        let mut up = Script::google();
        // Any fetch of JWKS_URL would fail the request.
        up.answers.insert(JWKS_URL, ok(503, ""));
        let mut state = State::default();
        let now = crate::testutil::now();
        let doc = jwks_json();
        let e = env(&[("JWKS_JSON", &doc)]);
        for i in 0..3 {
            // A different token each time, so the verified-token cache does not answer.
            let claims = with(&good_claims(), "iat", json!(now - i));
            let req = pubsub_request(Some(format!("Bearer {}", test_key().sign(&claims))));
            let r = handle(&req, &e, &mut up, &mut state, now);
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["outcome"], "started");
        }
        assert_eq!(up.count(JWKS_URL), 0, "JWKS_URL must not be fetched");
        assert_eq!(up.count(":run"), 3);
        assert_eq!(state.preloaded.as_ref().unwrap().jwks.len(), 1);
        // Forged tokens are still refused by the preloaded key.
        let forged = format!(
            "Bearer {}",
            crate::testutil::other_key().sign(&good_claims())
        );
        let r = handle(&pubsub_request(Some(forged)), &e, &mut up, &mut state, now);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(up.count(JWKS_URL), 0);
        // Parsed once per instance: the same text is kept (same allocation), another is parsed.
        let held = |state: &State| state.preloaded.as_ref().unwrap().source.as_ptr();
        let before = held(&state);
        preload_jwks(&config::load(&e).unwrap(), &mut state).unwrap();
        assert_eq!(
            held(&state),
            before,
            "the same JWKS_JSON is not parsed again"
        );
        let mut old = crate::testutil::other_key().jwk();
        old["kid"] = json!("k2");
        let other_doc = json!({"keys": [old]}).to_string();
        preload_jwks(
            &config::load(&env(&[("JWKS_JSON", &other_doc)])).unwrap(),
            &mut state,
        )
        .unwrap();
        assert_eq!(state.preloaded.as_ref().unwrap().source, other_doc);
        assert!(state.preloaded.as_ref().unwrap().jwks.key("k2").is_some());
        preload_jwks(&config::load(&e).unwrap(), &mut state).unwrap();
        assert_eq!(state.preloaded.as_ref().unwrap().source, doc);
    }

    #[test]
    fn a_kid_missing_from_jwks_json_falls_back_to_jwks_url() {
        // JWKS_JSON holds only an older key; the token is signed with the current one.
        let mut old = crate::testutil::other_key().jwk();
        old["kid"] = json!("retired-kid");
        let doc = json!({"keys": [old]}).to_string();
        let e = env(&[("JWKS_JSON", &doc)]);
        let mut up = Script::google();
        let mut state = State::default();
        let now = crate::testutil::now();
        let r = handle(&pubsub_request(bearer()), &e, &mut up, &mut state, now);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(up.count(JWKS_URL), 1, "rotated key fetched from JWKS_URL");
        // The fetched set is cached as before: another token with that kid fetches nothing.
        let claims = with(&good_claims(), "iat", json!(now - 7));
        let req = pubsub_request(Some(format!("Bearer {}", test_key().sign(&claims))));
        assert_eq!(handle(&req, &e, &mut up, &mut state, now).status, 200);
        assert_eq!(up.count(JWKS_URL), 1);
        // An unknown kid is still refetched at most once a minute.
        let k = test_key();
        let unknown = k.sign_with_header(&json!({"alg":"RS256","kid":"nowhere"}), &good_claims());
        let req = pubsub_request(Some(format!("Bearer {unknown}")));
        for _ in 0..3 {
            assert_eq!(handle(&req, &e, &mut up, &mut state, now).status, 401);
        }
        assert_eq!(up.count(JWKS_URL), 1);
        assert_eq!(handle(&req, &e, &mut up, &mut state, now + 61).status, 401);
        assert_eq!(up.count(JWKS_URL), 2);
    }

    #[test]
    fn a_malformed_jwks_json_is_a_configuration_error() {
        let small = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let small = json!({"keys": [{"kty": "RSA", "kid": "small",
            "n": crate::testutil::b64url(&rsa::traits::PublicKeyParts::n(&small).to_bytes_be()),
            "e": crate::testutil::b64url(&rsa::traits::PublicKeyParts::e(&small).to_bytes_be())}]})
        .to_string();
        let truncated = jwks_json()[..40].to_owned();
        for bad in [
            "not json",
            "{\"keys\":[]}",
            "[]",
            "https://www.googleapis.com/oauth2/v3/certs",
            &truncated,
            &small,
        ] {
            let mut up = Script::google();
            let mut state = State::default();
            let r = handle(
                &pubsub_request(bearer()),
                &env(&[("JWKS_JSON", bad)]),
                &mut up,
                &mut state,
                crate::testutil::now(),
            );
            assert_eq!(r.status, 500, "{bad}: {}", r.body);
            let reason = r.body["reason"].as_str().unwrap();
            assert!(
                reason.starts_with("configuration error: setting JWKS_JSON: "),
                "{reason}"
            );
            assert!(
                up.sent.is_empty(),
                "{bad}: nothing may be fetched or started"
            );
        }
        // Outside AUTH_MODE=oidc the setting is not used.
        let e = env(&[
            ("JWKS_JSON", "not json"),
            ("AUTH_MODE", "token"),
            ("TRIGGER_TOKEN", SECRET),
        ]);
        let mut req = pubsub_request(None);
        req.headers.push(("x-trigger-token".into(), SECRET.into()));
        let mut up = Script::google();
        let r = handle(
            &req,
            &e,
            &mut up,
            &mut State::default(),
            crate::testutil::now(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let mut up = Script::google();
        let mut state = State::default();
        let now = crate::testutil::now();
        let claims = with(&good_claims(), "exp", json!(now + 100));
        let req = pubsub_request(Some(format!("Bearer {}", test_key().sign(&claims))));
        assert_eq!(
            handle(&req, &env(&[]), &mut up, &mut state, now).status,
            200
        );
        // Without JWKS (cache dropped, endpoint failing) the remembered token still passes…
        state.jwks = None;
        up.answers.insert(JWKS_URL, ok(503, ""));
        assert_eq!(
            handle(&req, &env(&[]), &mut up, &mut state, now + 50).status,
            200
        );
        // …but not once it has expired.
        let r = handle(
            &req,
            &env(&[]),
            &mut up,
            &mut state,
            now + 100 + auth::LEEWAY_SECS + 1,
        );
        assert_ne!(r.status, 200);
        assert_eq!(up.count(JWKS_URL), 2);
    }

    #[test]
    fn shared_secret_mode() {
        let e = env(&[("AUTH_MODE", "token"), ("TRIGGER_TOKEN", SECRET)]);
        let mut up = Script::google();
        let mut req = pubsub_request(None);
        let now = crate::testutil::now();
        assert_eq!(
            handle(&req, &e, &mut up, &mut State::default(), now).status,
            401
        );
        req.headers
            .push(("x-trigger-token".into(), "wrong-wrong-wrong-wrong".into()));
        assert_eq!(
            handle(&req, &e, &mut up, &mut State::default(), now).status,
            401
        );
        req.headers.pop();
        req.headers.push(("x-trigger-token".into(), SECRET.into()));
        let r = handle(&req, &e, &mut up, &mut State::default(), now);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(up.count(":run"), 1);
        assert_eq!(up.count(JWKS_URL), 0);
    }

    #[test]
    fn method_size_decode_and_config_errors() {
        let e = env(&[("AUTH_MODE", "none")]);
        let now = crate::testutil::now();
        let mut up = Script::google();
        let mut req = pubsub_request(None);
        req.method = "GET".into();
        assert_eq!(
            handle(&req, &e, &mut up, &mut State::default(), now).status,
            405
        );
        let mut req = pubsub_request(None);
        req.body_too_large = true;
        assert_eq!(
            handle(&req, &e, &mut up, &mut State::default(), now).status,
            413
        );
        let mut req = pubsub_request(None);
        req.body = b"{\"message\":".to_vec();
        let r = handle(&req, &e, &mut up, &mut State::default(), now);
        assert_eq!(r.status, 400);
        assert!(
            r.body["reason"]
                .as_str()
                .unwrap()
                .starts_with("malformed event")
        );
        let broken = env(&[("AUTH_MODE", "none"), ("JOB_NAME", "a/b")]);
        let r = handle(
            &pubsub_request(None),
            &broken,
            &mut up,
            &mut State::default(),
            now,
        );
        assert_eq!(r.status, 500);
        assert!(r.body["reason"].as_str().unwrap().contains("JOB_NAME"));
        assert_eq!(up.count(":run"), 0);
    }
}
