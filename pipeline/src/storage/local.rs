//! Local-folder backend: the bucket is a directory, objects are files.
//!
//! Writes go to a hidden temporary file beside the target and are published atomically:
//! `link(2)` for create-only puts (it fails if the name exists) and `rename(2)` for the rest.
//! Compare-and-swap holds an exclusive `flock` on the parent directory while it compares the
//! generation and renames, so two processes racing on the lock object behave as on GCS. The
//! generation is derived from the file's inode and modification time, both of which change when
//! a new version is renamed into place.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::{GetResult, MultipartUpload, ObjectMeta, PutMode, Store, StoreError, validate_key};

/// Marks temporary files; listings never show them.
const TMP_MARK: &str = ".autotune-tmp-";
/// Objects up to this size are read in one blocking call.
const SMALL_READ: u64 = 256 * 1024;

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(path: &str) -> Result<Self, StoreError> {
        let root = PathBuf::from(path);
        let root = root.canonicalize().map_err(|e| StoreError::InvalidUrl {
            url: path.to_owned(),
            reason: format!("bucket folder cannot be opened: {e}"),
        })?;
        if !root.is_dir() {
            return Err(StoreError::InvalidUrl {
                url: path.to_owned(),
                reason: "not a folder".to_owned(),
            });
        }
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, key: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
        let uri = self.uri(key);
        move |source| match source.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound { uri: uri.clone() },
            _ => StoreError::Io {
                uri: uri.clone(),
                source,
            },
        }
    }

    fn meta(key: &str, m: &fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: m.len(),
            generation: generation(m),
        }
    }

    /// Publishes a written temporary file under `key` according to `mode`.
    fn commit(&self, tmp: &Path, key: &str, mode: &PutMode) -> Result<ObjectMeta, StoreError> {
        let target = self.path(key)?;
        let io = self.io(key);
        let dir = target.parent().expect("a key has a parent folder");
        let _guard = DirLock::acquire(dir).map_err(&io)?;
        match mode {
            PutMode::Create => {
                let linked = fs::hard_link(tmp, &target);
                let _ = fs::remove_file(tmp);
                match linked {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(StoreError::AlreadyExists { uri: self.uri(key) });
                    }
                    other => other.map_err(&io)?,
                }
            }
            PutMode::Update(expected) => {
                let current = fs::metadata(&target).ok().map(|m| generation(&m));
                if current.as_ref() != Some(expected) {
                    let _ = fs::remove_file(tmp);
                    return Err(StoreError::Precondition {
                        uri: self.uri(key),
                        expected: expected.clone(),
                    });
                }
                fs::rename(tmp, &target).map_err(&io)?;
            }
            PutMode::Overwrite => fs::rename(tmp, &target).map_err(&io)?,
        }
        let m = fs::metadata(&target).map_err(&io)?;
        Ok(Self::meta(key, &m))
    }

    fn temp_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let target = self.path(key)?;
        let dir = target.parent().expect("a key has a parent folder");
        fs::create_dir_all(dir).map_err(self.io(key))?;
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        Ok(dir.join(format!(
            ".{name}{TMP_MARK}{}",
            uuid::Uuid::new_v4().simple()
        )))
    }
}

/// An inode's number and modification time: a new version renamed into place has a new inode,
/// and the nanosecond mtime keeps a recycled inode number from looking unchanged.
fn generation(m: &fs::Metadata) -> String {
    format!("{}{:09}-{}", m.mtime(), m.mtime_nsec(), m.ino())
}

/// An exclusive `flock` on a directory, released on drop.
struct DirLock(fs::File);

