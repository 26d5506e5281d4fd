//! Google Cloud Storage through its JSON API.
//!
//! Request forms follow `shared/contracts/STORAGE.md`, so that the same code is correct on GCS
//! and testable on fake-gcs-server:
//! * small writes, including every lock write, are `uploadType=multipart` with
//!   `ifGenerationMatch` (0 for create-only): the only form whose precondition the emulator
//!   enforces;
//! * large writes are resumable uploads in 8 MiB chunks (a multiple of 256 KiB) that are never
//!   status-queried; the object appears only when the last chunk lands;
//! * listings use pages of 1,000, GCS's maximum.
//!
//! `STORAGE_EMULATOR_HOST` (`host:port` or a URL) switches to the emulator without credentials.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::{GetResult, MultipartUpload, ObjectMeta, PutMode, Store, StoreError, validate_key};

const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const PAGE_SIZE: &str = "1000";
/// Resumable chunks must be multiples of 256 KiB.
const CHUNK: usize = 32 * 256 * 1024;
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Clone)]
pub struct GcsStore {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: String,
    /// Object-name prefix that makes up the store root, empty or ending in `/`.
    prefix: String,
    base: String,
    http: reqwest::Client,
    emulated: bool,
    auth: OnceCell<Arc<dyn gcp_auth::TokenProvider>>,
}

impl fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ObjectResource {
    name: String,
    #[serde(default, deserialize_with = "de_u64")]
    size: u64,
    #[serde(default, deserialize_with = "de_string")]
    generation: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ObjectResource>,
    next_page_token: Option<String>,
}

/// GCS sends int64 as strings; the emulator sometimes as numbers.
fn de_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("negative size")),
        _ => Ok(0),
    }
}

