//! The integration tests of `autotune`, in one test binary (ripgrep's layout): the support code
//! (the fake-gcs-server harness, the loopback fakes of Vertex AI and Google's token endpoints,
//! the discovery-document checks) compiles once, and every scenario file is a module.
//!
//! * [`architecture`]: the module map of `src/lib.rs` holds: no module imports one above it.
//! * [`cli`]: the `autotune` binary as a process: settings, gates, hostile input, signals.
//! * [`run`]: the run in process, on the memory store with a scripted tuner.
//! * [`crash`]: crashes, signals, full disks and frozen storage during a run (issue 20).
//! * [`truth`]: what a run says is what happened (issue 20).
//! * [`incremental`]: incremental builds against full rebuilds of the same bucket history.
//! * [`storage_conformance`]: one suite for every storage backend, plus what only one can do.
//! * [`vertex`], [`vertex_runs`], [`credentials`]: Vertex AI and Google credentials against fakes.
//! * [`registry`]: the champion alias in the Vertex AI Model Registry, against a fake.
//! * [`notify`]: notifications: Pub/Sub against a fake, signed webhooks, structured log lines.
//! * [`evaluate`]: paired inference, Google's metrics and the rehearsal stand-in against the
//!   fake of Vertex AI.
//! * [`evaluation`]: the evaluate, bless, promote and rollback loop of whole runs.
//! * [`validate`], [`templates`]: the dataset validator and conversion templates.
//! * [`event_loop`]: the product as Google runs it: fake-gcs-server, the trigger under
//!   `wasmtime serve`, a fake Cloud Run that executes `autotune`, bulk uploads.

#![allow(clippy::too_many_lines)] // end-to-end scenarios read best as one story each
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark tests print their figures, and slow tests say what they wait for"
)]

mod support;

mod architecture;
mod cli;
mod crash;
mod credentials;
mod evaluate;
mod evaluation;
mod event_loop;
mod incremental;
mod notify;
mod registry;
mod run;
mod storage_conformance;
mod templates;
mod truth;
mod validate;
mod vertex;
mod vertex_runs;
