//! In-memory backend (`memory://name`). Stores of the same name share one map in the process,
//! so a test can open the bucket twice, as two runs would.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use super::{GetResult, MultipartUpload, ObjectMeta, PutMode, Store, StoreError, validate_key};

#[derive(Debug, Default)]
struct Bucket {
    objects: BTreeMap<String, (Bytes, u64)>,
    next_generation: u64,
}

type Shared = Arc<Mutex<Bucket>>;

static BUCKETS: LazyLock<Mutex<HashMap<String, Shared>>> = LazyLock::new(Mutex::default);

#[derive(Debug, Clone)]
pub struct MemoryStore {
    name: String,
    bucket: Shared,
}

impl MemoryStore {
    pub fn named(name: &str) -> Self {
        let mut all = BUCKETS.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = all.entry(name.to_owned()).or_default().clone();
        Self {
            name: name.to_owned(),
            bucket,
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, key: &str, data: Bytes, mode: &PutMode) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let mut b = self.bucket();
        let current = b.objects.get(key).map(|(_, g)| *g);
        match (mode, current) {
            (PutMode::Create, Some(_)) => {
                return Err(StoreError::AlreadyExists { uri: self.uri(key) });
            }
            (PutMode::Update(expected), current)
                if current.map(|g| g.to_string()).as_ref() != Some(expected) =>
            {
                return Err(StoreError::Precondition {
                    uri: self.uri(key),
                    expected: expected.clone(),
                });
            }
            _ => {}
        }
        b.next_generation += 1;
        let generation = b.next_generation;
        let size = data.len() as u64;
        b.objects.insert(key.to_owned(), (data, generation));
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            generation: generation.to_string(),
            checksum: Some(checksum(&b.objects[key].0)),
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        let items: Vec<_> = self
            .bucket()
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (data, generation))| {
                Ok(ObjectMeta {
                    key: k.clone(),
                    size: data.len() as u64,
                    generation: generation.to_string(),
                    checksum: Some(checksum(data)),
                })
            })
            .collect();
        stream::iter(items).boxed()
    }

    async fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        let (data, generation) = self
            .bucket()
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound { uri: self.uri(key) })?;
        Ok(GetResult {
            age: None,
            generation: generation.to_string(),
            size: data.len() as u64,
            body: stream::once(async move { Ok(data) }).boxed(),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let b = self.bucket();
        let (data, generation) = b
            .objects
            .get(key)
            .ok_or_else(|| StoreError::NotFound { uri: self.uri(key) })?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: data.len() as u64,
            generation: generation.to_string(),
            checksum: Some(checksum(data)),
        })
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.insert(key, data, &mode)
    }

    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        validate_key(key)?;
        Ok(Box::new(MemoryUpload {
            store: self.clone(),
            key: key.to_owned(),
            buf: Vec::new(),
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bucket()
            .objects
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound { uri: self.uri(key) })
    }

    fn uri(&self, key: &str) -> String {
        format!("memory://{}/{key}", self.name)
    }
}

struct MemoryUpload {
    store: MemoryStore,
    key: String,
    buf: Vec<u8>,
}

#[async_trait]
impl MultipartUpload for MemoryUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        self.store
            .insert(&self.key, Bytes::from(self.buf), &PutMode::Overwrite)
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The memory store's checksum of an object's bytes (SHA-256, hex).
fn checksum(data: &[u8]) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        crate::storage::hex(&sha2::Sha256::digest(data))
    )
}
