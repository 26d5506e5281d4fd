//! Shared test helpers: fixtures, a generated RSA key that signs ID tokens and publishes a JWKS,
//! a loopback fake of Google (Run Admin API, metadata server, JWKS), the `wasmtime serve`
//! launcher and a raw HTTP/1.1 client (raw so hostile requests reach the server unmodified).
#![allow(dead_code)]

use base64::Engine as _;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) const BUCKET: &str = "ml-bucket";
pub(crate) const AUDIENCE: &str = "https://trigger.example.run.app/";
pub(crate) const INVOKER: &str = "eventarc-trigger@my-proj.iam.gserviceaccount.com";
pub(crate) const SECRET: &str = "s3cret-s3cret-s3cret-0123456789";

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

pub(crate) fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

pub(crate) fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A generated signing key (one per test binary: 2048-bit generation takes a moment).
pub(crate) struct TestKey {
    pub key: RsaPrivateKey,
    pub kid: String,
}

pub(crate) fn test_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey {
        key: RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key generation"),
        kid: "test-kid-1".into(),
    })
}

/// A second key, unknown to the JWKS (forged tokens).
pub(crate) fn other_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey {
        key: RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key generation"),
        kid: "test-kid-1".into(),
    })
}

impl TestKey {
    pub(crate) fn jwk(&self) -> Value {
        json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
            "n": b64url(&self.key.n().to_bytes_be()),
            "e": b64url(&self.key.e().to_bytes_be()),
        })
    }

    pub(crate) fn jwks(&self) -> Vec<u8> {
        // Google's JWKS also carries other keys; include an EC key the verifier must skip.
        json!({"keys": [
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": "AA", "y": "AA"},
            self.jwk(),
        ]})
        .to_string()
        .into_bytes()
    }

    /// Signs `claims` with RS256 and the given header.
    pub(crate) fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let digest = Sha256::digest(input.as_bytes());
        let sig = self
            .key
            .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
            .expect("sign");
        format!("{input}.{}", b64url(&sig))
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

/// Claims of a valid Google ID token for the test audience and invoker.
pub(crate) fn good_claims() -> Value {
    let now = now();
    json!({
        "aud": AUDIENCE, "azp": "113774264463038321964", "email": INVOKER,
        "email_verified": true, "exp": now + 3600, "iat": now,
        "iss": "https://accounts.google.com", "sub": "113774264463038321964",
    })
}

pub(crate) fn with(claims: &Value, key: &str, v: Value) -> Value {
    let mut c = claims.clone();
    c[key] = v;
    c
}

pub(crate) fn without(claims: &Value, key: &str) -> Value {
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove(key);
    c
}

// ---------------------------------------------------------------------------------------------
// run.v2.json schema check

/// Checks `v` against schema `name` of the discovery document: every field is declared and
/// has the declared JSON type. Returns the list of problems.
pub(crate) fn check_against_discovery(v: &Value, name: &str) -> Vec<String> {
    // The official discovery document, kept in the repository with its provenance; the test
    // kit's checker is the job's tests' too.
    autotune_testkit::discovery::Discovery::load("run.v2.json").check(name, v)
}

// ---------------------------------------------------------------------------------------------
// Fake Google (Run Admin API + metadata server + JWKS) on loopback

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct FakeBehaviour {
    /// Status of `jobs.run`; 200 answers an Operation.
    pub run_status: u16,
    pub run_error_body: String,
    /// Status of `jobs.get`.
    pub get_status: u16,
    /// `latestCreatedExecution` of the job (None = never executed).
    pub latest: Option<Value>,
    /// After a successful `jobs.run`, report the new execution as running.
    pub start_marks_running: bool,
    /// Delay before answering `jobs.run` (timeouts).
    pub run_delay: Duration,
    pub metadata_status: u16,
    pub jwks: Vec<u8>,
    pub jwks_status: u16,
}

impl Default for FakeBehaviour {
    fn default() -> Self {
        FakeBehaviour {
            run_status: 200,
            run_error_body: String::new(),
            get_status: 200,
            latest: None,
            start_marks_running: true,
            run_delay: Duration::ZERO,
            metadata_status: 200,
            jwks: Vec::new(),
            jwks_status: 200,
        }
    }
}

pub(crate) const ACCESS_TOKEN: &str = "ya29.fake-access-token";
pub(crate) const JOB_PATH: &str = "/v2/projects/my-proj/locations/europe-west1/jobs/tune-job";

