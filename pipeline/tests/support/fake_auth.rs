//! A loopback fake of the endpoints behind Google's key-less credentials: the OAuth token
//! endpoint (an authorized user's refresh), the Security Token Service (`sts.v1.json`
//! `v1/token`, workload identity federation), the IAM Service Account Credentials API
//! (`iamcredentials.v1.json` `generateAccessToken`, impersonation), a URL that serves subject
//! tokens, and an `/api` that accepts only tokens this fake issued and says which kind it got.
//!
//! Requests are checked against the discovery documents: every STS form field must be a field
//! of `GoogleIdentityStsV1ExchangeTokenRequest` (in its `snake_case` wire form), every
//! `generateAccessToken` body a `GenerateAccessTokenRequest`; the fake's answers are checked
//! against the response schemas. Like the other fakes it runs on its own thread and runtime.

use super::loopback::{Bound, Server};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::discovery::Discovery;

pub(crate) const SUBJECT_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.external-subject.signature";
pub(crate) const AUDIENCE: &str = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/provider";
pub(crate) const SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub(crate) const TARGET: &str = "autotune@test-project.iam.gserviceaccount.com";
pub(crate) const CLIENT_ID: &str =
    "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com";
pub(crate) const CLIENT_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
pub(crate) const REFRESH_TOKEN: &str = "1//refresh-token-of-a-gcloud-user";
pub(crate) const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    /// The form fields or JSON body.
    pub body: Value,
    pub authorization: Option<String>,
}

