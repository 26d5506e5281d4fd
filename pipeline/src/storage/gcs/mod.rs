//! Google Cloud Storage through its JSON API, on the shared Google client core
//! ([`crate::client`]): its deadlines, its retry classification and back-off, its credentials.
//!
//! Request forms follow `pipeline/tests/contracts/STORAGE.md`, so that the same code is correct on GCS
//! and testable on fake-gcs-server:
//! * small writes, including every lock write, are `uploadType=multipart` with
//!   `ifGenerationMatch` (0 for create-only): the only form whose precondition the emulator
//!   enforces. They are retried on 408, 429, 5xx and lost answers; a retried conditional write
//!   refused with 412 is checked against the object, since the lost attempt may have been ours.
//! * large writes are resumable uploads in 8 MiB chunks (a multiple of 256 KiB), following
//!   Google's protocol (<https://cloud.google.com/storage/docs/performing-resumable-uploads>):
//!   a `308`'s `Range: bytes=0-N` says how much is persisted, and the next chunk starts there;
//!   after a failed or interrupted chunk the session is asked for its status (`PUT` with
//!   `Content-Range: bytes */TOTAL`, or `*/*` while the size is unknown) and the upload resumes
//!   from what it reports. The unacknowledged bytes stay in memory until the server has them,
//!   so memory stays bounded by about two chunks. Status queries happen only after a failure:
//!   the emulator finalises an object on one. The object appears only when the last chunk lands.
//! * reads stream; a read whose connection breaks asks for the rest (`Range`) of the same
//!   generation;
//! * listings use pages of 1,000, GCS's maximum.
//!
//! Failures name the operation and the object (`gs://bucket/key: read failed: …`).
//!
//! `STORAGE_EMULATOR_HOST` (`host:port` or a URL) switches to the emulator without credentials;
//! otherwise tokens come from [`Credentials::from_env`], which honours
//! `GOOGLE_APPLICATION_CREDENTIALS` and `GCE_METADATA_HOST`.
//!
//! # Layout
//!
//! Split by role, as `object_store`'s `gcp/` is:
//! * this module: the backend. [`Config`] and [`GcsStore`] (the only public items, so every
//!   path `storage::gcs::…` is as it was), the [`Store`] implementation, listings, the small
//!   calls (metadata, multipart writes with their preconditions, deletes), and the mapping of
//!   failures to [`StoreError`];
//! * `download.rs`: media reads, and their resumption from the byte where a broken connection
//!   stopped, pinned to the generation the read began with;
//! * `upload.rs`: the resumable upload session. Its bookkeeping (which bytes the server has
//!   acknowledged, the `Content-Range` of the next chunk, what a session's answer says) is kept
//!   apart from the HTTP exchanges that drive it, so that it is tested on its own.

mod download;
#[cfg(test)]
mod fake;
mod upload;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use super::{GetResult, MultipartUpload, ObjectMeta, PutMode, Store, StoreError, validate_key};
use crate::client::retry::{self, Failed, Idempotency, retryable};
use crate::client::{Answer, Auth, Client, Credentials, Error, Options};

const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
const PAGE_SIZE: &str = "1000";

/// Keys from the first (included) to the second (excluded); `None`: open.
type Range = (Option<String>, Option<String>);
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How to reach a bucket: the API root, the credentials, the deadlines and retries.
#[derive(Debug, Clone)]
pub struct Config {
    /// API root without a trailing slash: `https://storage.googleapis.com`, or an emulator's.
    pub endpoint: String,
    pub auth: Auth,
    pub options: Options,
}

impl Config {
    /// Cloud Storage with credentials from the environment ([`Credentials::from_env`]).
    pub fn google(options: Options) -> Self {
        Self::with_credentials(
            "https://storage.googleapis.com",
            Arc::new(Credentials::from_env()),
            options,
        )
    }

    /// A Cloud Storage API at `endpoint` with these credentials.
    pub fn with_credentials(
        endpoint: &str,
        credentials: Arc<Credentials>,
        options: Options,
    ) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            auth: Auth::Bearer {
                credentials,
                scope: SCOPE,
            },
            options,
        }
    }

    /// The emulator at `host` (`host:port` or a URL), without credentials.
    pub fn emulator(host: &str, options: Options) -> Self {
        let endpoint = if host.contains("://") {
            host.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", host.trim_end_matches('/'))
        };
        Self {
            endpoint,
            auth: Auth::Anonymous,
            options,
        }
    }

    /// The emulator when `STORAGE_EMULATOR_HOST` is set, Cloud Storage otherwise.
    pub fn from_env(options: Options) -> Self {
        match std::env::var("STORAGE_EMULATOR_HOST") {
            Ok(host) if !host.is_empty() => Self::emulator(&host, options),
            _ => Self::google(options),
        }
    }
}