pub(crate) struct FakeGoogle {
    pub port: u16,
    pub behaviour: Arc<Mutex<FakeBehaviour>>,
    pub log: Arc<Mutex<Vec<Recorded>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGoogle {
    pub(crate) fn start(behaviour: FakeBehaviour) -> FakeGoogle {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind fake"));
        let port = server.server_addr().to_ip().unwrap().port();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, b, l) = (server.clone(), behaviour.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                let rec = Recorded {
                    method: req.method().to_string(),
                    path: req.url().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                };
                l.lock().unwrap().push(rec.clone());
                let (status, cc, out) = respond(&b, &rec);
                let mut resp = tiny_http::Response::from_data(out).with_status_code(status);
                resp.add_header(
                    tiny_http::Header::from_bytes("content-type", "application/json").unwrap(),
                );
                if let Some(cc) = cc {
                    resp.add_header(tiny_http::Header::from_bytes("cache-control", cc).unwrap());
                }
                let _ = req.respond(resp);
            }
        });
        FakeGoogle {
            port,
            behaviour,
            log,
            server,
            thread: Some(thread),
        }
    }

    pub(crate) fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    pub(crate) fn count(&self, pred: impl Fn(&Recorded) -> bool) -> usize {
        self.requests().iter().filter(|r| pred(r)).count()
    }

    pub(crate) fn run_calls(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(":run"))
            .collect()
    }

    pub(crate) fn set(&self, f: impl FnOnce(&mut FakeBehaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(b: &Mutex<FakeBehaviour>, r: &Recorded) -> (u16, Option<&'static str>, Vec<u8>) {
    let err = |code: u16, status: &str, msg: &str| {
        json!({"error": {"code": code, "message": msg, "status": status}})
            .to_string()
            .into_bytes()
    };
    if r.path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if r.header("metadata-flavor") != Some("Google") {
            return (403, None, err(403, "FORBIDDEN", "missing Metadata-Flavor"));
        }
        let status = b.lock().unwrap().metadata_status;
        if status != 200 {
            return (status, None, b"metadata unavailable".to_vec());
        }
        let body =
            json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"});
        return (200, None, body.to_string().into_bytes());
    }
    if r.path == "/oauth2/v3/certs" {
        let g = b.lock().unwrap();
        return (g.jwks_status, Some("public, max-age=19000"), g.jwks.clone());
    }
    if r.path.starts_with("/v2/") {
        if r.header("authorization") != Some(&format!("Bearer {ACCESS_TOKEN}")) {
            return (401, None, err(401, "UNAUTHENTICATED", "bad access token"));
        }
        if r.method == "GET" && r.path == JOB_PATH {
            let g = b.lock().unwrap();
            if g.get_status != 200 {
                return (
                    g.get_status,
                    None,
                    err(g.get_status, "UNAVAILABLE", "jobs.get failing"),
                );
            }
            let mut job = json!({"name": JOB_PATH.trim_start_matches("/v2/"), "uid": "u"});
            if let Some(l) = &g.latest {
                job["latestCreatedExecution"] = l.clone();
            }
            return (200, None, job.to_string().into_bytes());
        }
        if r.method == "POST" && r.path == format!("{JOB_PATH}:run") {
            let (status, delay, body) = {
                let g = b.lock().unwrap();
                (g.run_status, g.run_delay, g.run_error_body.clone())
            };
            std::thread::sleep(delay);
            if status != 200 {
                return (status, None, body.into_bytes());
            }
            let exec = format!(
                "{}/executions/tune-job-abc12",
                JOB_PATH.trim_start_matches("/v2/")
            );
            let mut g = b.lock().unwrap();
            if g.start_marks_running {
                g.latest = Some(json!({"name": exec, "createTime": "2026-11-24T10:00:01Z",
                                       "completionStatus": "EXECUTION_RUNNING"}));
            }
            let op = json!({
                "name": "projects/my-proj/locations/europe-west1/operations/op-1",
                "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution",
                             "name": exec, "reconciling": true,
                             "conditions": [{"type": "Completed", "state": "CONDITION_PENDING"}]}
            });
            return (200, None, op.to_string().into_bytes());
        }
        return (404, None, err(404, "NOT_FOUND", "no such resource"));
    }
    (404, None, b"not found".to_vec())
}

