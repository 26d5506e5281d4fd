//! The only host-specific code: `wasi:http` in and out, through spin-sdk 5.2's WASI 0.2
//! bindings. Compiled for `wasm32` only; everything it calls is plain Rust tested natively.
//!
//! * Inbound: `#[http_component]` with the raw `IncomingRequest`, so the body is streamed and
//!   reading stops after [`crate::MAX_BODY_BYTES`] + 1 bytes instead of buffering whatever a
//!   caller sends.
//! * Outbound: `wasi:http/outgoing-handler` directly (spin-sdk's `send` cannot set timeouts),
//!   with connect / first-byte / between-bytes timeouts from `UPSTREAM_TIMEOUT_MS`.
//! * State (token and JWKS caches) lives in a thread-local for the life of the instance.

// The `#[http_component]` expansion (wit-bindgen output) converts WIT resource handles with
// `unsafe` blocks and rebuilds lifted lists with `Vec::from_raw_parts`.
#![allow(unsafe_code, clippy::same_length_and_capacity)]

use crate::service::{self, InboundRequest, State};
use crate::upstream::{Method, OutRequest, OutResponse, TransportError, Upstream};
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::http0_2_0::{outgoing_handler, types as wt};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};
use wasi::io::streams::StreamError;

/// Upstream answers larger than this are refused (a JWKS or an Operation is a few KiB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const READ_CHUNK: u64 = 64 * 1024;

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let inbound = read_request(&req);
    drop(req);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let env = |k: &str| std::env::var(k).ok();
    let reply = STATE
        .with(|s| service::handle(&inbound, &env, &mut WasiUpstream, &mut s.borrow_mut(), now));
    let headers = Fields::from_list(&[("content-type".to_owned(), b"application/json".to_vec())])
        .unwrap_or_else(|_| Fields::new());
    let resp = OutgoingResponse::new(headers);
    if resp.set_status_code(reply.status).is_err() {
        let _ = resp.set_status_code(500);
    }
    let mut body = reply.body.to_string().into_bytes();
    body.push(b'\n');
    if let Err(e) = out.set_with_body(resp, body).await {
        let error = e.to_string();
        crate::log::emit(
            crate::log::Severity::Error,
            "could not send the response",
            &[("error", error.as_str())],
        );
    }
}

fn read_request(req: &IncomingRequest) -> InboundRequest {
    let method = req.method().to_string();
    let headers = req
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), String::from_utf8(v).ok()?)))
        .collect();
    let (body, body_too_large) = match req.consume() {
        Ok(b) => read_body(&b, crate::MAX_BODY_BYTES),
        Err(()) => (Vec::new(), false),
    };
    InboundRequest {
        method,
        headers,
        body,
        body_too_large,
    }
}

/// Reads at most `limit` bytes; the flag says whether more followed.
fn read_body(body: &wt::IncomingBody, limit: usize) -> (Vec<u8>, bool) {
    let Ok(stream) = body.stream() else {
        return (Vec::new(), false);
    };
    let mut buf = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if buf.len() + chunk.len() > limit {
                    return (buf, true);
                }
                buf.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed | StreamError::LastOperationFailed(_)) => {
                return (buf, false);
            }
        }
    }
}

/// Outbound HTTP over `wasi:http/outgoing-handler`.
struct WasiUpstream;

impl Upstream for WasiUpstream {
    fn send(&mut self, req: &OutRequest) -> Result<OutResponse, TransportError> {
        send(req)
    }
}

fn failed(what: &str) -> TransportError {
    TransportError::Failed(what.to_owned())
}

fn send(req: &OutRequest) -> Result<OutResponse, TransportError> {
    let (scheme, rest) = if let Some(r) = req.url.strip_prefix("https://") {
        (wt::Scheme::Https, r)
    } else if let Some(r) = req.url.strip_prefix("http://") {
        (wt::Scheme::Http, r)
    } else {
        return Err(failed("URL is not http(s)"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let list: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let headers = wt::Fields::from_list(&list).map_err(|e| failed(&format!("header: {e:?}")))?;
    let out = wt::OutgoingRequest::new(headers);
    let method = match req.method {
        Method::Get => wt::Method::Get,
        Method::Post => wt::Method::Post,
    };
    out.set_method(&method).map_err(|()| failed("method"))?;
    out.set_scheme(Some(&scheme))
        .map_err(|()| failed("scheme"))?;
    out.set_authority(Some(authority))
        .map_err(|()| failed("authority"))?;
    out.set_path_with_query(Some(path))
        .map_err(|()| failed("path"))?;
    let body = out.body().map_err(|()| failed("request body"))?;

    let opts = wt::RequestOptions::new();
    let ns = Some(u64::from(req.timeout_ms) * 1_000_000);
    // A host that does not support a timeout reports an error; the request still goes out.
    let _ = opts.set_connect_timeout(ns);
    let _ = opts.set_first_byte_timeout(ns);
    let _ = opts.set_between_bytes_timeout(ns);

    let future = outgoing_handler::handle(out, Some(opts)).map_err(|e| error_code(&e))?;
    {
        let stream = body.write().map_err(|()| failed("request body stream"))?;
        for chunk in req.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| failed(&format!("writing request body: {e:?}")))?;
        }
    }
    wt::OutgoingBody::finish(body, None).map_err(|e| error_code(&e))?;

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(error_code(&e)),
        Some(Err(())) | None => return Err(failed("response future not ready")),
    };
    let status = response.status();
    let cache_control = response
        .headers()
        .get("cache-control")
        .into_iter()
        .find_map(|v| String::from_utf8(v).ok());
    let incoming = response.consume().map_err(|()| failed("response body"))?;
    let (body, too_large) = read_response_body(&incoming)?;
    drop(incoming);
    if too_large {
        return Err(failed("response body over 1 MiB"));
    }
    Ok(OutResponse {
        status,
        cache_control,
        body,
    })
}

fn read_response_body(incoming: &wt::IncomingBody) -> Result<(Vec<u8>, bool), TransportError> {
    let stream = incoming.stream().map_err(|()| failed("response stream"))?;
    let mut buf = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Ok((buf, true));
                }
                buf.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok((buf, false)),
            Err(StreamError::LastOperationFailed(e)) => {
                let code = wt::http_error_code(&e);
                return Err(match code {
                    Some(c) => error_code(&c),
                    None => failed(&format!("reading response: {}", e.to_debug_string())),
                });
            }
        }
    }
}

fn error_code(e: &wt::ErrorCode) -> TransportError {
    match e {
        wt::ErrorCode::ConnectionTimeout
        | wt::ErrorCode::ConnectionReadTimeout
        | wt::ErrorCode::ConnectionWriteTimeout
        | wt::ErrorCode::HttpResponseTimeout => TransportError::Timeout(format!("{e:?}")),
        other => TransportError::Failed(format!("{other:?}")),
    }
}