#[derive(Clone)]
pub struct GcsStore {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: String,
    /// Object-name prefix that makes up the store root, empty or ending in `/`.
    prefix: String,
    base: String,
    client: Client,
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
    /// Base64 MD5 of the bytes; absent for composite objects.
    #[serde(default, rename = "md5Hash")]
    md5_hash: Option<String>,
    /// Base64 CRC32C of the bytes, big-endian; every object has one.
    #[serde(default)]
    crc32c: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ObjectResource>,
    /// The folders of a listing with a delimiter.
    #[serde(default)]
    prefixes: Vec<String>,
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

/// Whether a failed attempt may have taken effect on the server (its answer lost).
fn may_have_taken_effect(e: &Error) -> bool {
    match e {
        Error::Timeout { .. } | Error::Interrupted { .. } => true,
        Error::Status { status, .. } => *status >= 500,
        _ => false,
    }
}

impl GcsStore {
    /// `spec` is `bucket[/prefix]`; honours `STORAGE_EMULATOR_HOST`, default deadlines.
    pub fn new(spec: &str) -> Result<Self, StoreError> {
        Self::open(spec, Config::from_env(Options::default()))
    }

    /// As [`GcsStore::new`], with the emulator (`host:port` or URL) given explicitly.
    pub fn with_emulator(spec: &str, emulator: Option<&str>) -> Result<Self, StoreError> {
        Self::with_options(spec, emulator, Options::default())
    }

    /// The emulator if given, else Cloud Storage with credentials from the environment.
    pub fn with_options(
        spec: &str,
        emulator: Option<&str>,
        options: Options,
    ) -> Result<Self, StoreError> {
        let config = match emulator.filter(|s| !s.is_empty()) {
            Some(host) => Config::emulator(host, options),
            None => Config::google(options),
        };
        Self::open(spec, config)
    }

