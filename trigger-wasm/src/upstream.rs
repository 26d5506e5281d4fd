//! Outbound HTTP as a trait, so the whole request flow runs natively in tests against scripted
//! fakes, and the component plugs in `wasi:http/outgoing-handler`.

use std::fmt;

/// HTTP method of an outbound call; the component only needs these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
        })
    }
}

/// One outbound request, fully buffered (all bodies here are small JSON documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Connect, first-byte and between-bytes timeout (`UPSTREAM_TIMEOUT_MS`).
    pub timeout_ms: u32,
}

/// The upstream's answer, fully buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutResponse {
    pub status: u16,
    /// `Cache-Control` header, used for the JWKS lifetime.
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

/// Why an outbound call produced no response; all of these are worth a redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Connect, first-byte or between-bytes timeout.
    Timeout(String),
    /// DNS, refused connection, TLS, reset, oversized response, …
    Failed(String),
}

impl TransportError {
    /// What happened to the call, as a past participle: "timed out" or "failed".
    pub fn verb(&self) -> &'static str {
        match self {
            TransportError::Timeout(_) => "timed out",
            TransportError::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Timeout(m) => write!(f, "timed out: {m}"),
            TransportError::Failed(m) => write!(f, "request failed: {m}"),
        }
    }
}

/// Sends one request and waits for the whole response.
pub trait Upstream {
    fn send(&mut self, req: &OutRequest) -> Result<OutResponse, TransportError>;
}
