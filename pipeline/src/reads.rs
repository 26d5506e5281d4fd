//! Reading sample objects: one object whole ([`read_object`]), and the read-ahead that starts
//! reading while the listing is still arriving ([`ReadAhead`]).
//!
//! ```text
//!  listing pages ──▶ inventory ──(new or changed text/label object)──▶ ReadAhead::want
//!                                                                          │ queue
//!                          driver task: budget share, limiter slot, GET ◀──┘
//!                                                                          │ entries
//!  build ── ReadAhead::take(key, generation, gzip) ──▶ the bytes, or None: read it yourself
//! ```
//! The gates need the whole listing before a build may start, but the reads of what changed do
//! not: on a remote store the objects a build will read (absent from the last run's manifest,
//! or a version changed) are read as their listing pages arrive. Nothing is written, so a run
//! that ends at a gate loses only reads; reading waits until enough objects are wanted for gate
//! 3 to pass, so a waiting run reads nothing. What was read ahead is bounded by a byte budget:
//! once it is spent the driver stops taking objects, and the build reads the rest itself. An
//! entry is only used for the version the listing saw: a changed object is read again. Dropping
//! the read-ahead stops its reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::limit::Limiter;
use crate::sample::Category;
use crate::storage::{self, Store, StoreError};

/// Reads one object whole, decompressing every member of a `.gz`, refusing more than `limit`
/// bytes. A truncated or corrupt `.gz` is a read error. `throttled` is set when the store
/// answered 429 or 503. `generation`: the version the listing saw; a different one is an error
/// the read-ahead tells from the others (the build takes whatever is there now).
pub(crate) async fn read_object(
    store: &dyn Store,
    key: &str,
    gzip: bool,
    limit: u64,
    throttled: &AtomicBool,
) -> Result<Bytes, (Category, String)> {
    read_version(store, key, gzip, limit, throttled)
        .await
        .map(|(_, bytes)| bytes)
}

/// [`read_object`], with the generation it read.
async fn read_version(
    store: &dyn Store,
    key: &str,
    gzip: bool,
    limit: u64,
    throttled: &AtomicBool,
) -> Result<(String, Bytes), (Category, String)> {
    let got = store.get(key).await.map_err(|e| match e {
        StoreError::Api {
            status: 429 | 503, ..
        } => {
            throttled.store(true, Ordering::Relaxed);
            (Category::ReadError, e.to_string())
        }
        StoreError::NotFound { .. } => (
            Category::ReadError,
            "object vanished after listing".to_owned(),
        ),
        e @ StoreError::NotARegularFile { .. } => (Category::NotARegularFile, e.to_string()),
        e => (Category::ReadError, e.to_string()),
    })?;
    let too_large = |n: u64| {
        (
            Category::TooLarge,
            format!("{n} bytes is more than MAX_TEXT_BYTES ({limit})"),
        )
    };
    if !gzip && got.size > limit {
        return Err(too_large(got.size));
    }
    let generation = got.generation;
    let reader = storage::into_async_read(got.body);
    // Sized to the object (one byte more, so reaching its end needs no reallocation): a
    // doubling buffer would hold up to twice what the byte budget counts.
    let capacity = if gzip { 0 } else { got.size.min(limit) + 1 };
    let mut buf = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let read = if gzip {
        // A gzip file may hold several members (`cat a.gz b.gz`); `zcat` prints them all.
        let mut decoder =
            async_compression::tokio::bufread::GzipDecoder::new(tokio::io::BufReader::new(reader));
        decoder.multiple_members(true);
        decoder.take(limit + 1).read_to_end(&mut buf).await
    } else {
        reader.take(limit + 1).read_to_end(&mut buf).await
    };
    read.map_err(|e| {
        let what = if gzip { "reading gzip data" } else { "reading" };
        (Category::ReadError, format!("{what}: {e}"))
    })?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    buf.shrink_to_fit();
    Ok((generation, Bytes::from(buf)))
}

/// An object the build will read, as the listing saw it.
#[derive(Debug, Clone)]
pub struct Want {
    pub key: String,
    pub generation: String,
    /// Its listed size.
    pub size: u64,
    pub gzip: bool,
}

/// Deflate's largest expansion: no byte of a `.gz` inflates to more than this many.
pub(crate) const GZIP_MAX_RATIO: u64 = 1032;

