//! # trigger-wasm: GCS upload events → Cloud Run Job executions, as a WASI 0.2 HTTP component
//!
//! The component replaces the seed's Python Cloud Function. It receives a storage event over
//! HTTP, decides whether the upload is a new training sample or label, and if so starts the
//! pipeline's Cloud Run Job through the Run Admin API v2.
//!
//! ## Architecture
//!
//! The request flow is pure Rust that compiles and is tested on the host; only
//! [`glue`] (compiled for `wasm32` only) touches `wasi:http`:
//!
//! ```text
//!   wasi:http/incoming-handler ──► glue (spin-sdk #[http_component], body read with 1 MiB cap)
//!                                    │  InboundRequest { method, headers, body }
//!                                    ▼
//!   service::handle ── auth ────► Rejection::Unauthorized (OIDC RS256 via JWKS, or shared secret)
//!                   ── event ───► Rejection::MalformedEvent (CloudEvents binary / structured,
//!                   │             Pub/Sub push envelope)
//!                   ── filter ──► Outcome::Ignored (with the reason)
//!                   ── run_api ─► metadata token → jobs.get (storm control) → jobs.run
//!                   │             → Outcome::Started / AlreadyRunning, or Rejection::Upstream…
//!                   └─ reply ───► the one mapping of Outcome / Rejection to status and JSON
//!                                    │  every outbound call goes through the `Upstream` trait
//!                                    ▼
//!   glue::WasiUpstream (wasi:http/outgoing-handler with timeouts)   |  tests: scripted fakes
//! ```
//!
//! * [`config`] reads every setting from environment variables (never Spin variables), so the
//!   component imports no `spin:`/`fermyon:` interface and runs unchanged under Spin 2–4,
//!   `SpinKube` and `wasmtime serve`.
//! * [`event`] turns the three delivery forms into one [`event::StorageEvent`].
//! * [`filter`] decides start vs. ignore, naming the reason, by the pipeline's own sample rules
//!   (the `autotune-layout` crate).
//! * [`auth`] verifies Google-signed OIDC ID tokens (RS256) or a shared secret.
//! * [`run_api`] builds the Run Admin API requests and classifies Google's answers.
//! * [`reply`] holds every way a request ends ([`reply::Outcome`], [`reply::Rejection`]) and
//!   maps each to its HTTP status and body, in one place.
//! * [`service`] ties them together and owns the caches (access token, JWKS). The caches live in
//!   the instance, so they pay off when the host reuses instances (`wasmtime serve
//!   --max-instance-reuse-count`); a host that creates one instance per request refetches.
//! * [`log`] writes one JSON line per event to stderr, in Cloud Logging's structured format.

pub mod auth;
pub mod config;
pub mod event;
pub mod filter;
pub mod log;
pub mod reply;
pub mod run_api;
pub mod service;
pub mod upstream;

#[cfg(target_arch = "wasm32")]
mod glue;

/// Test helpers shared with the end-to-end tests (signing key, fixtures, fakes).
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod testutil;

/// Largest request body accepted; larger bodies get 413. A GCS notification is a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
