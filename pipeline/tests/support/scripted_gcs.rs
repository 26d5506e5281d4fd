//! A scripted loopback fake of the Cloud Storage JSON API's write paths, for the faults
//! fake-gcs-server cannot play (it finalises an object on a status query and appends a chunk
//! sent twice): multipart uploads with `ifGenerationMatch`, resumable sessions that persist part
//! of a chunk, drop the connection mid-chunk or answer 503, status queries, and media reads.
//!
//! It follows Google's resumable-upload protocol
//! (<https://cloud.google.com/storage/docs/performing-resumable-uploads>): a chunk is
//! `Content-Range: bytes A-B/TOTAL` (or `/*` while the size is unknown) and must start at the
//! persisted size; every chunk but the last is a multiple of 256 KiB; `308` carries
//! `Range: bytes=0-N` (none when nothing is persisted); `bytes */TOTAL` or `bytes */*` with an
//! empty body asks for the status. Anything else is recorded as a violation. Like
//! [`super::fake_vertex`], it runs on its own thread and runtime, on the real clock.

use super::loopback::{Bound, Server};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

const UNIT: usize = 256 * 1024;

/// What the fake does with the next chunk (a `PUT` with data) instead of the normal answer.
#[derive(Debug, Clone)]
pub(crate) enum ChunkFault {
    /// The normal answer.
    Pass,
    /// Answer this status, persisting nothing.
    Status(u16),
    /// Persist only the first `n` bytes of the chunk, and say so in the 308's `Range`.
    PersistOnly(usize),
    /// Read `n` bytes of the chunk, persist the whole 256 KiB units among them, and drop the
    /// connection without an answer.
    DropAfter(usize),
    /// Persist the chunk (completing the object if it is the last), then answer this status.
    PersistThen(u16),
}

/// What the fake does with the next media read instead of the normal answer.
#[derive(Debug, Clone)]
pub(crate) enum ReadFault {
    /// Send the head and this many bytes of the body, then drop the connection.
    DropAfter(usize),
}

/// A media read: the `Range` and `generation` it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    pub range: Option<String>,
    pub generation: Option<String>,
}

/// What the fake does with the next `POST` upload (multipart, or the start of a resumable
/// session) instead of the normal answer.
#[derive(Debug, Clone)]
pub(crate) enum WriteFault {
    Status(u16),
    /// Store the object (a multipart upload), then answer this status.
    StoreThen(u16),
}

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    generation: u64,
}

struct Session {
    name: String,
    data: Vec<u8>,
    total: Option<usize>,
    done: Option<Value>,
}

#[derive(Default)]
struct State {
    url: String,
    objects: HashMap<String, Object>,
    sessions: HashMap<String, Session>,
    next_generation: u64,
    next_session: u64,
    chunk_faults: VecDeque<ChunkFault>,
    read_faults: VecDeque<ReadFault>,
    reads: Vec<Read>,
    write_faults: VecDeque<WriteFault>,
    violations: Vec<String>,
    chunks: usize,
    status_queries: usize,
    writes: usize,
    require_tokens: bool,
    tokens: Vec<String>,
    unauthorised: usize,
}

