//! A small loopback HTTP server for fakes and receivers: a handler sees each whole request and
//! says what to answer, and may hold the answer (a sink that hangs). It runs on its own thread
//! and runtime, on the real clock, so the client under test may run on a paused clock.
//!
//! Also the bits every Google fake here shares: the one bearer token they accept, a token
//! provider that hands it over without timers, and Google's error bodies.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autotune::client::{TokenError, TokenProvider};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// The bearer token the fakes of this module's users accept.
pub(crate) const TOKEN: &str = "ya29.loopback-test-token";

/// Hands over [`TOKEN`]: no timer runs, so a paused clock only jumps across the client's own
/// sleeps.
#[derive(Debug)]
pub(crate) struct StaticToken;

#[async_trait::async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self, _scopes: &[&str]) -> Result<String, TokenError> {
        Ok(TOKEN.to_owned())
    }
}

pub(crate) fn static_token() -> Arc<dyn TokenProvider> {
    Arc::new(StaticToken)
}

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether it carries `Authorization: Bearer {TOKEN}`.
    pub(crate) fn authorised(&self) -> bool {
        self.header("authorization") == Some(&format!("Bearer {TOKEN}"))
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Value,
    /// Hold the answer this long first (longer than any client deadline: a hung sink).
    pub hold: Option<Duration>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            hold: None,
        }
    }

    /// A Google error answer: `{"error": {code, message, status}}`.
    pub(crate) fn google_error(code: u16, message: &str) -> Self {
        Self::json(
            code,
            json!({ "error": { "code": code, "message": message, "status": status_name(code) } }),
        )
    }

    /// Never answers (for an hour, past any deadline).
    pub(crate) fn hang() -> Self {
        Self {
            status: 200,
            body: json!({}),
            hold: Some(Duration::from_secs(3600)),
        }
    }
}

pub(crate) fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

type Handler = dyn Fn(Received) -> Reply + Send + Sync;

/// A server on `127.0.0.1`, stopped on drop.
pub(crate) struct Loopback {
    pub url: String,
    pub host: String,
    _server: Server,
}

impl Loopback {
    pub(crate) fn start(handler: impl Fn(Received) -> Reply + Send + Sync + 'static) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let bound = Bound::new();
        let (url, host) = (bound.url(), bound.addr.to_string());
        let server = bound.serve(move |req| serve(handler.clone(), req));
        Self {
            url,
            host,
            _server: server,
        }
    }
}

/// A loopback port taken, not yet served: its address can go into a fake's state before the
/// fake serves it.
pub(crate) struct Bound {
    listener: std::net::TcpListener,
    pub addr: SocketAddr,
}

impl Bound {
    pub(crate) fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        Self { listener, addr }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves every connection with `service` (HTTP/1.1) on a thread and runtime of its own,
    /// on the real clock, until the [`Server`] is dropped.
    pub(crate) fn serve<F, Fut, B, E>(self, service: F) -> Server
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let listener = self.listener;
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let service = hyper::service::service_fn(service.clone());
                            tokio::spawn(async move {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        Server {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

/// A served loopback port; dropping it stops the server and waits for its thread.
pub(crate) struct Server {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    handler: Arc<Handler>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let reply = handler(Received {
        method,
        path,
        query,
        headers,
        body,
    });
    if let Some(d) = reply.hold {
        tokio::time::sleep(d).await;
    }
    Ok(Response::builder()
        .status(reply.status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(reply.body.to_string())))
        .unwrap())
}

/// A loopback URL where nothing listens: connections are refused.
pub(crate) fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// A loopback server that answers every request with `status` and a body announced as
/// `announced` bytes (3 GiB, say), streamed as spaces until the client stops reading or
/// `at_most` bytes were sent on a connection (the test's own bound). `most_sent()` tells the
/// most body bytes any one answer let through: a client that reads a bounded amount lets
/// through little more than the socket buffers hold, however often it retries. Nothing large
/// is allocated on either side unless the client reads it.
pub(crate) struct Flood {
    pub url: String,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Flood {
    pub(crate) fn start(status: u16, announced: u64, at_most: u64) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    // A stalled client does not hold the thread past the test.
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reason = if status < 400 { "OK" } else { "Error" };
                    if stream
                        .write_all(
                            format!(
                                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {announced}\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .is_err()
                    {
                        return;
                    }
                    let piece = vec![b' '; 64 * 1024];
                    let mut total = 0u64;
                    while total < at_most.min(announced) {
                        match stream.write(&piece) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                total += n as u64;
                                counter.fetch_max(total, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        Self { url, sent }
    }

    /// The most body bytes written on one connection.
    pub(crate) fn most_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }
}