/// What reading an object may hold in memory: its size, or for a `.gz` what it may inflate
/// to; never more than `max_text_bytes` (and one), since reads stop there.
pub(crate) fn bytes_needed(size: u64, gzip: bool, max_text_bytes: u64) -> u64 {
    let inflated = if gzip {
        size.saturating_mul(GZIP_MAX_RATIO)
    } else {
        size
    };
    inflated.min(max_text_bytes.saturating_add(1))
}

/// How a read-ahead behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Objects wanted before the first read: about what gate 3 needs (MIN_SAMPLES samples), so
    /// that a run that will wait reads nothing.
    pub start_after: usize,
    /// Bytes held at most: read but not yet taken by the build.
    pub max_bytes: u64,
    pub max_text_bytes: u64,
}

/// One object the driver took or the build declined. Compact: a bucket's every new object
/// may have one while the listing runs.
struct Entry {
    generation: Box<str>,
    gzip: bool,
    state: State,
}

enum State {
    /// Being read; woken when read.
    Reading(Arc<Notify>),
    /// Read: the bytes and their share of the budget, or `None` (failed, or another version
    /// than the listed one): the build reads the object itself.
    Read(Option<(Bytes, OwnedSemaphorePermit)>),
    /// The build came first and reads it itself: the driver leaves it.
    Declined,
}

impl Entry {
    fn declined() -> Self {
        Self {
            generation: "".into(),
            gzip: false,
            state: State::Declined,
        }
    }
}

type Entries = Arc<Mutex<HashMap<Box<str>, Entry>>>;

/// Objects read while the listing is still arriving; see the module docs.
pub struct ReadAhead {
    options: Options,
    entries: Entries,
    queue: Mutex<Queue>,
    driver: tokio::task::AbortHandle,
    /// The build has begun: no object is taken any more (set under the entries' lock).
    stopped: Arc<AtomicBool>,
    /// Objects read ahead, and of those taken by the build.
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    read: std::sync::atomic::AtomicU64,
    used: std::sync::atomic::AtomicU64,
}

/// Wants held back until there are enough of them, then the driver's channel.
struct Queue {
    held: Vec<Want>,
    started: bool,
    tx: mpsc::UnboundedSender<Want>,
}

impl ReadAhead {
    /// A read-ahead on `store`, its reads bounded by `limiter`.
    /// Must be called inside a Tokio runtime: it spawns its driver.
    pub fn new(store: Arc<dyn Store>, limiter: Arc<Limiter>, options: Options) -> Self {
        let entries = Entries::default();
        let counts = Arc::new(Counts::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let driver = tokio::spawn(drive(
            store,
            limiter,
            (entries.clone(), stopped.clone()),
            counts.clone(),
            options,
            rx,
        ))
        .abort_handle();
        Self {
            options,
            entries,
            queue: Mutex::new(Queue {
                held: Vec::new(),
                started: false,
                tx,
            }),
            driver,
            stopped,
            counts,
        }
    }

    /// The build has begun and reads at its own pace: objects not yet taken are left to it,
    /// reads under way finish, and what the build declines is no longer remembered.
    pub fn stop(&self) {
        let _entries = self.entries.lock().expect("read-ahead entries");
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// The build will read this object: read it ahead, once enough are wanted.
    pub fn want(&self, want: Want) {
        let mut q = self.queue.lock().expect("read-ahead queue");
        if q.started {
            let _ = q.tx.send(want);
            return;
        }
        q.held.push(want);
        if q.held.len() >= self.options.start_after {
            q.started = true;
            for w in std::mem::take(&mut q.held) {
                let _ = q.tx.send(w);
            }
        }
    }

    /// The object's bytes as read ahead, if the listing's version of it was: `None` means the
    /// caller reads it itself (and the read-ahead no longer will).
    pub async fn take(&self, key: &str, generation: &str, gzip: bool) -> Option<Bytes> {
        loop {
            let notify = {
                let mut entries = self.entries.lock().expect("read-ahead entries");
                // Declined: remembered while the driver may still take it.
                let stopped = self.stopped.load(Ordering::SeqCst);
                let Some(entry) = entries.get_mut(key) else {
                    if !stopped {
                        entries.insert(key.into(), Entry::declined());
                    }
                    return None;
                };
                if &*entry.generation != generation || entry.gzip != gzip {
                    *entry = Entry::declined();
                    if stopped {
                        entries.remove(key);
                    }
                    return None;
                }
                match &mut entry.state {
                    State::Reading(notify) => notify.clone(),
                    State::Read(read) => {
                        let read = read.take();
                        if stopped {
                            entries.remove(key);
                        } else {
                            *entry = Entry::declined();
                        }
                        let (bytes, _share) = read?;
                        self.counts.used.fetch_add(1, Ordering::Relaxed);
                        return Some(bytes);
                    }
                    State::Declined => return None,
                }
            };
            // The read's `notify_one` leaves a permit if it ended between the lock and here.
            notify.notified().await;
        }
    }

    /// Objects read ahead so far, and how many of them the build took.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.read.load(Ordering::Relaxed),
            self.counts.used.load(Ordering::Relaxed),
        )
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (read, used) = self.counts();
        f.debug_struct("ReadAhead")
            .field("read", &read)
            .field("used", &used)
            .finish_non_exhaustive()
    }
}

