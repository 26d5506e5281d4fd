//! A memory bucket whose every call goes through a hook that sees the operation, the key and
//! (for single writes) the bytes, and says whether it passes, fails, hangs or waits for
//! something first: a disk that fills up during a run, storage that freezes after SIGTERM, a
//! listing that stops part-way until a read begins. Each object a listing gives passes the
//! hook too ([`Op::Listed`]), and the bucket can say it is remote, as Cloud Storage does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use autotune::storage::memory::MemoryStore;
use autotune::storage::{GetResult, MultipartUpload, ObjectMeta, PutMode, Store, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// What the bucket was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    /// One object a listing gives (the key is the object's), before it is given.
    Listed,
    Get,
    Head,
    Put,
    Multipart,
    Delete,
}

/// What a call does.
pub(crate) enum Act {
    Pass,
    Fail(StoreError),
    /// Never answers.
    Hang,
    /// Passes once this ends.
    Wait(BoxFuture<'static, ()>),
}

/// A write to `key` failing as on a full local disk (ENOSPC).
pub(crate) fn disk_full(key: &str) -> StoreError {
    StoreError::Io {
        uri: key.to_owned(),
        source: std::io::Error::from_raw_os_error(28),
    }
}

type Hook = dyn Fn(Op, &str, Option<&[u8]>) -> Act + Send + Sync;

pub(crate) struct Hooked {
    inner: MemoryStore,
    hook: Mutex<Arc<Hook>>,
    remote: AtomicBool,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").finish_non_exhaustive()
    }
}

impl Hooked {
    /// A new empty bucket whose calls all pass.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::named(&uuid::Uuid::new_v4().to_string()),
            hook: Mutex::new(Arc::new(|_, _, _| Act::Pass)),
            remote: AtomicBool::new(false),
        })
    }

    /// Says its requests cross a network (so runs read ahead), or not.
    pub(crate) fn set_remote(&self, remote: bool) {
        self.remote.store(remote, Ordering::SeqCst);
    }

    /// Replaces the hook.
    pub(crate) fn set(
        &self,
        hook: impl Fn(Op, &str, Option<&[u8]>) -> Act + Send + Sync + 'static,
    ) {
        *self.hook.lock().unwrap() = Arc::new(hook);
    }

    /// From now on every call hangs.
    pub(crate) fn freeze(&self) {
        self.set(|_, _, _| Act::Hang);
    }

    fn act(&self, op: Op, key: &str, data: Option<&[u8]>) -> Act {
        let hook = self.hook.lock().unwrap().clone();
        hook(op, key, data)
    }

    async fn gate(&self, op: Op, key: &str, data: Option<&[u8]>) -> Result<(), StoreError> {
        match self.act(op, key, data) {
            Act::Pass => Ok(()),
            Act::Fail(e) => Err(e),
            Act::Hang => std::future::pending().await,
            Act::Wait(until) => {
                until.await;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Store for Hooked {
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        let listed = self.inner.list(prefix).then(move |m| async move {
            match m {
                Ok(m) => self.gate(Op::Listed, &m.key, None).await.map(|()| m),
                Err(e) => Err(e),
            }
        });
        match self.act(Op::List, prefix, None) {
            Act::Pass => listed.boxed(),
            Act::Fail(e) => futures::stream::once(async move { Err(e) }).boxed(),
            Act::Hang => futures::stream::pending().boxed(),
            Act::Wait(until) => futures::stream::once(async move {
                until.await;
                listed
            })
            .flatten()
            .boxed(),
        }
    }
    fn remote(&self) -> bool {
        self.remote.load(Ordering::SeqCst)
    }
    async fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        self.gate(Op::Get, key, None).await?;
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.gate(Op::Head, key, None).await?;
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        self.gate(Op::Put, key, Some(&data)).await?;
        self.inner.put(key, data, mode).await
    }
    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        self.gate(Op::Multipart, key, None).await?;
        self.inner.put_multipart(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.gate(Op::Delete, key, None).await?;
        self.inner.delete(key).await
    }
    fn uri(&self, key: &str) -> String {
        self.inner.uri(key)
    }
}