impl DirLock {
    fn acquire(dir: &Path) -> std::io::Result<Self> {
        let f = fs::File::open(dir)?;
        f.lock()?;
        Ok(Self(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[async_trait]
impl Store for LocalStore {
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let this = self.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let start_dir = match prefix.rfind('/') {
                Some(i) => this.root.join(&prefix[..i]),
                None => this.root.clone(),
            };
            if !start_dir.is_dir() {
                return;
            }
            for entry in walkdir::WalkDir::new(&start_dir).sort_by_file_name() {
                let item = match entry {
                    Err(e) => {
                        let uri = e.path().map_or_else(
                            || this.root.display().to_string(),
                            |p| p.display().to_string(),
                        );
                        Some(Err(StoreError::Io {
                            uri,
                            source: e.into(),
                        }))
                    }
                    Ok(e) if !e.file_type().is_file() => None,
                    Ok(e) => this.list_entry(&e, &prefix),
                };
                if let Some(item) = item
                    && tx.blocking_send(item).is_err()
                {
                    return;
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .boxed()
    }

    async fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        let path = self.path(key)?;
        let this = self.clone();
        let owned_key = key.to_owned();
        // One blocking hop opens, stats and (for small objects, the common case) reads the
        // file: tokio::fs would spend a thread hand-off on each step.
        let (file, m, small) = blocking(move || {
            let io = this.io(&owned_key);
            let mut file = fs::File::open(&path).map_err(&io)?;
            // fstat on the open file: the generation belongs to exactly the bytes we read.
            let m = file.metadata().map_err(&io)?;
            if m.is_dir() {
                return Err(StoreError::NotFound {
                    uri: this.uri(&owned_key),
                });
            }
            if m.len() <= SMALL_READ {
                let mut buf = Vec::with_capacity(usize::try_from(m.len()).unwrap_or(0));
                std::io::Read::read_to_end(&mut file, &mut buf).map_err(&io)?;
                return Ok((None, m, Some(Bytes::from(buf))));
            }
            Ok((Some(file), m, None))
        })
        .await?;
        if let Some(data) = small {
            return Ok(GetResult {
                generation: generation(&m),
                size: data.len() as u64,
                body: futures::stream::once(async move { Ok(data) }).boxed(),
            });
        }
        let file = tokio::fs::File::from_std(file.expect("a large file stays open"));
        let uri = self.uri(key);
        let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .map(move |r| {
                r.map_err(|source| StoreError::Io {
                    uri: uri.clone(),
                    source,
                })
            })
            .boxed();
        Ok(GetResult {
            generation: generation(&m),
            size: m.len(),
            body,
        })
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let tmp = this.temp_path(&key)?;
            let written = fs::File::create(&tmp).and_then(|mut f| {
                f.write_all(&data)?;
                f.sync_data()
            });
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(this.io(&key)(e));
            }
            this.commit(&tmp, &key, &mode)
        })
        .await
    }

    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        let tmp = self.temp_path(key)?;
        let file = tokio::fs::File::create(&tmp).await.map_err(self.io(key))?;
        Ok(Box::new(LocalUpload {
            store: self.clone(),
            key: key.to_owned(),
            file: Some(tokio::io::BufWriter::with_capacity(1 << 20, file)),
            tmp,
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let path = this.path(&key)?;
            let dir = path.parent().expect("a key has a parent folder");
            let _guard = DirLock::acquire(dir).map_err(this.io(&key))?;
            fs::remove_file(&path).map_err(this.io(&key))
        })
        .await
    }

    fn uri(&self, key: &str) -> String {
        format!("file://{}", self.root.join(key).display())
    }
}

impl LocalStore {
    fn list_entry(
        &self,
        e: &walkdir::DirEntry,
        prefix: &str,
    ) -> Option<Result<ObjectMeta, StoreError>> {
        let rel = e.path().strip_prefix(&self.root).ok()?;
        let Some(key) = rel.to_str() else {
            return Some(Err(StoreError::InvalidKey {
                key: rel.to_string_lossy().into_owned(),
                reason: "file name is not UTF-8".to_owned(),
            }));
        };
        if !key.starts_with(prefix) || key.contains(TMP_MARK) {
            return None;
        }
        Some(
            e.metadata()
                .map(|m| Self::meta(key, &m))
                .map_err(|err| StoreError::Io {
                    uri: self.uri(key),
                    source: err.into(),
                }),
        )
    }
}

struct LocalUpload {
    store: LocalStore,
    key: String,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    tmp: PathBuf,
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        let f = self.file.as_mut().expect("upload is open");
        f.write_all(&data).await.map_err(self.store.io(&self.key))
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let mut f = self.file.take().expect("upload is open");
        let io = self.store.io(&self.key);
        f.flush().await.map_err(&io)?;
        f.get_ref().sync_data().await.map_err(&io)?;
        drop(f);
        let (store, key, tmp) = (self.store.clone(), self.key.clone(), self.tmp.clone());
        let result = blocking(move || store.commit(&tmp, &key, &PutMode::Overwrite)).await;
        // Committed (or failed): either way the temporary name is gone or must go.
        let _ = fs::remove_file(&self.tmp);
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.file.take();
        fs::remove_file(&self.tmp).map_err(self.store.io(&self.key))
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