/// Takes wanted objects in listing order. Each first takes its share of the budget (so the
/// build, which only waits for entries the driver took, never waits for budget) and a limiter
/// slot, then is entered and read by a task of its own.
async fn drive(
    store: Arc<dyn Store>,
    limiter: Arc<Limiter>,
    (entries, stopped): (Entries, Arc<AtomicBool>),
    counts: Arc<Counts>,
    options: Options,
    mut rx: mpsc::UnboundedReceiver<Want>,
) {
    let budget = Arc::new(Semaphore::new(share(options.max_bytes) as usize));
    // Aborted with the driver.
    let mut tasks = tokio::task::JoinSet::new();
    let taken = |key: &str| {
        entries
            .lock()
            .expect("read-ahead entries")
            .contains_key(key)
    };
    while let Some(want) = rx.recv().await {
        while tasks.try_join_next().is_some() {}
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        if taken(&want.key) {
            continue;
        }
        let need = bytes_needed(want.size, want.gzip, options.max_text_bytes) + OVERHEAD;
        let Ok(share) = budget
            .clone()
            .acquire_many_owned(share(need.min(options.max_bytes)))
            .await
        else {
            return;
        };
        let slot = limiter.start().await;
        let notify = Arc::new(Notify::new());
        {
            let mut entries = entries.lock().expect("read-ahead entries");
            // The build may have declined it, or begun, meanwhile.
            if stopped.load(Ordering::SeqCst) || entries.contains_key(&*want.key) {
                continue;
            }
            entries.insert(
                want.key.as_str().into(),
                Entry {
                    generation: want.generation.as_str().into(),
                    gzip: want.gzip,
                    state: State::Reading(notify.clone()),
                },
            );
        }
        let (store, limiter, counts, entries) = (
            store.clone(),
            limiter.clone(),
            counts.clone(),
            entries.clone(),
        );
        let max_text_bytes = options.max_text_bytes;
        tasks.spawn(async move {
            let throttled = AtomicBool::new(false);
            let read =
                read_version(&*store, &want.key, want.gzip, max_text_bytes, &throttled).await;
            limiter.done(slot, throttled.load(Ordering::Relaxed));
            counts.read.fetch_add(1, Ordering::Relaxed);
            let read = match read {
                Ok((generation, bytes)) if generation == want.generation => Some((bytes, share)),
                _ => None,
            };
            if let Some(entry) = entries
                .lock()
                .expect("read-ahead entries")
                .get_mut(&*want.key)
                && matches!(entry.state, State::Reading(_))
            {
                entry.state = State::Read(read);
            }
            // One taker at most (an object belongs to one sample); a permit stored before it
            // waits wakes it at once.
            notify.notify_one();
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// What an entry costs beside its bytes, about: its key, version and bookkeeping.
const OVERHEAD: u64 = 160;

/// The budget counts bytes; a share larger than a semaphore takes at once is capped.
fn share(bytes: u64) -> u32 {
    u32::try_from(bytes)
        .unwrap_or(u32::MAX)
        .clamp(1, u32::MAX >> 4)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::PutMode;
    use crate::storage::memory::MemoryStore;

    /// A bucket of `n` objects of `size` bytes, and what a listing says of them.
    async fn bucket(n: usize, size: usize) -> (Arc<dyn Store>, Vec<Want>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::named(&uuid::Uuid::new_v4().to_string()));
        let mut wants = Vec::new();
        for i in 0..n {
            let key = format!("raw/s{i}.txt");
            let meta = store
                .put(
                    &key,
                    Bytes::from(vec![b'a' + (i % 26) as u8; size]),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
            wants.push(Want {
                key,
                generation: meta.generation,
                size: meta.size,
                gzip: false,
            });
        }
        (store, wants)
    }

    fn ahead(store: &Arc<dyn Store>, start_after: usize, max_bytes: u64) -> ReadAhead {
        ReadAhead::new(
            store.clone(),
            Arc::new(Limiter::new(None)),
            Options {
                start_after,
                max_bytes,
                max_text_bytes: 1 << 20,
            },
        )
    }

    /// Lets the driver and its reads run (the clock is paused: this is no wait).
    async fn settle() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    /// What the build gets of `w`, in the version listed.
    async fn take(a: &ReadAhead, w: &Want) -> Option<Bytes> {
        a.take(&w.key, &w.generation, false).await
    }

    #[tokio::test(start_paused = true)]
    async fn wanted_objects_are_read_once_and_taken_in_any_order() {
        let (store, wants) = bucket(3, 100).await;
        let a = ahead(&store, 1, 1 << 20);
        for w in &wants {
            a.want(w.clone());
        }
        settle().await;
        assert_eq!(a.counts(), (3, 0));
        for w in wants.iter().rev() {
            let got = take(&a, w).await.unwrap();
            assert_eq!(got.len(), 100);
        }
        assert_eq!(a.counts(), (3, 3));
        // Taken once: a second take reads nothing ahead.
        assert!(take(&a, &wants[0]).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_read_before_enough_objects_are_wanted() {
        let (store, wants) = bucket(3, 10).await;
        let a = ahead(&store, 4, 1 << 20);
        for w in &wants {
            a.want(w.clone());
        }
        settle().await;
        assert_eq!(a.counts(), (0, 0));
        assert!(take(&a, &wants[0]).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_listed_version_is_used() {
        let (store, wants) = bucket(2, 10).await;
        let a = ahead(&store, 2, 1 << 20);
        // Replaced after the listing, before the read.
        store
            .put(
                &wants[0].key,
                Bytes::from_static(b"newer"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        a.want(wants[0].clone());
        a.want(wants[1].clone());
        settle().await;
        assert_eq!(a.counts().0, 2);
        assert!(take(&a, &wants[0]).await.is_none());
        // Asked for another version, or as gzip, than the one read: not used either.
        assert!(a.take(&wants[1].key, "another", false).await.is_none());
        assert_eq!(a.counts().1, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_what_is_held_and_the_build_reads_the_rest() {
        // Objects of 2 KiB, a budget for two of them.
        let (store, wants) = bucket(4, 2048).await;
        let a = ahead(&store, 1, 2 * (2048 + OVERHEAD));
        for w in &wants {
            a.want(w.clone());
        }
        settle().await;
        assert_eq!(a.counts(), (2, 0));
        // The build declines the fourth (reads it itself): the driver leaves it.
        assert!(take(&a, &wants[3]).await.is_none());
        assert!(take(&a, &wants[0]).await.is_some());
        settle().await;
        assert_eq!(
            a.counts(),
            (3, 1),
            "the share given back let the third be read"
        );
        assert!(take(&a, &wants[2]).await.is_some());
        settle().await;
        assert_eq!(a.counts(), (3, 2), "the declined object is not read");
    }

    #[tokio::test(start_paused = true)]
    async fn once_stopped_nothing_more_is_read_and_nothing_declined_is_kept() {
        // A budget for one object: the second and third wait for it.
        let (store, wants) = bucket(3, 2048).await;
        let a = ahead(&store, 1, 2048 + OVERHEAD);
        for w in &wants {
            a.want(w.clone());
        }
        settle().await;
        assert_eq!(a.counts(), (1, 0));
        a.stop();
        assert!(take(&a, &wants[2]).await.is_none());
        // Taking the first gives its share back; stopped, the driver reads nothing more.
        assert!(take(&a, &wants[0]).await.is_some());
        settle().await;
        assert_eq!(a.counts(), (1, 1));
        assert!(a.entries.lock().unwrap().is_empty(), "nothing remembered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_build_waits_for_a_read_in_flight_rather_than_reading_twice() {
        let (store, wants) = bucket(1, 10).await;
        let a = ahead(&store, 1, 1 << 20);
        a.want(wants[0].clone());
        // Let the driver enter it; the take then awaits that read.
        tokio::task::yield_now().await;
        let got = take(&a, &wants[0]).await;
        assert_eq!(got.as_deref(), Some(&[b'a'; 10][..]));
        assert_eq!(a.counts(), (1, 1));
    }
}