pub(crate) struct ScriptedGcs {
    pub host: String,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl ScriptedGcs {
    pub(crate) fn start() -> Self {
        let bound = Bound::new();
        let addr = bound.addr;
        let state = Arc::new(Mutex::new(State {
            url: format!("http://{addr}"),
            next_generation: 1_700_000_000_000_000,
            ..State::default()
        }));
        let shared = state.clone();
        let server = bound.serve(move |req| handle(shared.clone(), req));
        Self {
            host: addr.to_string(),
            state,
            _server: server,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn fail_chunks(&self, faults: impl IntoIterator<Item = ChunkFault>) {
        self.state().chunk_faults.extend(faults);
    }

    pub(crate) fn fail_reads(&self, faults: impl IntoIterator<Item = ReadFault>) {
        self.state().read_faults.extend(faults);
    }

    /// The media reads received, in order.
    pub(crate) fn reads(&self) -> Vec<Read> {
        self.state().reads.clone()
    }

    /// Replaces an object's bytes (a new generation), as another writer would.
    pub(crate) fn overwrite(&self, name: &str, data: &[u8]) {
        self.state().store(name, Bytes::copy_from_slice(data));
    }

    pub(crate) fn fail_writes(&self, faults: impl IntoIterator<Item = WriteFault>) {
        self.state().write_faults.extend(faults);
    }

    /// The stored object's bytes.
    pub(crate) fn object(&self, name: &str) -> Option<Bytes> {
        self.state().objects.get(name).map(|o| o.data.clone())
    }

    pub(crate) fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Chunks (`PUT`s with data) received, status queries received, `POST` uploads received.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let s = self.state();
        (s.chunks, s.status_queries, s.writes)
    }

    /// From now on, storage requests need a bearer token the fake's metadata server issued.
    pub(crate) fn require_tokens(&self) {
        self.state().require_tokens = true;
    }

    /// Tokens issued by the metadata server (`GET /computeMetadata/v1/.../token`).
    pub(crate) fn metadata_tokens(&self) -> usize {
        self.state().tokens.len()
    }

    /// Storage requests refused for want of a valid token.
    pub(crate) fn unauthorised(&self) -> usize {
        self.state().unauthorised
    }

    /// Resumable sessions still open (not completed and not cancelled).
    pub(crate) fn open_sessions(&self) -> usize {
        self.state()
            .sessions
            .values()
            .filter(|s| s.done.is_none())
            .count()
    }
}

type Answer = Response<BoxBody<Bytes, std::io::Error>>;

fn full(data: Bytes) -> BoxBody<Bytes, std::io::Error> {
    Full::new(data).map_err(|never| match never {}).boxed()
}

fn answer(status: u16, body: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(full(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: u16, message: &str) -> Answer {
    answer(
        status,
        &json!({"error": {"code": status, "message": message}}),
    )
}

/// 308 with the persisted range (none when nothing is persisted).
fn resume_incomplete(persisted: usize) -> Answer {
    let mut b = Response::builder().status(308);
    if persisted > 0 {
        b = b.header("range", format!("bytes=0-{}", persisted - 1));
    }
    b.body(full(Bytes::new())).unwrap()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .replace('+', " ")
        })
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The metadata and media of a `multipart/related` upload body.
fn parse_multipart(content_type: &str, body: &[u8]) -> Option<(Value, Bytes)> {
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let open = format!("--{boundary}\r\n");
    let between = format!("\r\n--{boundary}\r\n");
    let close = format!("\r\n--{boundary}--");
    let rest = body.strip_prefix(open.as_bytes())?;
    let head_end = find(rest, b"\r\n\r\n")? + 4;
    let meta_end = find(rest, between.as_bytes())?;
    let meta: Value = serde_json::from_slice(&rest[head_end..meta_end]).ok()?;
    let media = &rest[meta_end + between.len()..];
    let media = &media[find(media, b"\r\n\r\n")? + 4..];
    let last = find(media, close.as_bytes()).unwrap_or(media.len());
    Some((meta, Bytes::copy_from_slice(&media[..last])))
}

impl State {
    fn resource(&self, name: &str) -> Value {
        let o = &self.objects[name];
        json!({
            "kind": "storage#object",
            "name": name,
            "bucket": "bucket",
            "size": o.data.len().to_string(),
            "generation": o.generation.to_string(),
        })
    }

    /// A `POST` upload: the start of a resumable session, or a multipart upload.
    fn post_upload(&mut self, path: &str, query: &str, content_type: &str, body: &[u8]) -> Answer {
        self.writes += 1;
        let fault = self.write_faults.pop_front();
        if let Some(WriteFault::Status(code)) = fault {
            return error(code, "scripted failure");
        }
        match query_param(query, "uploadType").as_deref() {
            Some("resumable") => {
                let meta: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let Some(name) = meta["name"].as_str() else {
                    self.violations
                        .push(format!("resumable start without a name: {meta}"));
                    return error(400, "name required");
                };
                self.next_session += 1;
                let id = format!("session-{}", self.next_session);
                self.sessions.insert(
                    id.clone(),
                    Session {
                        name: name.to_owned(),
                        data: Vec::new(),
                        total: None,
                        done: None,
                    },
                );
                let location = format!("{}{path}?uploadType=resumable&upload_id={id}", self.url);
                Response::builder()
                    .status(200)
                    .header("location", location)
                    .body(full(Bytes::new()))
                    .unwrap()
            }
            Some("multipart") => {
                let Some((meta, media)) = parse_multipart(content_type, body) else {
                    self.violations.push("unreadable multipart body".to_owned());
                    return error(400, "unreadable multipart body");
                };
                let name = meta["name"].as_str().unwrap_or_default().to_owned();
                if let Some(expected) = query_param(query, "ifGenerationMatch") {
                    let current = self.objects.get(&name).map_or(0, |o| o.generation);
                    if expected.parse::<u64>().ok() != Some(current) {
                        return error(412, "Precondition Failed");
                    }
                }
                let resource = self.store(&name, media);
                if let Some(WriteFault::StoreThen(code)) = fault {
                    return error(code, "scripted failure after storing");
                }
                answer(200, &resource)
            }
            other => error(400, &format!("unsupported uploadType {other:?}")),
        }
    }

    /// A media read: `generation` must be the current one, `Range: bytes=N-` is honoured
    /// (206), and a scripted fault cuts the body short.
    fn media(&mut self, o: &Object, query: &str, range: &str) -> Answer {
        let generation = query_param(query, "generation");
        self.reads.push(Read {
            range: (!range.is_empty()).then(|| range.to_owned()),
            generation: generation.clone(),
        });
        if generation.is_some_and(|g| g != o.generation.to_string()) {
            return error(404, "No such object (generation)");
        }
        let start = match range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
        {
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n < o.data.len() => n,
                _ => return error(416, "Requested range not satisfiable"),
            },
            None if range.is_empty() => 0,
            None => {
                self.violations.push(format!("unexpected Range {range:?}"));
                return error(400, "bad Range");
            }
        };
        let rest = o.data.slice(start..);
        let mut b = Response::builder()
            .status(if range.is_empty() { 200 } else { 206 })
            .header("x-goog-generation", o.generation.to_string())
            .header("content-length", rest.len().to_string());
        if !range.is_empty() {
            b = b.header(
                "content-range",
                format!("bytes {start}-{}/{}", o.data.len() - 1, o.data.len()),
            );
        }
        let body = match self.read_faults.pop_front() {
            Some(ReadFault::DropAfter(n)) => {
                let first = rest.slice(..n.min(rest.len()));
                // The bytes, then (once they have had time to leave) the drop.
                let frames = futures::stream::iter([Ok(Frame::data(first))]).chain(
                    futures::stream::once(async {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Err(std::io::Error::other("scripted connection drop"))
                    }),
                );
                BodyExt::boxed(StreamBody::new(frames))
            }
            None => full(rest),
        };
        b.body(body).unwrap()
    }

    fn store(&mut self, name: &str, data: Bytes) -> Value {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.objects
            .insert(name.to_owned(), Object { data, generation });
        self.resource(name)
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Answer, std::io::Error> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let content_type = header("content-type");
    let content_range = header("content-range");
    let range = header("range");
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if header("metadata-flavor") != "Google" {
            return Ok(error(403, "Missing required header: Metadata-Flavor"));
        }
        let mut s = lock();
        let token = format!("ya29.metadata-{}", s.tokens.len() + 1);
        s.tokens.push(token.clone());
        return Ok(answer(
            200,
            &json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
        ));
    }
    {
        let mut s = lock();
        let bearer = header("authorization");
        let token = bearer.strip_prefix("Bearer ").unwrap_or_default();
        if s.require_tokens && !s.tokens.iter().any(|t| t == token) {
            s.unauthorised += 1;
            return Ok(error(401, "Invalid Credentials"));
        }
    }
    if method == "PUT"
        && let Some(id) = query_param(&query, "upload_id")
    {
        return put_chunk(&state, &id, &content_range, req.into_body()).await;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let mut s = lock();
    match method.as_str() {
        "DELETE" if query_param(&query, "upload_id").is_some() => {
            let id = query_param(&query, "upload_id").unwrap_or_default();
            s.sessions.remove(&id);
            Ok(error(499, "Client Closed Request"))
        }
        "POST" if path.starts_with("/upload/storage/v1/b/") => {
            Ok(s.post_upload(&path, &query, &content_type, &body))
        }
        "GET" if path.starts_with("/storage/v1/b/") => {
            let name = path.split("/o/").nth(1).unwrap_or_default();
            let name = percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .into_owned();
            let Some(o) = s.objects.get(&name).cloned() else {
                return Ok(error(404, "No such object"));
            };
            if query_param(&query, "alt").as_deref() == Some("media") {
                return Ok(s.media(&o, &query, &range));
            }
            Ok(answer(200, &s.resource(&name)))
        }
        _ => Ok(error(404, &format!("no route for {method} {path}"))),
    }
}

/// A chunk's first and last byte, or none for a status query; the total size if declared.
type ContentRange = (Option<(usize, usize)>, Option<usize>);

/// `bytes A-B/TOTAL`, `bytes A-B/*`, `bytes */TOTAL`, `bytes */*`.
fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    let range = if range == "*" {
        None
    } else {
        let (a, b) = range.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    Some((range, total))
}

/// Reads a chunk's body, or only its first bytes when the connection is to drop (then the
/// whole 256 KiB units among them are persisted and the connection fails).
async fn read_chunk(
    state: &Arc<Mutex<State>>,
    id: &str,
    fault: &ChunkFault,
    mut body: Incoming,
) -> Result<Vec<u8>, std::io::Error> {
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        if let Ok(d) = frame.into_data() {
            data.extend_from_slice(&d);
        }
        if let ChunkFault::DropAfter(n) = *fault
            && data.len() >= n
        {
            let mut s = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let keep = n / UNIT * UNIT;
            if let Some(session) = s.sessions.get_mut(id) {
                session.data.extend_from_slice(&data[..keep]);
            }
            return Err(std::io::Error::other("scripted connection drop"));
        }
    }
    Ok(data)
}

async fn put_chunk(
    state: &Arc<Mutex<State>>,
    id: &str,
    content_range: &str,
    body: Incoming,
) -> Result<Answer, std::io::Error> {
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let Some((range, total)) = parse_content_range(content_range) else {
        lock()
            .violations
            .push(format!("unreadable Content-Range {content_range:?}"));
        return Ok(error(400, "bad Content-Range"));
    };
    let fault = {
        let mut s = lock();
        let Some(session) = s.sessions.get(id) else {
            return Ok(error(404, "No such upload session"));
        };
        if let Some(done) = session.done.clone() {
            return Ok(answer(200, &done));
        }
        if range.is_some() {
            s.chunks += 1;
            s.chunk_faults.pop_front().unwrap_or(ChunkFault::Pass)
        } else {
            s.status_queries += 1;
            ChunkFault::Pass
        }
    };
    let data = read_chunk(state, id, &fault, body).await?;
    let mut s = lock();
    let State {
        sessions,
        violations,
        ..
    } = &mut *s;
    let session = sessions.get_mut(id).expect("session checked above");
    if let Some(t) = total {
        if session.total.is_some_and(|known| known != t) {
            violations.push(format!("total changed from {:?} to {t}", session.total));
        }
        session.total = Some(t);
    }
    let Some((a, b)) = range else {
        if !data.is_empty() {
            violations.push("a status query with a body".to_owned());
        }
        return Ok(resume_incomplete(session.data.len()));
    };
    let persisted = session.data.len();
    if a != persisted {
        violations.push(format!(
            "chunk {content_range} starts at {a}, but {persisted} bytes are persisted"
        ));
        return Ok(error(400, "chunk does not start at the persisted offset"));
    }
    if b + 1 - a != data.len() {
        violations.push(format!(
            "chunk {content_range} carries {} bytes",
            data.len()
        ));
        return Ok(error(400, "Content-Range does not match the body"));
    }
    let last = total.is_some_and(|t| b + 1 == t);
    if !last && data.len() % UNIT != 0 {
        violations.push(format!(
            "intermediate chunk {content_range} is not a multiple of 256 KiB"
        ));
    }
    let keep = match fault {
        ChunkFault::Status(code) => return Ok(error(code, "scripted failure")),
        ChunkFault::PersistOnly(n) => n.min(data.len()),
        _ => data.len(),
    };
    session.data.extend_from_slice(&data[..keep]);
    let complete = session.total == Some(session.data.len());
    let name = session.name.clone();
    let reply = if complete {
        let bytes = Bytes::from(session.data.clone());
        let resource = s.store(&name, bytes);
        if let Some(session) = s.sessions.get_mut(id) {
            session.done = Some(resource.clone());
        }
        answer(200, &resource)
    } else {
        resume_incomplete(keep + persisted)
    };
    if let ChunkFault::PersistThen(code) = fault {
        return Ok(error(code, "scripted failure after persisting"));
    }
    Ok(reply)
}
