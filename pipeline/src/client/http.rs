//! One attempt of one request, with its deadlines, and what went wrong with it.
//!
//! Three shapes of request, three kinds of deadline:
//! * [`Client::call`], a small call: connect within `connect_timeout`, and the whole answer,
//!   body included, within `request_timeout`.
//! * [`Client::upload`], a request with a large body (a resumable upload's chunk): the body is
//!   fed in 64 KiB pieces and every piece the connection takes resets an idle deadline
//!   (`idle_timeout`); once the last piece is taken, the answer must come within
//!   `request_timeout`. A slow link still moves; a frozen one fails.
//! * [`Client::download`], a response with a large body (a media download): the headers within
//!   `request_timeout`, then every piece of the body within `idle_timeout` of the previous one.
//!
//! Errors are classified by what they say about the request: [`Error::Connect`] never reached
//! the server; [`Error::Timeout`] and [`Error::Interrupted`] were sent and may have taken effect;
//! [`Error::Status`] is the server's answer. `client::retry` decides what is retried.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::retry::{self, Failed, Idempotency};
use super::token::Credentials;
use super::{Options, chain};

/// What went wrong with one attempt.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No connection was made (refused, unreachable, DNS, TLS, connect timeout): the request
    /// never reached the server.
    #[error("{url}: could not connect: {message}")]
    Connect { url: String, message: String },
    /// No complete answer within the deadline; the request may have taken effect.
    #[error("{url}: no answer within {}", humantime::format_duration(*after))]
    Timeout { url: String, after: Duration },
    /// The connection broke before a complete answer; the request may have taken effect.
    #[error("{url}: the connection broke: {message}")]
    Interrupted { url: String, message: String },
    /// The server answered with an error status (`body`: what of its answer was read).
    #[error("{url}: HTTP {status}{}", colon(&body_message(body)))]
    Status {
        url: String,
        status: u16,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    /// No access token could be had; `transient` when another attempt may succeed.
    #[error("Google credentials: {message}")]
    Auth { message: String, transient: bool },
    /// A request that cannot be made, or an answer that cannot be read.
    #[error("{url}: {message}")]
    Invalid { url: String, message: String },
}

impl Error {
    /// The HTTP status of a [`Error::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's `Retry-After`, in seconds form.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Google's error message of a [`Error::Status`] (the body's text if it is not a Google
    /// error), or this error's own text.
    pub fn message(&self) -> String {
        match self {
            Self::Status { body, .. } => body_message(body),
            Self::Connect { message, .. }
            | Self::Interrupted { message, .. }
            | Self::Invalid { message, .. }
            | Self::Auth { message, .. } => message.clone(),
            Self::Timeout { .. } => self.to_string(),
        }
    }

    /// The `error` object (a `google.rpc.Status`) of a Google error body, word for word; a body
    /// that is not one (a proxy's HTML page) becomes `{code, message}` with its text.
    pub fn google_error(&self) -> Option<serde_json::Value> {
        let Self::Status { status, body, .. } = self else {
            return None;
        };
        Some(match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) if v["error"].is_object() => v["error"].clone(),
            _ => serde_json::json!({ "code": status, "message": truncated_text(body) }),
        })
    }

    fn transport(e: reqwest::Error, url: &str) -> Self {
        let url = url.to_owned();
        let (builder, connect) = (e.is_builder(), e.is_connect());
        let message = without_url(e);
        if builder {
            Self::Invalid { url, message }
        } else if connect {
            Self::Connect { url, message }
        } else {
            Self::Interrupted { url, message }
        }
    }
}

/// A reqwest error and its sources on one line, without the URL reqwest puts in its message
/// (the caller names the request its own way: a webhook's URL may carry a token).
fn without_url(e: reqwest::Error) -> String {
    chain(&e.without_url())
}

/// `": text"`, or nothing for no text.
fn colon(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

fn truncated_text(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().take(1000).collect();
    text.trim().to_owned()
}

/// Google's `error.message`, or the body's (truncated) text.
fn body_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| truncated_text(body))
}

/// Where a client's bearer tokens come from.
#[derive(Clone)]
pub enum Auth {
    /// No token: the storage emulator, the metadata server.
    Anonymous,
    /// A token for `scope` from `credentials`.
    Bearer {
        credentials: Arc<Credentials>,
        scope: &'static str,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Bearer { credentials, scope } => f
                .debug_struct("Bearer")
                .field("credentials", credentials)
                .field("scope", scope)
                .finish(),
        }
    }
}