struct State {
    sts: Discovery,
    iam: Discovery,
    /// Issued tokens and their kind: `user`, `sts`, `impersonated`.
    tokens: Vec<(String, &'static str)>,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    refuse_exchange: bool,
}

pub(crate) struct FakeAuth {
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl FakeAuth {
    pub(crate) fn start() -> Self {
        let bound = Bound::new();
        let addr = bound.addr;
        let state = Arc::new(Mutex::new(State {
            sts: Discovery::load("sts.v1.json"),
            iam: Discovery::load("iamcredentials.v1.json"),
            tokens: Vec::new(),
            requests: Vec::new(),
            violations: Vec::new(),
            refuse_exchange: false,
        }));
        let shared = state.clone();
        let server = bound.serve(move |req| handle(shared.clone(), req));
        Self {
            url: format!("http://{addr}"),
            state,
            _server: server,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on the STS refuses every exchange (400 `invalid_grant`).
    pub(crate) fn refuse_exchanges(&self) {
        self.state().refuse_exchange = true;
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Requests whose path ends with `suffix`.
    pub(crate) fn requests_to(&self, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    pub(crate) fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// The impersonation URL of [`TARGET`] on this fake.
    pub(crate) fn impersonation_url(&self) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken",
            self.url
        )
    }

    /// An `authorized_user` credentials file as `gcloud auth application-default login` writes
    /// it, with its token endpoint on this fake.
    pub(crate) fn authorized_user(&self) -> Value {
        json!({
            "type": "authorized_user",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
            "token_uri": format!("{}/token", self.url),
            "universe_domain": "googleapis.com",
        })
    }

    /// An `external_account` credentials file (workload identity federation) with its STS on
    /// this fake, `credential_source` as given, impersonating [`TARGET`] when asked.
    pub(crate) fn external_account(&self, credential_source: Value, impersonate: bool) -> Value {
        let mut v = json!({
            "type": "external_account",
            "audience": AUDIENCE,
            "subject_token_type": SUBJECT_TOKEN_TYPE,
            "token_url": format!("{}/v1/token", self.url),
        });
        v["credential_source"] = credential_source;
        if impersonate {
            v["service_account_impersonation_url"] = json!(self.impersonation_url());
        }
        v
    }
}

fn answer(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn form(body: &[u8]) -> Value {
    let mut fields = serde_json::Map::new();
    for (k, v) in form_urlencoded(body) {
        fields.insert(k, Value::String(v));
    }
    Value::Object(fields)
}

fn form_urlencoded(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// `subject_token_type` → `subjectTokenType`.
fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let json_body = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let body = if json_body {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    } else {
        form(&body)
    };
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.requests.push(Recorded {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
        authorization: authorization.clone(),
    });
    let bearer = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned);
    let (status, value) = match (method.as_str(), path.as_str()) {
        ("POST", "/token") => s.refresh(&body),
        ("POST", "/v1/token") => s.exchange(&body, authorization.as_deref()),
        ("POST", p) if p.ends_with(":generateAccessToken") => {
            s.generate(p, &body, bearer.as_deref())
        }
        ("GET", "/subject") => (200, json!({ "id_token": SUBJECT_TOKEN })),
        ("GET", "/api") => match s.kind_of(bearer.as_deref()) {
            Some(kind) => (200, json!({ "kind": kind })),
            None => (
                401,
                json!({"error": {"code": 401, "message": "Invalid Credentials"}}),
            ),
        },
        _ => (404, json!({"error": {"code": 404, "message": "not found"}})),
    };
    Ok(answer(status, &value))
}

impl State {
    fn issue(&mut self, kind: &'static str) -> String {
        let token = format!("ya29.{kind}-{}", self.tokens.len() + 1);
        self.tokens.push((token.clone(), kind));
        token
    }

    fn kind_of(&self, bearer: Option<&str>) -> Option<&'static str> {
        let bearer = bearer?;
        self.tokens
            .iter()
            .find(|(t, _)| t == bearer)
            .map(|(_, kind)| *kind)
    }

    fn expect(&mut self, what: &str, got: &Value, want: &str) {
        if got != want {
            self.violations
                .push(format!("{what}: {got}, expected {want:?}"));
        }
    }

    /// An authorized user's refresh grant (<https://developers.google.com/identity/protocols/oauth2/native-app#offline>).
    fn refresh(&mut self, body: &Value) -> (u16, Value) {
        self.expect("grant_type", &body["grant_type"], "refresh_token");
        self.expect("refresh_token", &body["refresh_token"], REFRESH_TOKEN);
        self.expect("client_id", &body["client_id"], CLIENT_ID);
        self.expect("client_secret", &body["client_secret"], CLIENT_SECRET);
        let token = self.issue("user");
        (
            200,
            json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer", "scope": CLOUD_PLATFORM}),
        )
    }

    /// STS `v1/token`: an RFC 8693 token exchange, form-encoded.
    fn exchange(&mut self, body: &Value, authorization: Option<&str>) -> (u16, Value) {
        if authorization.is_some() {
            self.violations
                .push("the STS call carries an Authorization header".to_owned());
        }
        let fields = body.as_object().cloned().unwrap_or_default();
        let as_request: serde_json::Map<String, Value> =
            fields.iter().map(|(k, v)| (camel(k), v.clone())).collect();
        for v in self.sts.check(
            "GoogleIdentityStsV1ExchangeTokenRequest",
            &Value::Object(as_request),
        ) {
            self.violations.push(format!("STS request: {v}"));
        }
        self.expect(
            "grant_type",
            &body["grant_type"],
            "urn:ietf:params:oauth:grant-type:token-exchange",
        );
        self.expect(
            "requested_token_type",
            &body["requested_token_type"],
            "urn:ietf:params:oauth:token-type:access_token",
        );
        self.expect("audience", &body["audience"], AUDIENCE);
        self.expect(
            "subject_token_type",
            &body["subject_token_type"],
            SUBJECT_TOKEN_TYPE,
        );
        if self.refuse_exchange {
            return (
                400,
                json!({"error": "invalid_grant", "error_description": "The audience in ID Token does not match the expected audience."}),
            );
        }
        if body["subject_token"] != SUBJECT_TOKEN {
            return (
                400,
                json!({"error": "invalid_grant", "error_description": "Invalid subject token"}),
            );
        }
        let token = self.issue("sts");
        let out = json!({
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 3600,
        });
        for v in self
            .sts
            .check("GoogleIdentityStsV1ExchangeTokenResponse", &out)
        {
            self.violations.push(format!("fake STS answer: {v}"));
        }
        (200, out)
    }

    /// IAM credentials `generateAccessToken` for [`TARGET`], called with a federated or user
    /// token.
    fn generate(&mut self, path: &str, body: &Value, bearer: Option<&str>) -> (u16, Value) {
        let expected = format!("/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken");
        if path != expected {
            self.violations.push(format!("impersonation path {path}"));
        }
        for v in self.iam.check("GenerateAccessTokenRequest", body) {
            self.violations
                .push(format!("generateAccessToken request: {v}"));
        }
        let Some(kind) = self.kind_of(bearer) else {
            return (
                401,
                json!({"error": {"code": 401, "message": "Request had invalid authentication credentials."}}),
            );
        };
        if !matches!(kind, "sts" | "user") {
            self.violations
                .push(format!("impersonation called with a {kind} token"));
        }
        let scopes: Vec<&str> = body["scope"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if scopes.is_empty() || scopes.contains(&IAM_SCOPE) {
            self.violations
                .push(format!("impersonated token scopes {scopes:?}"));
        }
        let token = self.issue("impersonated");
        let expire = chrono::Utc::now() + chrono::Duration::hours(1);
        let out = json!({
            "accessToken": token,
            "expireTime": expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        for v in self.iam.check("GenerateAccessTokenResponse", &out) {
            self.violations.push(format!("fake IAM answer: {v}"));
        }
        (200, out)
    }
}
