//! The unit tests' one hookable bucket (test builds only): a memory bucket whose listings can
//! be reshaped (listed out of order), whose reads can be held or slowed (a gate, a paused
//! clock), and which can claim to list key ranges by itself and to name folders, as Cloud
//! Storage does. The integration tests have their own (`tests/support/hooked.rs`), since they
//! cannot see test-only items of the library.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::memory::MemoryStore;
use super::{GetResult, MultipartUpload, ObjectMeta, PutMode, Store, StoreError};

/// What a read waits for before it is answered.
type ReadHook = dyn Fn(&str) -> BoxFuture<'static, ()> + Send + Sync;

pub(crate) struct Hooked {
    inner: MemoryStore,
    /// Lists in reverse key order (out of order, as no backend may).
    reversed: bool,
    /// Claims to list ranges by itself and names the folders under a prefix.
    ranges: bool,
    read: Option<Box<ReadHook>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").finish_non_exhaustive()
    }
}

impl Hooked {
    /// The bucket behind the hooks.
    pub(crate) fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    /// `inner`, every call passed through.
    pub(crate) fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            reversed: false,
            ranges: false,
            read: None,
        }
    }

    /// Listed in reverse key order.
    pub(crate) fn reversed(self) -> Self {
        Self {
            reversed: true,
            ..self
        }
    }

    /// Claiming to list ranges by itself (its filtering default) and to name folders.
    pub(crate) fn ranged(self) -> Self {
        Self {
            ranges: true,
            ..self
        }
    }

    /// Every read first awaits `hook(key)`.
    pub(crate) fn on_read(
        self,
        hook: impl Fn(&str) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            read: Some(Box::new(hook)),
            ..self
        }
    }
}

#[async_trait]
impl Store for Hooked {
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        if !self.reversed {
            return self.inner.list(prefix);
        }
        let prefix = prefix.to_owned();
        futures::stream::once(async move {
            let mut all = match super::list_all(&self.inner, &prefix).await {
                Ok(all) => all,
                Err(e) => return futures::stream::iter(vec![Err(e)]),
            };
            all.reverse();
            futures::stream::iter(all.into_iter().map(Ok).collect::<Vec<_>>())
        })
        .flatten()
        .boxed()
    }
    fn lists_ranges(&self) -> bool {
        self.ranges
    }
    async fn folder_hint(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        if !self.ranges {
            return Ok(Vec::new());
        }
        let mut folders: Vec<String> = super::list_all(&self.inner, prefix)
            .await?
            .into_iter()
            .filter_map(|m| {
                let rest = m.key.strip_prefix(prefix)?;
                let (folder, _) = rest.split_once('/')?;
                Some(format!("{prefix}{folder}/"))
            })
            .collect();
        folders.sort();
        folders.dedup();
        Ok(folders)
    }
    async fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        if let Some(hook) = &self.read {
            hook(key).await;
        }
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.inner.put(key, data, mode).await
    }
    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.inner.put_multipart(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }
}