/// A complete answer (status below 400).
#[derive(Debug, Clone)]
pub struct Answer {
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; an empty body reads as `{}` where `T` allows.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        let body: &[u8] = if self.body.is_empty() {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body).map_err(|e| Error::Invalid {
            url: self.url.clone(),
            message: format!("unreadable answer: {e}"),
        })
    }
}

/// An open download: the answer's head, and its body as a stream that fails when idle.
pub struct Download {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub content_length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, Error>>,
}

/// An HTTP client with deadlines and bearer tokens.
pub struct Client {
    http: reqwest::Client,
    auth: Auth,
    options: Options,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("auth", &self.auth)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Pieces a body is fed in, each one resetting the idle deadline.
const PIECE: usize = 64 * 1024;

impl Client {
    pub fn new(options: Options, auth: Auth) -> Result<Self, Error> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("autotune/", env!("CARGO_PKG_VERSION")))
            // Google APIs do not redirect; a resumable upload's 308 is an answer.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64);
        if let Some(t) = options.connect_timeout {
            b = b.connect_timeout(t);
        }
        if !options.has_timers() {
            // No timer at all, not even the pool's idle sweep (tests on a paused clock).
            b = b.pool_idle_timeout(None);
        }
        let http = b.build().map_err(|e| Error::Invalid {
            url: String::new(),
            message: format!("HTTP client: {}", chain(&e)),
        })?;
        Ok(Self {
            http,
            auth,
            options,
        })
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A request to be completed by the caller and given to [`Client::call`] and friends.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Builds the request and adds a bearer token (fetched within `request_timeout`).
    async fn prepare(&self, rb: RequestBuilder) -> Result<(reqwest::Request, String), Error> {
        let (_, request) = rb.build_split();
        let mut request = request.map_err(|e| Error::Invalid {
            url: e.url().map(ToString::to_string).unwrap_or_default(),
            message: without_url(e),
        })?;
        let url = request.url().to_string();
        if let Auth::Bearer { credentials, scope } = &self.auth {
            let token = within(self.options.request_timeout, &url, async {
                credentials.token(&[scope]).await.map_err(|e| Error::Auth {
                    message: e.message,
                    transient: e.transient,
                })
            })
            .await?;
            let mut value =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Auth {
                    message: "the access token is not a valid header value".into(),
                    transient: false,
                })?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        Ok((request, url))
    }

    /// One attempt of a small call: the whole answer within `request_timeout`. A status of
    /// 400 or more is an [`Error::Status`].
    pub async fn call(&self, rb: RequestBuilder) -> Result<Answer, Error> {
        self.attempt(rb, None).await
    }

    /// One attempt of a small call to a receiver that is not Google (a notification's webhook,
    /// a Pub/Sub endpoint): as [`Client::call`], but at most `keep` bytes of the answer's body
    /// are read, whatever the receiver announces or sends; the rest is never read (the
    /// connection is dropped), so a reply of gigabytes costs `keep` bytes of memory.
    pub async fn call_bounded(&self, rb: RequestBuilder, keep: usize) -> Result<Answer, Error> {
        self.attempt(rb, Some(keep)).await
    }