// ---------------------------------------------------------------------------------------------
// wasmtime serve

pub(crate) use autotune_testkit::wasm::{component, wasmtime};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `wasmtime serve` process running the component; killed on drop.
pub(crate) struct Served {
    pub port: u16,
    child: Child,
    pub stderr_path: PathBuf,
}

/// Settings shared by the end-to-end tests; `extra` overrides or adds.
pub(crate) fn base_env(fake: &FakeGoogle) -> Vec<(String, String)> {
    [
        ("BUCKET_NAME", BUCKET),
        ("RAW_DATA_FOLDER", "raw_training_data"),
        ("LABEL_FOLDER", "labels"),
        ("GCP_PROJECT", "my-proj"),
        ("REGION", "europe-west1"),
        ("JOB_NAME", "tune-job"),
        ("AUDIENCE", AUDIENCE),
        ("ALLOWED_INVOKERS", INVOKER),
        ("UPSTREAM_TIMEOUT_MS", "2000"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .chain([
        ("RUN_API_ENDPOINT".to_owned(), fake.origin()),
        (
            "GCE_METADATA_HOST".to_owned(),
            format!("127.0.0.1:{}", fake.port),
        ),
        (
            "JWKS_URL".to_owned(),
            format!("{}/oauth2/v3/certs", fake.origin()),
        ),
    ])
    .collect()
}

impl Served {
    pub(crate) fn start(env: &[(String, String)], extra_args: &[&str]) -> Served {
        let wasm = component();
        let wasmtime = wasmtime();
        let port = free_port();
        let stderr_path = std::env::temp_dir().join(format!("trigger-wasm-e2e-{port}.log"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(&wasmtime);
        cmd.args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")]);
        cmd.args(extra_args);
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(&wasm);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", wasmtime.display()));
        let mut served = Served {
            port,
            child,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = served.child.try_wait() {
                panic!("wasmtime serve exited with {status}: {}", served.stderr());
            }
            assert!(Instant::now() < deadline, "wasmtime serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Whether the process is still running (a trap does not kill serve, but a crash would).
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client

#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the whole answer.
/// Header values are raw bytes so tests can send what a well-behaved client would not.
pub(crate) fn raw_request(port: u16, method: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to component");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut req = format!("{method} / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n")
        .into_bytes();
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    if !has_len {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    // The server may answer (413, 400) before reading everything; ignore write errors then.
    let _ = s.write_all(&req).and_then(|()| s.write_all(body));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out)
}

fn parse_response(raw: &[u8]) -> Resp {
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..text_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let mut body = raw[text_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Resp { status, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = i + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
}

/// POSTs an event with the given headers.
pub(crate) fn post(port: u16, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let h: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    raw_request(port, "POST", &h, body)
}

/// What the `CloudEvents` HTTP binding (§3.1.3.2) percent-encodes in a header value: space,
/// `"`, `%`, controls, and (always, by `utf8_percent_encode`) every non-ASCII byte.
const CE_HEADER_ENCODE: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');

/// A `ce-*` header value as a spec-following `CloudEvents` SDK writes it.
pub(crate) fn ce_header_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, CE_HEADER_ENCODE).to_string()
}

/// Binary-mode `CloudEvent` headers for a storage event, values encoded as the binding says.
pub(crate) fn ce_headers(id: &str, ty: &str, object: &str) -> Vec<(String, String)> {
    vec![
        (
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ),
        ("ce-specversion".into(), "1.0".into()),
        ("ce-id".into(), ce_header_value(id)),
        (
            "ce-type".into(),
            format!("google.cloud.storage.object.v1.{ty}"),
        ),
        (
            "ce-source".into(),
            format!("//storage.googleapis.com/projects/_/buckets/{BUCKET}"),
        ),
        (
            "ce-subject".into(),
            ce_header_value(&format!("objects/{object}")),
        ),
        ("ce-time".into(), "2026-11-24T10:00:00.123Z".into()),
    ]
}

/// A `StorageObjectData` body for `object` in the test bucket.
pub(crate) fn object_body(object: &str, generation: &str) -> Vec<u8> {
    json!({"kind": "storage#object", "bucket": BUCKET, "name": object,
           "generation": generation, "metageneration": "1", "size": "10",
           "contentType": "application/octet-stream"})
    .to_string()
    .into_bytes()
}
