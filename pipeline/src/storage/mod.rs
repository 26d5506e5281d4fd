//! The bucket seam: one small trait, [`Store`], with three backends behind it.
//!
//! * [`gcs::GcsStore`] (`gs://bucket[/prefix]`): a thin client of the GCS JSON API on the
//!   shared Google client core ([`crate::client`]: deadlines, retries, credentials), or
//!   anonymous against `STORAGE_EMULATOR_HOST`. Neither
//!   `object_store` nor the official crate can write to, or list on, the emulator (see
//!   `pipeline/tests/contracts/STORAGE.md`), and the lock needs precondition semantics that the emulator
//!   only honours on multipart uploads, so the request forms are chosen here.
//! * [`local::LocalStore`] (a path or `file://`): a folder on disk, with the same create-only and
//!   compare-and-swap guarantees between processes (hard links and a directory lock).
//! * [`memory::MemoryStore`] (`memory://name`): a process-wide map, for tests.
//!
//! Every backend passes the same conformance suite (`tests/storage_conformance.rs`). Keys are
//! object names relative to the store's root (the URL's prefix), always with `/` separators.

pub mod gcs;
#[cfg(test)]
pub(crate) mod hooked;
pub mod local;
pub mod memory;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

/// What a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// Object name relative to the store root.
    pub key: String,
    pub size: u64,
    /// Opaque version: GCS's generation, or a digest of inode and mtime on disk. Any rewrite of
    /// the object changes it, which is what the delta gate and compare-and-swap rely on.
    pub generation: String,
    /// A checksum of the object's bytes, when the listing gives one (GCS: `md5Hash`, else
    /// `crc32c`; the memory store: SHA-256). The same bytes under another name have the same
    /// checksum, so a media sample, which is never read, keeps its content digest when it is
    /// renamed or copied. Local folders give none.
    pub checksum: Option<String>,
}

/// How a `put` treats an object that already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    Overwrite,
    /// Fails with [`StoreError::AlreadyExists`] if the object exists.
    Create,
    /// Compare-and-swap: succeeds only if the object's current generation is this one.
    Update(String),
}

pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// A streaming read, with the generation of the version being read.
pub struct GetResult {
    pub generation: String,
    pub size: u64,
    pub body: ByteStream,
    /// How long ago the object was last written, when the backend can tell: on GCS by the
    /// storage server's own clock (its `Date` less `Last-Modified`, to the second), so a run
    /// whose clock is off cannot take over a live lease; on a local folder by the file's
    /// modification time (the lease trusts it only for a lease whose own times are damaged).
    pub age: Option<std::time::Duration>,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult")
            .field("generation", &self.generation)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl GetResult {
    /// Reads the whole body, refusing more than `limit` bytes so an oversized object cannot
    /// exhaust memory.
    pub async fn bytes_limited(self, uri: &str, limit: u64) -> Result<Bytes, StoreError> {
        if self.size > limit {
            return Err(StoreError::TooLarge {
                uri: uri.to_owned(),
                size: self.size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        let mut body = self.body;
        while let Some(chunk) = body.try_next().await? {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(StoreError::TooLarge {
                    uri: uri.to_owned(),
                    size: (buf.len() + chunk.len()) as u64,
                    limit,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }
}

/// A streaming write that becomes visible under its final name only on [`complete`], so an
/// interrupted upload never leaves a partial object behind.
///
/// [`complete`]: MultipartUpload::complete
#[async_trait]
pub trait MultipartUpload: Send {
    /// Appends bytes; backends buffer to their own part sizes.
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError>;
    /// Publishes the object (overwriting any previous version).
    async fn complete(self: Box<Self>) -> Result<ObjectMeta, StoreError>;
    /// Discards what was written. Dropping an upload without completing it also discards it.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// A bucket. Object names are relative to the store root.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Every object whose key starts with `prefix`, in key order (bytewise, as Cloud Storage
    /// lists). The inventory relies on it to pair files as the listing arrives, and checks
    /// it: a listing out of order costs that, not correctness.
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>>;
    /// The objects of [`Store::list`] whose keys are at least `start` and less than `end`
    /// (either bound open), so that ranges of a large folder can be listed at once. Backends
    /// that cannot list a range by itself filter the whole listing; see `lists_ranges`.
    fn list_range(
        &self,
        prefix: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        let (start, end) = (start.map(str::to_owned), end.map(str::to_owned));
        self.list(prefix)
            .try_filter(move |m| {
                let inside = start.as_ref().is_none_or(|s| m.key >= *s)
                    && end.as_ref().is_none_or(|e| m.key < *e);
                std::future::ready(inside)
            })
            .boxed()
    }
    /// Whether `list_range` asks the backend for the range alone (Cloud Storage's
    /// `startOffset`/`endOffset`), so that listing ranges at once pays.
    fn lists_ranges(&self) -> bool {
        false
    }
    /// Folders right under `prefix` (`prefix` + `a/`, sorted), as far as one listing page
    /// names them: where a first listing may cut its key ranges. Backends that do not list
    /// ranges by themselves name none.
    async fn folder_hint(&self, _prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Whether its requests cross a network, so that reading ahead of need pays (a local
    /// folder answers in microseconds).
    fn remote(&self) -> bool {
        false
    }
    async fn get(&self, key: &str) -> Result<GetResult, StoreError>;
    /// What a listing would say about `key` (size, generation, checksum when the backend
    /// gives one), without reading its bytes: for checks that need only whether an object
    /// exists, or which version it is. A missing object is [`StoreError::NotFound`].
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError>;
    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// The URI by which other systems (Vertex AI, people) name this object.
    fn uri(&self, key: &str) -> String;
    /// Removes what writes interrupted by a killed process left under `prefix` (hidden
    /// temporary files no live writer holds) and says how many. Backends whose interrupted
    /// uploads leave nothing visible do nothing.
    async fn clean_up(&self, _prefix: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Lists a prefix into a vector; for small listings such as run metadata.
pub async fn list_all(store: &dyn Store, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
    store.list(prefix).try_collect().await
}

/// Reads a whole small object.
pub async fn get_bytes(store: &dyn Store, key: &str, limit: u64) -> Result<Bytes, StoreError> {
    let uri = store.uri(key);
    store.get(key).await?.bytes_limited(&uri, limit).await
}

/// A whole small object and the generation read, or `None` when there is none (pointers
/// that are replaced by compare-and-swap on that generation).
pub async fn get_versioned(
    store: &dyn Store,
    key: &str,
    limit: u64,
) -> Result<Option<(Bytes, String)>, StoreError> {
    let got = match store.get(key).await {
        Ok(g) => g,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let generation = got.generation.clone();
    let body = got.bytes_limited(&store.uri(key), limit).await?;
    Ok(Some((body, generation)))
}

/// Adapts a store read into an `AsyncRead`.
pub fn into_async_read(body: ByteStream) -> impl tokio::io::AsyncRead + Send + Unpin {
    tokio_util::io::StreamReader::new(body.map(|r| r.map_err(std::io::Error::other)))
}

/// The one error type of the storage layer: semantic variants first, so callers match on what
/// happened rather than on which backend said it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{uri}: no such object")]
    NotFound { uri: String },
    #[error("{uri}: already exists")]
    AlreadyExists { uri: String },
    #[error("{uri}: changed since generation {expected} (compare-and-swap lost)")]
    Precondition { uri: String, expected: String },
    #[error("{uri}: {size} bytes is more than the {limit} bytes allowed")]
    TooLarge { uri: String, size: u64, limit: u64 },
    #[error("invalid object name {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A FIFO, socket, device, folder or symbolic link where an object was expected (local
    /// folders): such objects are never read, and links are never followed.
    #[error("{uri}: {reason}")]
    NotARegularFile {
        key: String,
        uri: String,
        reason: String,
    },
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{uri}: {source}")]
    Io {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{uri}: storage API answered {status}: {message}")]
    Api {
        uri: String,
        status: u16,
        message: String,
    },
    /// A request that failed for good (no connection, no answer in time, a broken
    /// connection), after the retries the client's policy allows.
    #[error("{uri}: {operation} failed: {source}")]
    Http {
        uri: String,
        operation: &'static str,
        #[source]
        source: Box<crate::client::Failed>,
    },
    #[error("Google credentials: {0}")]
    Auth(String),
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Checks an object name the way GCS does, plus what a filesystem needs to stay inside its
/// root: no empty, `.` or `..` segments, no NUL or line breaks, at most 1024 bytes.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason: &str| {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if key.is_empty() {
        return bad("empty name");
    }
    if key.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if key.contains(['\0', '\r', '\n']) {
        return bad("contains NUL or a line break");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("has an empty, '.' or '..' path segment");
    }
    Ok(())
}

/// Checks a listing prefix: empty (everything), or the start of an object name, which may end
/// with `/`. Like a key it has no empty, `.` or `..` segment and does not start with `/`, so a
/// listing never leaves the store's root.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_key(prefix.strip_suffix('/').unwrap_or(prefix)).map_err(|e| match e {
        StoreError::InvalidKey { reason, .. } => StoreError::InvalidKey {
            key: prefix.to_owned(),
            reason: format!("listing prefix {reason}"),
        },
        e => e,
    })
}

/// Opens the store a URL names: `gs://bucket[/prefix]`, `file:///path`, `memory://name`, or a
/// plain path. A bare bucket name (no scheme, no path separator, not an existing folder) is
/// taken as `gs://`, as the seed's BUCKET_NAME was. Cloud Storage gets the default deadlines
/// and retries ([`crate::client::Options::default`]).
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, &crate::client::Options::default())
}

/// As [`open`], with the deadlines and retries of Cloud Storage requests given.
pub fn open_with(
    url: &str,
    options: &crate::client::Options,
) -> Result<Arc<dyn Store>, StoreError> {
    let gcs = |spec: &str| -> Result<Arc<dyn Store>, StoreError> {
        Ok(Arc::new(gcs::GcsStore::open(
            spec,
            gcs::Config::from_env(options.clone()),
        )?))
    };
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if url.trim().is_empty() {
        return Err(invalid("empty"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme {
            "gs" => gcs(rest),
            "file" => Ok(Arc::new(local::LocalStore::new(rest)?)),
            "memory" => Ok(Arc::new(memory::MemoryStore::named(rest))),
            other => Err(invalid(&format!(
                "unknown scheme {other}:// (use gs://, file://, memory:// or a folder path)"
            ))),
        };
    }
    let looks_like_path = url.contains('/') || url.starts_with('.') || url.starts_with('~');
    if looks_like_path || std::path::Path::new(url).is_dir() {
        Ok(Arc::new(local::LocalStore::new(url)?))
    } else {
        gcs(url)
    }
}

/// Joins a folder and a name into a key, ignoring empty folders and stray slashes.
pub fn join(folder: &str, name: &str) -> String {
    let folder = folder.trim_matches('/');
    let name = name.trim_start_matches('/');
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

/// Lower-case hex of a digest (manifests, the index, dataset digests).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("a/b/c.txt").is_ok());
        for bad in ["", "/a", "a//b", "a/../b", "a/./b", "a\nb", "a/"] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(validate_key(&"x".repeat(1025)).is_err());
        for good in ["", "a/", "a/b", "a/b/", "a/partial"] {
            assert!(validate_prefix(good).is_ok(), "{good:?} is a prefix");
        }
        for bad in ["/", "/etc/", "..", "../", "a/../", "a//", "./a/"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn urls_choose_backends() {
        assert!(format!("{:?}", open("memory://t1").unwrap()).contains("MemoryStore"));
        assert!(format!("{:?}", open("my-bucket").unwrap()).contains("GcsStore"));
        assert!(format!("{:?}", open("gs://bkt/p").unwrap()).contains("GcsStore"));
        assert!(
            open("gs://b")
                .unwrap_err()
                .to_string()
                .contains("not a bucket name")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        assert!(format!("{:?}", open(&path).unwrap()).contains("LocalStore"));
        assert!(format!("{:?}", open(&format!("file://{path}")).unwrap()).contains("LocalStore"));
        let err = open("s3://x").unwrap_err().to_string();
        assert!(err.contains("unknown scheme s3://"), "{err}");
    }

    #[test]
    fn join_ignores_slashes() {
        assert_eq!(join("a/", "b"), "a/b");
        assert_eq!(join("", "b"), "b");
        assert_eq!(join("/a/b/", "/c"), "a/b/c");
    }
}