fn de_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl GcsStore {
    /// `spec` is `bucket[/prefix]`; honours `STORAGE_EMULATOR_HOST`.
    pub fn new(spec: &str) -> Result<Self, StoreError> {
        let emulator = std::env::var("STORAGE_EMULATOR_HOST").ok();
        Self::with_emulator(spec, emulator.as_deref())
    }

    /// As [`GcsStore::new`], with the emulator (`host:port` or URL) given explicitly.
    pub fn with_emulator(spec: &str, emulator: Option<&str>) -> Result<Self, StoreError> {
        let (bucket, prefix) = spec.split_once('/').unwrap_or((spec, ""));
        let valid_bucket = (3..=222).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !valid_bucket {
            return Err(StoreError::InvalidUrl {
                url: format!("gs://{spec}"),
                reason: format!(
                    "{bucket:?} is not a bucket name (3-222 lowercase letters, digits, '-', '_', '.')"
                ),
            });
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let emulator = emulator.filter(|s| !s.is_empty());
        let base = match &emulator {
            Some(h) if h.contains("://") => h.trim_end_matches('/').to_owned(),
            Some(h) => format!("http://{}", h.trim_end_matches('/')),
            None => "https://storage.googleapis.com".to_owned(),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|source| StoreError::Http {
                uri: base.clone(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                bucket: bucket.to_owned(),
                prefix,
                base,
                http,
                emulated: emulator.is_some(),
                auth: OnceCell::new(),
            }),
        })
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.inner.base,
            self.inner.bucket,
            utf8_percent_encode(&self.name(key), ENCODE)
        )
    }

    fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.inner.base, self.inner.bucket
        )
    }

    async fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, StoreError> {
        let builder = self.inner.http.request(method, url);
        if self.inner.emulated {
            return Ok(builder);
        }
        let provider = self
            .inner
            .auth
            .get_or_try_init(|| async {
                gcp_auth::provider()
                    .await
                    .map_err(|e| StoreError::Auth(e.to_string()))
            })
            .await?;
        let token = provider
            .token(&[SCOPE])
            .await
            .map_err(|e| StoreError::Auth(e.to_string()))?;
        Ok(builder.bearer_auth(token.as_str()))
    }

    /// Sends a request, retrying transient failures (429, 5xx, connection errors and
    /// time-outs) with exponential back-off and jitter. Only for requests safe to repeat.
    async fn send_idempotent(
        &self,
        uri: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, StoreError> {
        use backon::{ExponentialBuilder, Retryable};
        /// Why an attempt should be repeated; a transient status keeps its response so the
        /// last one can still be reported.
        enum Failed {
            Status(Response),
            Http(reqwest::Error),
        }
        let attempt = || async {
            match make().send().await {
                Ok(r)
                    if r.status() == StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error() =>
                {
                    Err(Failed::Status(r))
                }
                Ok(r) => Ok(r),
                Err(e) => Err(Failed::Http(e)),
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_times(4)
            .with_jitter();
        match attempt
            .retry(backoff)
            .when(|f| match f {
                Failed::Status(_) => true,
                Failed::Http(e) => e.is_connect() || e.is_timeout(),
            })
            .await
        {
            Ok(r) | Err(Failed::Status(r)) => Ok(r),
            Err(Failed::Http(source)) => Err(StoreError::Http {
                uri: uri.to_owned(),
                source,
            }),
        }
    }

    fn uri_of_name(&self, name: &str) -> String {
        format!("gs://{}/{name}", self.inner.bucket)
    }

    async fn list_page(&self, prefix: &str, token: Option<&str>) -> Result<ListPage, StoreError> {
        let url = format!("{}/storage/v1/b/{}/o", self.inner.base, self.inner.bucket);
        let full_prefix = self.name(prefix);
        let mut query = vec![("prefix", full_prefix.as_str()), ("maxResults", PAGE_SIZE)];
        if let Some(t) = token {
            query.push(("pageToken", t));
        }
        let uri = self.uri_of_name(&full_prefix);
        let base = self.request(Method::GET, &url).await?;
        let resp = self
            .send_idempotent(&uri, || {
                base.try_clone().expect("no streaming body").query(&query)
            })
            .await?;
        let resp = check(resp, &uri, None).await?;
        resp.json()
            .await
            .map_err(|source| StoreError::Http { uri, source })
    }

    fn to_meta(&self, o: ObjectResource) -> Option<ObjectMeta> {
        let key = o.name.strip_prefix(&self.inner.prefix)?.to_owned();
        Some(ObjectMeta {
            key,
            size: o.size,
            generation: o.generation,
        })
    }

    async fn multipart_put(
        &self,
        key: &str,
        data: Bytes,
        mode: &PutMode,
    ) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let name = self.name(key);
        let uri = self.uri(key);
        let boundary = format!("autotune-{}", uuid::Uuid::new_v4().simple());
        let meta = serde_json::json!({ "name": name, "contentType": content_type(key) });
        let mut body = Vec::with_capacity(data.len() + 512);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: {}\r\n\r\n",
                content_type(key)
            )
            .as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut query = vec![("uploadType", "multipart".to_owned())];
        let expected = match mode {
            PutMode::Overwrite => None,
            PutMode::Create => Some("0".to_owned()),
            PutMode::Update(g) => Some(g.clone()),
        };
        if let Some(g) = &expected {
            query.push(("ifGenerationMatch", g.clone()));
        }
        let resp = self
            .request(Method::POST, &self.upload_url())
            .await?
            .query(&query)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .map_err(http_error(&uri))?;
        let resp = check(resp, &uri, expected.as_deref()).await?;
        self.parse_object(resp, &uri).await
    }

    async fn parse_object(&self, resp: Response, uri: &str) -> Result<ObjectMeta, StoreError> {
        let o: ObjectResource = resp.json().await.map_err(http_error(uri))?;
        self.to_meta(o).ok_or_else(|| StoreError::Api {
            uri: uri.to_owned(),
            status: 200,
            message: "object name outside the store prefix".to_owned(),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let uri = self.uri(key);
        let url = self.object_url(key);
        let base = self.request(Method::GET, &url).await?;
        let resp = self
            .send_idempotent(&uri, || base.try_clone().expect("no body"))
            .await?;
        let resp = check(resp, &uri, None).await?;
        self.parse_object(resp, &uri).await
    }
}

fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("json") => "application/json",
        Some("jsonl") => "application/jsonl",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// Wraps a transport error with the object it concerns.
fn http_error(uri: &str) -> impl Fn(reqwest::Error) -> StoreError + '_ {
    move |source| StoreError::Http {
        uri: uri.to_owned(),
        source,
    }
}

/// Maps an error status to a semantic error. `expected` is the generation precondition sent,
/// which decides what a 412 means.
async fn check(resp: Response, uri: &str, expected: Option<&str>) -> Result<Response, StoreError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let uri = uri.to_owned();
    match (status, expected) {
        (StatusCode::NOT_FOUND, _) => Err(StoreError::NotFound { uri }),
        (StatusCode::PRECONDITION_FAILED, Some("0")) => Err(StoreError::AlreadyExists { uri }),
        (StatusCode::PRECONDITION_FAILED, Some(g)) => Err(StoreError::Precondition {
            uri,
            expected: g.to_owned(),
        }),
        _ => {
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Err(StoreError::Api {
                uri,
                status: status.as_u16(),
                message,
            })
        }
    }
}

