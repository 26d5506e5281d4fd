//! The real trigger component (`trigger-wasm`) under `wasmtime serve`, and Eventarc's delivery of
//! a storage event to it (a binary-mode CloudEvent, `Content-Type: application/json`).
//!
//! Prerequisites: the `wasm32-wasip2` target and `wasmtime` 48 (`bash .ci/setup` installs both).
//! The component is the one `.ci/trigger-wasm.sh` builds; it is built here when missing or out
//! of date (`cargo build -p trigger-wasm --target wasm32-wasip2 --release`). `TRIGGER_WASM` and
//! `WASMTIME` override the paths.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The shared secret the tests' Eventarc sends (`AUTH_MODE=token`).
pub const TOKEN: &str = "event-loop-test-token-0123456789";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The component, built if needed (once per test binary).
pub fn component() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRIGGER_WASM") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "TRIGGER_WASM={} does not exist", p.display());
            return p;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "trigger-wasm",
                "--target",
                "wasm32-wasip2",
                "--release",
            ])
            .current_dir(workspace())
            .status()
            .expect("running cargo build for the trigger component");
        assert!(
            status.success(),
            "`cargo build -p trigger-wasm --target wasm32-wasip2 --release` failed \
             (is the target installed? `rustup target add wasm32-wasip2`, or `bash .ci/setup`)"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace().join("target"), PathBuf::from);
        let p = target.join("wasm32-wasip2/release/trigger_wasm.wasm");
        assert!(p.is_file(), "component not found at {}", p.display());
        p
    })
    .clone()
}

/// `WASMTIME`, else `wasmtime` on PATH, else `~/.cargo/bin/wasmtime`; missing fails the test.
pub fn wasmtime() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMTIME") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("wasmtime"))
            .find(|p| p.is_file())
    });
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/wasmtime"));
    on_path.or(home.filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!(
            "wasmtime not found (set WASMTIME, or `bash .ci/setup`, or \
             `cargo install wasmtime-cli --locked --version 48.0.8`)"
        )
    })
}

/// `wasmtime serve` running the component; killed on drop.
pub struct Trigger {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Trigger {
    /// Serves the component with these settings.
    pub fn start(env: &[(&str, &str)]) -> Self {
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
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Delivers the finalize event of `object` (a GCS object resource, as the upload answered)
    /// as Eventarc does: binary-mode CloudEvent, the object resource as a JSON body. Returns the
    /// status and the component's answer.
    pub fn finalized(&self, bucket: &str, object: &Value, event_id: &str) -> (u16, Value) {
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
