//! The test kit of the workspace: what the job's tests (`pipeline/tests`) and the trigger's
//! (`trigger-wasm/tests`) share, written once.
//!
//! * [`discovery`]: JSON and request lines checked against Google's discovery documents kept in
//!   `pipeline/tests/contracts/` (the strict checker: every field known, every enum value
//!   listed, every JSON type right, int64 as a string).
//! * [`wasm`]: the trigger component (`wasm32-wasip2`), built when missing or out of date, and
//!   the `wasmtime` that serves it.
//!
//! Test-only: a dev-dependency of both crates, never published.

pub mod discovery;
pub mod wasm;

use std::path::{Path, PathBuf};

/// The workspace's root (the parent of this crate's folder).
#[must_use]
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test kit sits in the workspace")
        .to_owned()
}