    /// `spec` is `bucket[/prefix]`.
    pub fn open(spec: &str, config: Config) -> Result<Self, StoreError> {
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
        let client = Client::new(config.options, config.auth).map_err(|e| StoreError::Http {
            uri: format!("gs://{spec}"),
            operation: "open",
            source: Box::new(Failed::once(e)),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                bucket: bucket.to_owned(),
                prefix,
                base: config.endpoint.trim_end_matches('/').to_owned(),
                client,
            }),
        })
    }

    fn client(&self) -> &Client {
        &self.inner.client
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

    fn uri_of_name(&self, name: &str) -> String {
        format!("gs://{}/{name}", self.inner.bucket)
    }

    /// A small idempotent call, retried by the client's policy.
    async fn send(
        &self,
        operation: &'static str,
        uri: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, StoreError> {
        self.client()
            .send(&format!("{operation} {uri}"), Idempotency::Idempotent, make)
            .await
            .map_err(|f| failure(operation, uri, f, None))
    }

    /// One page of a listing; `folders`: with the delimiter `/`, so that folders under
    /// `prefix` come as `prefixes`.
    async fn list_page(
        &self,
        prefix: &str,
        range: &Range,
        token: Option<&str>,
        folders: bool,
    ) -> Result<ListPage, StoreError> {
        let url = format!("{}/storage/v1/b/{}/o", self.inner.base, self.inner.bucket);
        let full_prefix = self.name(prefix);
        let mut query = vec![
            ("prefix", full_prefix.clone()),
            ("maxResults", PAGE_SIZE.to_owned()),
        ];
        if folders {
            query.push(("delimiter", "/".to_owned()));
        }
        if let Some(start) = &range.0 {
            query.push(("startOffset", self.name(start)));
        }
        if let Some(end) = &range.1 {
            query.push(("endOffset", self.name(end)));
        }
        if let Some(t) = token {
            query.push(("pageToken", t.to_owned()));
        }
        let uri = self.uri_of_name(&full_prefix);
        let answer = self
            .send("list", &uri, || {
                self.client().request(Method::GET, &url).query(&query)
            })
            .await?;
        answer
            .json()
            .map_err(|e| failure("list", &uri, Failed::once(e), None))
    }

    fn to_meta(&self, o: ObjectResource) -> Option<ObjectMeta> {
        let key = o.name.strip_prefix(&self.inner.prefix)?.to_owned();
        let checksum = match (o.md5_hash, o.crc32c) {
            (Some(md5), _) => Some(format!("md5:{md5}")),
            (None, Some(crc)) => Some(format!("crc32c:{crc}")),
            (None, None) => None,
        };
        Some(ObjectMeta {
            key,
            size: o.size,
            generation: o.generation,
            checksum,
        })
    }

    fn parse_object(&self, answer: &Answer, uri: &str) -> Result<ObjectMeta, StoreError> {
        let o: ObjectResource = answer
            .json()
            .map_err(|e| failure("write", uri, Failed::once(e), None))?;
        self.to_meta(o).ok_or_else(|| StoreError::Api {
            uri: uri.to_owned(),
            status: answer.status.as_u16(),
            message: "object name outside the store prefix".to_owned(),
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
        let body = Bytes::from(body);
        let mut query = vec![("uploadType", "multipart".to_owned())];
        let expected = match mode {
            PutMode::Overwrite => None,
            PutMode::Create => Some("0".to_owned()),
            PutMode::Update(g) => Some(g.clone()),
        };
        if let Some(g) = &expected {
            query.push(("ifGenerationMatch", g.clone()));
        }
        let url = self.upload_url();
        let content_type = format!("multipart/related; boundary={boundary}");
        // A write is safe to repeat: it is either unconditional (the same bytes again) or
        // guarded by a generation precondition.
        let maybe_ours = AtomicBool::new(false);
        let result = retry::retry(
            &self.client().options().retry,
            &format!("write {uri}"),
            |e| retryable(e, Idempotency::Idempotent),
            || async {
                let rb = self
                    .client()
                    .request(Method::POST, &url)
                    .query(&query)
                    .header(CONTENT_TYPE, &content_type);
                let r = self.client().upload(rb, body.clone()).await;
                if let Err(e) = &r
                    && may_have_taken_effect(e)
                {
                    maybe_ours.store(true, Ordering::Relaxed);
                }
                r
            },
        )
        .await;
        match result {
            Ok(answer) => self.parse_object(&answer, &uri),
            Err(f) if f.error.status() == Some(412) && maybe_ours.load(Ordering::Relaxed) => {
                // An earlier attempt may have made the write whose precondition now fails:
                // it was ours if the object holds exactly our bytes.
                match self.read_small(key, data.len()).await {
                    Ok((meta, current)) if current == data => {
                        tracing::info!(%uri, "a retried write had taken effect before its answer was lost");
                        Ok(meta)
                    }
                    _ => Err(failure("write", &uri, f, expected.as_deref())),
                }
            }
            Err(f) => Err(failure("write", &uri, f, expected.as_deref())),
        }
    }

    /// Reads an object of at most `limit` bytes, with its metadata.
    async fn read_small(&self, key: &str, limit: usize) -> Result<(ObjectMeta, Bytes), StoreError> {
        let uri = self.uri(key);
        let got = self.get(key).await?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: got.size,
            generation: got.generation.clone(),
            checksum: None,
        };
        let bytes = got.bytes_limited(&uri, limit as u64).await?;
        Ok((meta, bytes))
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

/// Maps a failed operation to a semantic error. `expected` is the generation precondition
/// sent, which decides what a 412 means.
fn failure(operation: &'static str, uri: &str, f: Failed, expected: Option<&str>) -> StoreError {
    let uri = uri.to_owned();
    match (&f.error, expected) {
        (Error::Status { status: 404, .. }, _) => StoreError::NotFound { uri },
        (Error::Status { status: 412, .. }, Some("0")) => StoreError::AlreadyExists { uri },
        (Error::Status { status: 412, .. }, Some(g)) => StoreError::Precondition {
            uri,
            expected: g.to_owned(),
        },
        (Error::Status { status, .. }, _) => StoreError::Api {
            uri,
            status: *status,
            message: f.error.message(),
        },
        (Error::Auth { message, .. }, _) => StoreError::Auth(message.clone()),
        _ => StoreError::Http {
            uri,
            operation,
            source: Box::new(f),
        },
    }
}

#[async_trait]
impl Store for GcsStore {
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        self.list_range(prefix, None, None)
    }

    fn list_range(
        &self,
        prefix: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        let prefix = prefix.to_owned();
        let range: Range = (start.map(str::to_owned), end.map(str::to_owned));
        stream::try_unfold(Some(None::<String>), move |state| {
            let (prefix, range) = (prefix.clone(), range.clone());
            async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let page = self
                    .list_page(&prefix, &range, token.as_deref(), false)
                    .await?;
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
        self.download(key).await
    }

    /// `objects.get` without `alt=media`: the object resource, not its bytes.
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let uri = self.uri(key);
        let url = self.object_url(key);
        let answer = self
            .send("read metadata", &uri, || {
                self.client().request(Method::GET, &url)
            })
            .await?;
        self.parse_object(&answer, &uri)
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.multipart_put(key, data, &mode).await
    }

    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        validate_key(key)?;
        Ok(Box::new(upload::ResumableUpload::new(self.clone(), key)))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let uri = self.uri(key);
        let url = self.object_url(key);
        let maybe_done = AtomicBool::new(false);
        let result = retry::retry(
            &self.client().options().retry,
            &format!("delete {uri}"),
            |e| retryable(e, Idempotency::Idempotent),
            || async {
                let r = self
                    .client()
                    .call(self.client().request(Method::DELETE, &url))
                    .await;
                if let Err(e) = &r
                    && may_have_taken_effect(e)
                {
                    maybe_done.store(true, Ordering::Relaxed);
                }
                r
            },
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            // The attempt whose answer was lost deleted it.
            Err(f) if f.error.status() == Some(404) && maybe_done.load(Ordering::Relaxed) => Ok(()),
            Err(f) => Err(failure("delete", &uri, f, None)),
        }
    }

    fn uri(&self, key: &str) -> String {
        self.uri_of_name(&self.name(key))
    }

    fn lists_ranges(&self) -> bool {
        true
    }

    fn remote(&self) -> bool {
        true
    }

    async fn folder_hint(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let page = self.list_page(prefix, &(None, None), None, true).await?;
        Ok(page
            .prefixes
            .into_iter()
            .filter_map(|p| p.strip_prefix(&self.inner.prefix).map(str::to_owned))
            .collect())
    }
}