#[async_trait]
impl Store for GcsStore {
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        let prefix = prefix.to_owned();
        stream::try_unfold(Some(None::<String>), move |state| {
            let prefix = prefix.clone();
            async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let page = self.list_page(&prefix, token.as_deref()).await?;
                let next = page.next_page_token.filter(|t| !t.is_empty()).map(Some);
                let items: Vec<_> = page
                    .items
                    .into_iter()
                    .filter_map(|o| self.to_meta(o))
                    .map(Ok)
                    .collect();
                Ok(Some((stream::iter(items), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        validate_key(key)?;
        let uri = self.uri(key);
        let url = self.object_url(key);
        let base = self.request(Method::GET, &url).await?;
        let resp = self
            .send_idempotent(&uri, || {
                base.try_clone()
                    .expect("no body")
                    .query(&[("alt", "media")])
            })
            .await?;
        let resp = check(resp, &uri, None).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let generation = header("x-goog-generation");
        let size = resp.content_length();
        // Without the headers, ask for the metadata; the body we stream is that version's
        // unless the object changed in between, which only the lock cares about and the lock's
        // compare-and-swap then catches.
        let (generation, size) = if let (Some(g), Some(s)) = (generation, size) {
            (g, s)
        } else {
            let m = self.head(key).await?;
            (m.generation, m.size)
        };
        let body = resp
            .bytes_stream()
            .map_err(move |source| StoreError::Http {
                uri: uri.clone(),
                source,
            })
            .boxed();
        Ok(GetResult {
            generation,
            size,
            body,
        })
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.multipart_put(key, data, &mode).await
    }

    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        validate_key(key)?;
        Ok(Box::new(ResumableUpload {
            store: self.clone(),
            key: key.to_owned(),
            session: None,
            buf: Vec::with_capacity(CHUNK),
            offset: 0,
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let uri = self.uri(key);
        let url = self.object_url(key);
        let base = self.request(Method::DELETE, &url).await?;
        let resp = self
            .send_idempotent(&uri, || base.try_clone().expect("no body"))
            .await?;
        check(resp, &uri, None).await.map(|_| ())
    }

    fn uri(&self, key: &str) -> String {
        self.uri_of_name(&self.name(key))
    }
}

struct ResumableUpload {
    store: GcsStore,
    key: String,
    session: Option<String>,
    buf: Vec<u8>,
    offset: u64,
}

impl ResumableUpload {
    async fn session(&mut self) -> Result<String, StoreError> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let uri = self.store.uri(&self.key);
        let meta = serde_json::json!({ "name": self.store.name(&self.key), "contentType": content_type(&self.key) });
        let resp = self
            .store
            .request(Method::POST, &self.store.upload_url())
            .await?
            .query(&[("uploadType", "resumable")])
            .json(&meta)
            .send()
            .await
            .map_err(http_error(&uri))?;
        let resp = check(resp, &uri, None).await?;
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| StoreError::Api {
                uri: uri.clone(),
                status: resp.status().as_u16(),
                message: "resumable upload started without a Location header".to_owned(),
            })?
            .to_owned();
        self.session = Some(location.clone());
        Ok(location)
    }

    /// Sends `len` bytes from the front of the buffer; `total` is set on the last chunk.
    async fn send_chunk(&mut self, len: usize, total: Option<u64>) -> Result<Response, StoreError> {
        let session = self.session().await?;
        let uri = self.store.uri(&self.key);
        let chunk: Vec<u8> = self.buf.drain(..len).collect();
        let end = self.offset + len as u64;
        let range = match total {
            Some(t) if len == 0 => format!("bytes */{t}"),
            Some(t) => format!("bytes {}-{}/{t}", self.offset, end - 1),
            None => format!("bytes {}-{}/*", self.offset, end - 1),
        };
        let resp = self
            .store
            .request(Method::PUT, &session)
            .await?
            .header(reqwest::header::CONTENT_RANGE, range)
            .body(chunk)
            .send()
            .await
            .map_err(http_error(&uri))?;
        self.offset = end;
        // 308 is "resume incomplete": the expected answer to every chunk but the last.
        if resp.status().as_u16() == 308 {
            return Ok(resp);
        }
        check(resp, &uri, None).await
    }
}

#[async_trait]
impl MultipartUpload for ResumableUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.buf.extend_from_slice(&data);
        // Keep at least one byte back, so the final chunk is never empty: an empty final
        // chunk is a status query, which the emulator mishandles.
        while self.buf.len() > CHUNK {
            self.send_chunk(CHUNK, None).await?;
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        if self.session.is_none() {
            let data = Bytes::from(std::mem::take(&mut self.buf));
            return self
                .store
                .multipart_put(&self.key, data, &PutMode::Overwrite)
                .await;
        }
        let len = self.buf.len();
        let total = self.offset + len as u64;
        let resp = self.send_chunk(len, Some(total)).await?;
        let uri = self.store.uri(&self.key);
        self.store.parse_object(resp, &uri).await
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        if let Some(session) = &self.session {
            // GCS answers 499 to a cancelled session; nothing to check.
            let _ = self
                .store
                .request(Method::DELETE, session)
                .await?
                .send()
                .await;
        }
        Ok(())
    }
}