    /// One attempt: the request sent and its answer read (at most `keep` bytes of its body
    /// when given) within `request_timeout`.
    async fn attempt(&self, rb: RequestBuilder, keep: Option<usize>) -> Result<Answer, Error> {
        let (request, url) = self.prepare(rb).await?;
        within(self.options.request_timeout, &url, async {
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|e| Error::transport(e, &url))?;
            read_answer(response, &url, keep).await
        })
        .await
    }

    /// A small call, retried by the client's policy when [`retry::retryable`] allows.
    pub async fn send(
        &self,
        what: &str,
        idempotency: Idempotency,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, Failed> {
        retry::retry(
            &self.options.retry,
            what,
            |e| retry::retryable(e, idempotency),
            || self.call(make()),
        )
        .await
    }

    /// One attempt sending `data` as the body (its `Content-Length` set): idle deadline while
    /// the body moves, `request_timeout` for the answer once it has all been taken.
    pub async fn upload(&self, rb: RequestBuilder, data: Bytes) -> Result<Answer, Error> {
        if data.is_empty() {
            return self.call(rb.body(data)).await;
        }
        let (progress, mut watch) = watch::channel(false);
        let len = data.len();
        let body = reqwest::Body::wrap_stream(pieces(data, progress));
        let (request, url) = self
            .prepare(rb.header(CONTENT_LENGTH, len).body(body))
            .await?;
        let exchange = async {
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|e| Error::transport(e, &url))?;
            read_answer(response, &url, None).await
        };
        tokio::pin!(exchange);
        let mut body_gone = false;
        loop {
            let sent = body_gone || *watch.borrow_and_update();
            let limit = if sent {
                self.options.request_timeout
            } else {
                self.options.idle_timeout
            };
            let deadline = limit.map(|l| Instant::now() + l);
            tokio::select! {
                answer = &mut exchange => return answer,
                changed = watch.changed(), if !body_gone => body_gone = changed.is_err(),
                () = sleep_until(deadline) => {
                    return Err(Error::Timeout { url: url.clone(), after: limit.unwrap_or_default() });
                }
            }
        }
    }

    /// Opens a download: the head within `request_timeout`, then a body whose every piece must
    /// come within `idle_timeout`. A status of 400 or more is an [`Error::Status`].
    pub async fn download(&self, rb: RequestBuilder) -> Result<Download, Error> {
        let (request, url) = self.prepare(rb).await?;
        let response = within(self.options.request_timeout, &url, async {
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|e| Error::transport(e, &url))?;
            if response.status().as_u16() >= 400 {
                return Err(read_answer(response, &url, None)
                    .await
                    .err()
                    .unwrap_or_else(|| Error::Invalid {
                        url: url.clone(),
                        message: "error status without an error".into(),
                    }));
            }
            Ok(response)
        })
        .await?;
        Ok(Download {
            status: response.status(),
            headers: response.headers().clone(),
            content_length: response.content_length(),
            body: idle_limited(response.bytes_stream(), self.options.idle_timeout, url),
        })
    }
}

/// Reads an answer, whole or its first `keep` bytes; 400 or more becomes [`Error::Status`].
async fn read_answer(
    mut response: reqwest::Response,
    url: &str,
    keep: Option<usize>,
) -> Result<Answer, Error> {
    let status = response.status();
    let headers = response.headers().clone();
    let broke = |e: reqwest::Error| Error::Interrupted {
        url: url.to_owned(),
        message: format!("reading the answer: {}", without_url(e)),
    };
    let body = match keep {
        None => response.bytes().await.map_err(broke)?,
        Some(keep) => {
            let mut body = bytes::BytesMut::new();
            while body.len() < keep {
                match response.chunk().await.map_err(broke)? {
                    Some(piece) => {
                        let take = piece.len().min(keep - body.len());
                        body.extend_from_slice(&piece[..take]);
                    }
                    None => break,
                }
            }
            // Dropped unread: hyper closes a connection whose answer was not read to its end.
            drop(response);
            body.freeze()
        }
    };
    if status.as_u16() >= 400 {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(Error::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            body,
            retry_after,
        });
    }
    Ok(Answer {
        url: url.to_owned(),
        status,
        headers,
        body,
    })
}

/// `fut` within `limit`, or [`Error::Timeout`]; no timer when `limit` is `None`.
async fn within<T>(
    limit: Option<Duration>,
    url: &str,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match limit {
        None => fut.await,
        Some(after) => tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                url: url.to_owned(),
                after,
            })
        }),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `data` in pieces; each piece taken is signalled on `progress`, which turns `true` with the
/// last one.
fn pieces(
    data: Bytes,
    progress: watch::Sender<bool>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold((data, progress), |(mut rest, progress)| async move {
        if rest.is_empty() {
            progress.send_replace(true);
            return None;
        }
        let piece = rest.split_to(rest.len().min(PIECE));
        let last = rest.is_empty();
        progress.send_modify(|done| *done = last);
        Some((Ok(piece), (rest, progress)))
    })
}

