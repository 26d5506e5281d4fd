//! The real trigger component (`trigger-wasm`) under `wasmtime serve`, and Eventarc's delivery of
//! a storage event to it (a binary-mode CloudEvent, `Content-Type: application/json`).
//!
//! The component and `wasmtime` come from the test kit ([`autotune_testkit::wasm`]), shared
//! with the trigger's own tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autotune_testkit::wasm::{component, wasmtime};
use serde_json::Value;

/// The shared secret the tests' Eventarc sends (`AUTH_MODE=token`).
pub(crate) const TOKEN: &str = "event-loop-test-token-0123456789";

/// `wasmtime serve` running the component; killed on drop.
pub(crate) struct Trigger {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Trigger {
    /// Serves the component with these settings.
    pub(crate) fn start(env: &[(&str, &str)]) -> Self {
        let (wasm, wasmtime) = (component(), wasmtime());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("trigger.log");
        let port = super::free_port();
        let mut cmd = Command::new(&wasmtime);
        cmd.args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")]);
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        let child = cmd
            .arg(&wasm)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", wasmtime.display()));
        let mut t = Trigger {
            port,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("wasmtime serve exited with {status}: {}", t.log());
            }
            assert!(Instant::now() < deadline, "wasmtime serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    /// What the component logged (Cloud Logging JSON lines).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Delivers the finalize event of `object` (a GCS object resource, as the upload answered)
    /// as Eventarc does: binary-mode CloudEvent, the object resource as a JSON body. Returns the
    /// status and the component's answer.
    pub(crate) fn finalized(&self, bucket: &str, object: &Value, event_id: &str) -> (u16, Value) {
        let name = object["name"].as_str().expect("object name");
        let subject = format!(
            "objects/{}",
            percent_encoding::utf8_percent_encode(name, CE_HEADER)
        );
        let source = format!("//storage.googleapis.com/projects/_/buckets/{bucket}");
        let (status, body) = super::request(
            "POST",
            &format!("127.0.0.1:{}", self.port),
            "/",
            &[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", event_id),
                ("ce-type", "google.cloud.storage.object.v1.finalized"),
                ("ce-source", &source),
                ("ce-subject", &subject),
                (
                    "ce-time",
                    &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
                ("x-trigger-token", TOKEN),
            ],
            object.to_string().as_bytes(),
        );
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the CloudEvents HTTP binding percent-encodes in a header value.
const CE_HEADER: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'%');
