//! The trigger component and `wasmtime`, for the tests that serve it (`wasmtime serve`).
//!
//! Prerequisites: the `wasm32-wasip2` target and `wasmtime` 48 (`bash .ci/setup` installs both).
//! `TRIGGER_WASM` and `WASMTIME` override the paths.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace;

/// The target directory: `CARGO_TARGET_DIR` if set, else the workspace's `target/`.
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// The component, built if needed (a no-op when it is up to date; once per test binary);
/// `TRIGGER_WASM` overrides both.
///
/// # Panics
/// When the build fails or the component is missing: the tests that serve it must not skip.
#[must_use]
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
        let p = target_dir().join("wasm32-wasip2/release/trigger_wasm.wasm");
        assert!(p.is_file(), "component not found at {}", p.display());
        p
    })
    .clone()
}

/// `WASMTIME`, else `wasmtime` on PATH, else `~/.cargo/bin/wasmtime`.
///
/// # Panics
/// When none is found: the end-to-end tests must not skip silently.
#[must_use]
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
             `cargo install wasmtime-cli --locked --version 48.0.8`); the end-to-end tests need it"
        )
    })
}