/// A response body whose every piece must come within `idle` of the previous one.
fn idle_limited(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Option<Duration>,
    url: String,
) -> BoxStream<'static, Result<Bytes, Error>> {
    futures::stream::unfold(Some(Box::pin(body)), move |state| {
        let url = url.clone();
        async move {
            let mut body = state?;
            let next = match idle {
                None => body.next().await,
                Some(after) => match tokio::time::timeout(after, body.next()).await {
                    Ok(next) => next,
                    Err(_) => return Some((Err(Error::Timeout { url, after }), None)),
                },
            };
            match next? {
                Ok(piece) => Some((Ok(piece), Some(body))),
                Err(e) => Some((
                    Err(Error::Interrupted {
                        url,
                        message: without_url(e),
                    }),
                    None,
                )),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A loopback server whose every connection `serve` handles on its own thread.
    fn server(serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serve = Arc::new(serve);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let serve = serve.clone();
                std::thread::spawn(move || serve(stream));
            }
        });
        url
    }

    /// Reads a request's head, so that an answer written next is not unsolicited.
    fn read_head(stream: &mut std::net::TcpStream) {
        use std::io::Read;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
    }

    /// Holds a connection open without reading or writing.
    fn hold(stream: std::net::TcpStream) {
        std::thread::sleep(Duration::from_secs(3600));
        drop(stream);
    }

    fn client(
        connect: Option<Duration>,
        request: Option<Duration>,
        idle: Option<Duration>,
    ) -> Client {
        let options = Options {
            connect_timeout: connect,
            request_timeout: request,
            idle_timeout: idle,
            ..Options::default()
        };
        Client::new(options, Auth::Anonymous).unwrap()
    }

    fn timed_out_after(r: Result<impl std::fmt::Debug, Error>) -> Duration {
        match r {
            Err(Error::Timeout { after, .. }) => after,
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    /// On a paused clock the frozen peer never acts, so the clock jumps straight to the one
    /// deadline that runs.
    #[tokio::test(start_paused = true)]
    async fn a_small_call_to_a_frozen_server_times_out() {
        let url = server(hold);
        let c = client(None, Some(Duration::from_secs(60)), None);
        let started = Instant::now();
        let r = c.call(c.request(Method::GET, &url)).await;
        assert_eq!(timed_out_after(r), Duration::from_secs(60));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stops_moving_times_out_when_idle() {
        let url = server(hold);
        // Far more than the socket buffers hold: the body stops moving.
        let c = client(None, None, Some(Duration::from_secs(30)));
        let started = Instant::now();
        let r = c
            .upload(
                c.request(Method::PUT, &url),
                Bytes::from(vec![1u8; 64 << 20]),
            )
            .await;
        assert_eq!(timed_out_after(r), Duration::from_secs(30));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_sent_whole_waits_for_its_answer_within_the_request_timeout() {
        let url = server(hold);
        // Small enough for the socket buffers: all of it is taken at once.
        let c = client(
            None,
            Some(Duration::from_secs(60)),
            Some(Duration::from_secs(30)),
        );
        let started = Instant::now();
        let r = c
            .upload(
                c.request(Method::PUT, &url),
                Bytes::from(vec![1u8; 16 << 10]),
            )
            .await;
        assert_eq!(timed_out_after(r), Duration::from_secs(60));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_that_stalls_times_out_when_idle() {
        let url = server(|mut stream| {
            // The head and the first bytes in one write, then nothing.
            read_head(&mut stream);
            let _ =
                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst bytes");
            hold(stream);
        });
        let c = client(None, None, Some(Duration::from_secs(30)));
        let mut download = c.download(c.request(Method::GET, &url)).await.unwrap();
        assert_eq!(download.content_length, Some(1_000_000));
        let first = download.body.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"first bytes");
        let started = Instant::now();
        let stalled = download.body.next().await.unwrap();
        assert_eq!(timed_out_after(stalled), Duration::from_secs(30));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(
            download.body.next().await.is_none(),
            "the stream ends after the error"
        );
    }

    #[tokio::test]
    async fn errors_say_whether_the_request_was_sent() {
        // Nothing listens: refused, so never sent.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let c = client(
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(5)),
            None,
        );
        let e = c.call(c.request(Method::GET, &url)).await.unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");

        // Answers then hangs up mid-body: sent, answer lost.
        let url = server(|mut stream| {
            read_head(&mut stream);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
        });
        let e = c.call(c.request(Method::GET, &url)).await.unwrap_err();
        assert!(matches!(e, Error::Interrupted { .. }), "{e}");

        // An error status keeps Google's message and the Retry-After.
        let url = server(|mut stream| {
            let body = r#"{"error":{"code":503,"message":"backend busy","status":"UNAVAILABLE"}}"#;
            read_head(&mut stream);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        });
        let e = c.call(c.request(Method::GET, &url)).await.unwrap_err();
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.message(), "backend busy");
        assert_eq!(e.google_error().unwrap()["status"], "UNAVAILABLE");
        assert!(e.to_string().ends_with("HTTP 503: backend busy"), "{e}");
    }
}
