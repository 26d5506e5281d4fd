//! Gate 1: the run lock, a lease object in the bucket.
//!
//! The seed checked for a lock file and then created it, so two runs could both train, and a
//! killed run left its lock forever. Here the lock is a lease with an expiry:
//! * acquired by a create-only put, so exactly one contender wins;
//! * renewed by compare-and-swap on its generation by a heartbeat while the run lives, so a
//!   run that lost its lease notices;
//! * taken over by compare-and-swap once expired (its holder was killed), again with exactly
//!   one winner;
//! * released by a compare-and-swap overwrite to a `released` state rather than a conditional
//!   delete, whose precondition the emulator cannot check (STORAGE.md).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::storage::{self, PutMode, Store, StoreError};

pub const LOCK_FILE: &str = "training.lock.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Held,
    Released,
}

/// The lock object's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub state: LeaseState,
    pub run_id: String,
    pub owner: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    /// A tuning job submitted under this lease and not yet finalised: whoever takes the lease
    /// next adopts it instead of starting another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning_job: Option<String>,
    /// The run record to finalise with the adopted job's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_record: Option<String>,
    /// LEASE_DURATION of the holder: no renewal extends the lease further than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    /// How long ago the lock object was last written, by the storage server's clock, when the
    /// store can tell (GCS); not stored. With it, liveness needs no clock of ours.
    #[serde(skip)]
    pub server_age: Option<Duration>,
    /// How long ago a local lock file was last written (its modification time); not stored.
    /// It decides only for a damaged lease, whose own times cannot be trusted.
    #[serde(skip)]
    pub file_age: Option<Duration>,
}

/// The longest a lease may last (LEASE_DURATION's bound); leases that do not record their
/// duration are held to it.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Clock difference tolerated between runs before a lease counts as damaged.
const SKEW: chrono::Duration = chrono::Duration::minutes(1);

impl LeaseRecord {
    /// The lease's own duration.
    fn duration(&self) -> chrono::Duration {
        let secs = self
            .duration_seconds
            .unwrap_or(MAX_DURATION.as_secs())
            .min(MAX_DURATION.as_secs());
        chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// When the holder last wrote the lease.
    fn touched_at(&self) -> DateTime<Utc> {
        self.renewed_at
            .unwrap_or(self.acquired_at)
            .max(self.acquired_at)
    }

    /// Why a held lease cannot be trusted: it claims more time left than its own duration, or
    /// to have been taken or renewed in the future (hand-edited, or written by a clock far
    /// ahead). `None` for a sound lease.
    pub fn damage(&self, now: DateTime<Utc>) -> Option<String> {
        if self.state != LeaseState::Held {
            return None;
        }
        let d = self.duration();
        if self.touched_at() - now > SKEW {
            return Some(format!(
                "it claims to have been taken or renewed at {}, in the future",
                self.touched_at()
            ));
        }
        (self.expires_at - now > d + SKEW).then(|| {
            format!(
                "it claims to hold the lock until {}, longer than its duration ({}s) from now",
                self.expires_at,
                d.num_seconds()
            )
        })
    }

    /// Held and not expired. A damaged lease counts as live only until it has gone unrenewed
    /// for its own duration; then it is taken over like an expired one.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        if self.state != LeaseState::Held {
            return false;
        }
        // By the server's clock: renewed within its duration (plus a second, the precision of
        // the server's times). A run whose own clock is off cannot misjudge this.
        if let Some(age) = self.server_age {
            let duration = self.duration().to_std().unwrap_or(MAX_DURATION);
            return age < duration + Duration::from_secs(1);
        }
        if self.damage(now).is_none() {
            return self.expires_at > now;
        }
        // Damaged: how long it has gone unrenewed, by the file's modification time where the
        // store tells it (a local folder), else by when it says it was renewed; a lease that
        // claims a future time and whose age nobody can tell is unrenewed as far as anyone
        // knows.
        let unrenewed = match self.file_age {
            Some(age) => chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX),
            None if self.touched_at() - now > SKEW => return false,
            None => now - self.touched_at(),
        };
        unrenewed < self.duration()
    }

    /// A job left for the next holder to adopt, with the record to finalise.
    pub fn pending_job(&self) -> Option<(&str, Option<&str>)> {
        self.tuning_job
            .as_deref()
            .map(|j| (j, self.run_record.as_deref()))
    }
}

/// What the lock object says right now.
#[derive(Debug, Clone)]
pub enum Status {
    /// No lock object, or a released one. A released lease may hand over a pending job.
    Free(Option<LeaseRecord>),
    /// Held and not expired.
    Live(LeaseRecord),
    /// Held but expired: its holder died without releasing it.
    Expired(LeaseRecord),
    /// The object exists but is not a lease; an operator must look (`autotune unlock --force`).
    Unreadable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Not a `#[source]`: the message already includes it, and would repeat it in chains.
    #[error("run lock: {0}")]
    Store(StoreError),
    #[error(
        "run lock {uri} is unreadable ({reason}); inspect it and run `autotune unlock --force`"
    )]
    Unreadable { uri: String, reason: String },
}

impl From<StoreError> for LeaseError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Who holds the lease: the Cloud Run execution and task when there is one, else host and pid.
pub fn owner() -> String {
    match (
        std::env::var("CLOUD_RUN_EXECUTION"),
        std::env::var("CLOUD_RUN_TASK_INDEX"),
    ) {
        (Ok(e), Ok(t)) => format!("cloud-run:{e}/task-{t}"),
        (Ok(e), Err(_)) => format!("cloud-run:{e}"),
        _ => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "localhost".to_owned());
            format!("{host}:{}", std::process::id())
        }
    }
}

/// Reads the lock object and its generation.
async fn read(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(Result<LeaseRecord, String>, String)>, StoreError> {
    match store.get(key).await {
        Ok(got) => {
            let generation = got.generation.clone();
            // A remote store's age is its server's (authoritative); a local file's is its
            // modification time, by the same clock as ours.
            let (server_age, file_age) = if store.remote() {
                (got.age, None)
            } else {
                (None, got.age)
            };
            let uri = store.uri(key);
            let record = match got.bytes_limited(&uri, 64 * 1024).await {
                Ok(body) => serde_json::from_slice::<LeaseRecord>(&body)
                    .map(|r| LeaseRecord {
                        server_age,
                        file_age,
                        ..r
                    })
                    .map_err(|e| e.to_string()),
                // A lock is a few hundred bytes: anything larger is damage, not a lease.
                Err(StoreError::TooLarge { size, limit, .. }) => {
                    Err(format!("{size} bytes, more than a lease can be ({limit})"))
                }
                Err(e) => return Err(e),
            };
            Ok(Some((record, generation)))
        }
        Err(e) if e.is_not_found() => Ok(None),
        // A FIFO, link or device where the lock should be: damage, which `--force` removes.
        Err(StoreError::NotARegularFile { reason, .. }) => Ok(Some((Err(reason), String::new()))),
        Err(e) => Err(e),
    }
}

/// Gate 1 without writing: what a run would find.
pub async fn status(store: &dyn Store, key: &str) -> Result<Status, StoreError> {
    Ok(look(store, key).await?.0)
}

/// The lock object as a look found it: [`Lease::acquire_after`] writes on it without reading
/// it again.
#[derive(Debug, Clone)]
pub struct Seen(Option<(Result<LeaseRecord, String>, String)>);

/// [`status`], and the lock object it was told from.
pub async fn look(store: &dyn Store, key: &str) -> Result<(Status, Seen), StoreError> {
    let seen = read(store, key).await?;
    let status = match &seen {
        None => Status::Free(None),
        Some((Err(reason), _)) => Status::Unreadable(reason.clone()),
        Some((Ok(r), _)) if r.state == LeaseState::Released => Status::Free(Some(r.clone())),
        Some((Ok(r), _)) if r.is_live(Utc::now()) => Status::Live(r.clone()),
        Some((Ok(r), _)) => Status::Expired(r.clone()),
    };
    Ok((status, Seen(seen)))
}

/// The outcome of trying to take the lock.
#[derive(Debug)]
pub enum Acquired {
    Won(Lease),
    /// Someone else holds it (or won the race for it).
    Held(LeaseRecord),
}

/// A held lease. Release it with [`Lease::release`]; a lease that is dropped is left to
/// expire, which is what a killed run does too.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn Store>,
    key: String,
    ttl: Duration,
    current: Arc<Mutex<(LeaseRecord, String)>>,
    lost: CancellationToken,
    /// Why the lease was lost, set before `lost` fires.
    why: Arc<std::sync::Mutex<Option<Lost>>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

/// Why a run no longer holds its lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// Another run took the lease over (its generation changed, or it was deleted).
    #[error("the run lock was lost to another run ({0}); stopped")]
    TakenOver(String),
    /// Renewals failed until the lease expired: the storage, not another run, is the cause.
    #[error("the run lock could not be renewed before it expired: {0}; stopped")]
    Unrenewable(String),
}

fn record(run_id: &str, owner: &str, ttl: Duration) -> LeaseRecord {
    let now = Utc::now();
    LeaseRecord {
        state: LeaseState::Held,
        run_id: run_id.to_owned(),
        owner: owner.to_owned(),
        acquired_at: now,
        expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        duration_seconds: Some(ttl.as_secs()),
        server_age: None,
        file_age: None,
        renewed_at: None,
        released_at: None,
        tuning_job: None,
        run_record: None,
    }
}

fn body(r: &LeaseRecord) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(r).expect("a lease serialises"))
}

impl Lease {
    /// Takes the lock: create-only if absent, compare-and-swap if released or expired.
    pub async fn acquire(
        store: Arc<dyn Store>,
        key: &str,
        run_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Acquired, LeaseError> {
        let seen = read(&*store, key).await?;
        let mut mine = record(run_id, owner, ttl);
        let mode = match to_take(&*store, key, seen, &mut mine)? {
            Ok(mode) => mode,
            Err(held) => return Ok(held),
        };
        match store.put(key, body(&mine), mode).await {
            Ok(meta) => Ok(Acquired::Won(Lease::won(
                store,
                key,
                ttl,
                mine,
                meta.generation,
            ))),
            // Lost the race: report whoever won.
            Err(StoreError::AlreadyExists { .. } | StoreError::Precondition { .. }) => {
                match read(&*store, key).await? {
                    Some((Ok(winner), _)) => Ok(Acquired::Held(winner)),
                    _ => Ok(Acquired::Held(mine)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Lease::acquire`] on the lock object as `seen` by an earlier look ([`look`]), without
    /// reading it again: the create-only put or compare-and-swap it called for. If the object
    /// changed since, that write fails and the lock is taken as [`Lease::acquire`] does, from
    /// a fresh read; one round trip less on a remote store when it did not.
    pub async fn acquire_after(
        seen: Seen,
        store: Arc<dyn Store>,
        key: &str,
        run_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Acquired, LeaseError> {
        let free = match &seen.0 {
            None => true,
            Some((Ok(theirs), _)) => !theirs.is_live(Utc::now()),
            Some((Err(_), _)) => false,
        };
        if free {
            let mut mine = record(run_id, owner, ttl);
            if let Ok(mode) = to_take(&*store, key, seen.0, &mut mine)? {
                match store.put(key, body(&mine), mode).await {
                    Ok(meta) => {
                        return Ok(Acquired::Won(Lease::won(
                            store,
                            key,
                            ttl,
                            mine,
                            meta.generation,
                        )));
                    }
                    // Changed since the look: read it again.
                    Err(StoreError::AlreadyExists { .. } | StoreError::Precondition { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Self::acquire(store, key, run_id, owner, ttl).await
    }

    fn won(
        store: Arc<dyn Store>,
        key: &str,
        ttl: Duration,
        mine: LeaseRecord,
        generation: String,
    ) -> Self {
        Lease {
            store,
            key: key.to_owned(),
            ttl,
            current: Arc::new(Mutex::new((mine, generation))),
            lost: CancellationToken::new(),
            why: Arc::default(),
            heartbeat: None,
        }
    }

    /// The generation of the lock object as this run last wrote it.
    pub async fn generation(&self) -> String {
        self.current.lock().await.1.clone()
    }

    pub async fn record(&self) -> LeaseRecord {
        self.current.lock().await.0.clone()
    }

    /// Extends the lease by its duration, by compare-and-swap.
    pub async fn renew(&self) -> Result<(), StoreError> {
        renew(&*self.store, &self.key, self.ttl, &self.current).await
    }

    /// Starts renewing every third of the lease duration. If the lease is lost (someone took it
    /// over after it expired), [`Lease::lost`] fires.
    pub fn start_heartbeat(&mut self) {
        let (store, key, ttl) = (self.store.clone(), self.key.clone(), self.ttl);
        let (current, lost) = (self.current.clone(), self.lost.clone());
        let why = self.why.clone();
        let give_up = move |reason: Lost| {
            *why.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
            lost.cancel();
        };
        self.heartbeat = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match renew(&*store, &key, ttl, &current).await {
                    Ok(()) => tracing::debug!("run lock renewed"),
                    Err(e @ (StoreError::Precondition { .. } | StoreError::NotFound { .. })) => {
                        tracing::error!(error = %e, "run lock lost: another run took it over");
                        give_up(Lost::TakenOver(e.to_string()));
                        return;
                    }
                    Err(e) => {
                        let expired = current.lock().await.0.expires_at <= Utc::now();
                        tracing::warn!(error = %e, "run lock renewal failed; retrying");
                        if expired {
                            give_up(Lost::Unrenewable(e.to_string()));
                            return;
                        }
                    }
                }
            }
        }));
    }

    /// Resolves, with the reason, when the heartbeat finds the lease taken over or cannot
    /// renew it before it expires.
    pub fn lost(&self) -> impl Future<Output = Lost> + Send + 'static {
        let (token, why) = (self.lost.clone(), self.why.clone());
        async move {
            token.cancelled().await;
            why.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| Lost::TakenOver("no reason recorded".to_owned()))
        }
    }

    /// Records a submitted tuning job in the lease, so that if this run dies the next one
    /// adopts the job rather than starting a second.
    pub async fn attach_job(&self, job: &str, run_record: &str) -> Result<(), StoreError> {
        self.update(|r| {
            r.tuning_job = Some(job.to_owned());
            r.run_record = Some(run_record.to_owned());
        })
        .await
    }

    async fn update(&self, change: impl FnOnce(&mut LeaseRecord)) -> Result<(), StoreError> {
        swap(&*self.store, &self.key, &self.current, change).await
    }

    /// Frees the lock for the next run; the job it carried, if any, is finished.
    pub async fn release(self) -> Result<(), StoreError> {
        self.free(false).await
    }

    /// Frees the lock but leaves its tuning job for the next run to adopt (SIGTERM, --detach).
    pub async fn hand_over(self) -> Result<(), StoreError> {
        self.free(true).await
    }

    async fn free(mut self, keep_job: bool) -> Result<(), StoreError> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        self.update(|r| {
            r.state = LeaseState::Released;
            r.released_at = Some(Utc::now());
            if !keep_job {
                r.tuning_job = None;
                r.run_record = None;
            }
        })
        .await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

async fn renew(
    store: &dyn Store,
    key: &str,
    ttl: Duration,
    current: &Mutex<(LeaseRecord, String)>,
) -> Result<(), StoreError> {
    swap(store, key, current, |r| {
        let now = Utc::now();
        r.renewed_at = Some(now);
        r.expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    })
    .await
}

/// Every change of a held lease: compare-and-swap on the generation this run last wrote, so a
/// lease someone else took over is never overwritten.
async fn swap(
    store: &dyn Store,
    key: &str,
    current: &Mutex<(LeaseRecord, String)>,
    change: impl FnOnce(&mut LeaseRecord),
) -> Result<(), StoreError> {
    let mut cur = current.lock().await;
    let mut next = cur.0.clone();
    change(&mut next);
    let meta = store
        .put(key, body(&next), PutMode::Update(cur.1.clone()))
        .await?;
    *cur = (next, meta.generation);
    Ok(())
}

/// How to take the lock object `seen` (`None`: absent): `Ok` the write that takes it (carrying
/// over a job the previous holder left), `Err` the live lease that holds it.
fn to_take(
    store: &dyn Store,
    key: &str,
    seen: Option<(Result<LeaseRecord, String>, String)>,
    mine: &mut LeaseRecord,
) -> Result<Result<PutMode, Acquired>, LeaseError> {
    Ok(match seen {
        None => Ok(PutMode::Create),
        Some((Err(reason), _)) => {
            return Err(LeaseError::Unreadable {
                uri: store.uri(key),
                reason,
            });
        }
        Some((Ok(theirs), _)) if theirs.is_live(Utc::now()) => Err(Acquired::Held(theirs)),
        Some((Ok(theirs), generation)) => {
            if theirs.state == LeaseState::Held {
                tracing::warn!(
                    run_id = %theirs.run_id,
                    owner = %theirs.owner,
                    expired_at = %theirs.expires_at,
                    "taking over an expired run lock (its run died without releasing it)"
                );
            }
            // A job the previous holder left running passes on with the lease.
            mine.tuning_job = theirs.tuning_job;
            mine.run_record = theirs.run_record;
            Ok(PutMode::Update(generation))
        }
    })
}

/// `autotune unlock`: frees the lock. A live lease is refused unless `force`. A holder that
/// renews meanwhile makes the compare-and-swap fail: the lock is read again and the release
/// retried, a few times.
pub async fn unlock(
    store: &dyn Store,
    key: &str,
    force: bool,
) -> Result<UnlockOutcome, LeaseError> {
    let mut tries = 0;
    loop {
        match unlock_once(store, key, force).await {
            Err(LeaseError::Store(StoreError::Precondition { .. })) if tries < 5 => tries += 1,
            other => return other,
        }
    }
}

async fn unlock_once(
    store: &dyn Store,
    key: &str,
    force: bool,
) -> Result<UnlockOutcome, LeaseError> {
    let Some((record, generation)) = read(store, key).await? else {
        return Ok(UnlockOutcome::NotLocked);
    };
    let mut record = match record {
        Ok(r) if r.state == LeaseState::Released => return Ok(UnlockOutcome::NotLocked),
        Ok(r) if r.is_live(Utc::now()) && !force => return Ok(UnlockOutcome::Refused(r)),
        Ok(r) => r,
        Err(reason) if !force => {
            return Ok(UnlockOutcome::Unreadable {
                uri: store.uri(key),
                reason,
            });
        }
        Err(_) => {
            // Replace the unreadable object wholesale.
            store.delete(key).await?;
            return Ok(UnlockOutcome::Unlocked(None));
        }
    };
    record.state = LeaseState::Released;
    record.released_at = Some(Utc::now());
    store
        .put(key, body(&record), PutMode::Update(generation))
        .await?;
    Ok(UnlockOutcome::Unlocked(Some(record)))
}

#[derive(Debug)]
pub enum UnlockOutcome {
    NotLocked,
    /// The lock object is not a lease; `--force` deletes it.
    Unreadable {
        uri: String,
        reason: String,
    },
    Refused(LeaseRecord),
    Unlocked(Option<LeaseRecord>),
}

/// Makes the lease under `key` expire now, every other field kept (the job it names too), as
/// if its holder had been killed and its time had run out: what a test of the run after a
/// killed one needs without waiting out LEASE_DURATION. A live holder loses the lease at its
/// next renewal (the lock object's generation changed). Nothing in the job calls it; a lock
/// that is not a lease is an error.
pub async fn expire(store: &dyn Store, key: &str) -> Result<(), LeaseError> {
    let Some((record, _)) = read(store, key).await? else {
        return Ok(());
    };
    let mut record = record.map_err(|reason| LeaseError::Unreadable {
        uri: store.uri(key),
        reason,
    })?;
    record.expires_at = Utc::now() - chrono::Duration::seconds(1);
    store.put(key, body(&record), PutMode::Overwrite).await?;
    Ok(())
}

/// The lock key for a metadata folder.
pub fn lock_key(meta_folder: &str) -> String {
    storage::join(meta_folder, LOCK_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn store() -> Arc<dyn Store> {
        Arc::new(MemoryStore::named(&uuid::Uuid::new_v4().to_string()))
    }

    #[tokio::test]
    async fn a_lock_taken_on_an_earlier_look_is_read_again_when_it_changed_since() {
        let s = store();
        let ttl = Duration::from_secs(60);
        let take = |seen: Seen, run: &'static str| {
            Lease::acquire_after(seen, s.clone(), "m/lock", run, "o", ttl)
        };
        // Absent when looked at, taken meanwhile: the create-only put fails, the holder is told.
        let (_, absent) = look(&*s, "m/lock").await.unwrap();
        let Acquired::Won(first) = take(absent.clone(), "a").await.unwrap() else {
            panic!("an absent lock is taken")
        };
        assert!(
            matches!(take(absent.clone(), "b").await.unwrap(), Acquired::Held(r) if r.run_id == "a")
        );
        // Released since the look: read again and taken.
        first.release().await.unwrap();
        let Acquired::Won(second) = take(absent, "c").await.unwrap() else {
            panic!("a lock released since the look is taken")
        };
        // Looked at while released, released again by another holder since: read again, taken.
        second.release().await.unwrap();
        let (_, released) = look(&*s, "m/lock").await.unwrap();
        let Acquired::Won(third) = take(released.clone(), "d").await.unwrap() else {
            panic!("a released lock is taken")
        };
        third.release().await.unwrap();
        assert!(matches!(
            take(released, "e").await.unwrap(),
            Acquired::Won(_)
        ));
        // Looked at while live: never written over.
        let (_, live) = look(&*s, "m/lock").await.unwrap();
        assert!(matches!(take(live, "f").await.unwrap(), Acquired::Held(r) if r.run_id == "e"));
    }

    #[tokio::test]
    async fn one_winner_then_release_frees() {
        let s = store();
        let a = Lease::acquire(s.clone(), "m/lock", "a", "o", Duration::from_secs(60))
            .await
            .unwrap();
        let Acquired::Won(a) = a else {
            panic!("first acquire wins")
        };
        let b = Lease::acquire(s.clone(), "m/lock", "b", "o", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(&b, Acquired::Held(r) if r.run_id == "a"), "{b:?}");
        assert!(matches!(
            status(&*s, "m/lock").await.unwrap(),
            Status::Live(_)
        ));
        a.release().await.unwrap();
        assert!(matches!(
            status(&*s, "m/lock").await.unwrap(),
            Status::Free(Some(_))
        ));
        let c = Lease::acquire(s.clone(), "m/lock", "c", "o", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(c, Acquired::Won(_)), "a released lock is free");
    }

    #[tokio::test]
    async fn expired_lease_is_taken_over_once() {
        let s = store();
        let Acquired::Won(dead) =
            Lease::acquire(s.clone(), "lock", "dead", "o", Duration::from_secs(1))
                .await
                .unwrap()
        else {
            panic!()
        };
        drop(dead); // killed: never released
        // Its time runs out (the lease says when, by the clock of whoever reads it).
        expire(&*s, "lock").await.unwrap();
        assert!(matches!(
            status(&*s, "lock").await.unwrap(),
            Status::Expired(_)
        ));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    Lease::acquire(s, "lock", &format!("r{i}"), "o", Duration::from_secs(60)).await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            if matches!(t.await.unwrap().unwrap(), Acquired::Won(_)) {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_renews_and_detects_takeover() {
        let s = store();
        let Acquired::Won(mut lease) =
            Lease::acquire(s.clone(), "lock", "me", "o", Duration::from_secs(30))
                .await
                .unwrap()
        else {
            panic!()
        };
        let g0 = lease.generation().await;
        lease.start_heartbeat();
        tokio::time::sleep(Duration::from_secs(11)).await;
        let g1 = lease.generation().await;
        assert_ne!(g0, g1, "the heartbeat renewed the lease");
        assert!(lease.record().await.renewed_at.is_some());
        // Someone overwrites the lock behind our back: the next renewal must notice.
        s.put("lock", Bytes::from("{}"), PutMode::Overwrite)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(11), lease.lost())
            .await
            .expect("lease loss detected within one heartbeat");
    }

    #[tokio::test]
    async fn a_handed_over_job_passes_to_the_next_holder() {
        let s = store();
        let Acquired::Won(a) = Lease::acquire(s.clone(), "lock", "a", "o", Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!()
        };
        a.attach_job("projects/p/locations/l/tuningJobs/1", "m/rec.json")
            .await
            .unwrap();
        a.hand_over().await.unwrap();
        let Status::Free(Some(r)) = status(&*s, "lock").await.unwrap() else {
            panic!()
        };
        assert_eq!(
            r.pending_job(),
            Some(("projects/p/locations/l/tuningJobs/1", Some("m/rec.json")))
        );
        let Acquired::Won(b) = Lease::acquire(s.clone(), "lock", "b", "o", Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            b.record().await.tuning_job.as_deref(),
            Some("projects/p/locations/l/tuningJobs/1")
        );
        b.release().await.unwrap();
        let Status::Free(Some(r)) = status(&*s, "lock").await.unwrap() else {
            panic!()
        };
        assert_eq!(r.pending_job(), None, "a released job is finished");
    }

    #[tokio::test]
    async fn unlock_refuses_live_lease_without_force() {
        let s = store();
        let Acquired::Won(_held) =
            Lease::acquire(s.clone(), "lock", "me", "o", Duration::from_secs(60))
                .await
                .unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            unlock(&*s, "lock", false).await.unwrap(),
            UnlockOutcome::Refused(_)
        ));
        assert!(matches!(
            unlock(&*s, "lock", true).await.unwrap(),
            UnlockOutcome::Unlocked(_)
        ));
        assert!(matches!(
            status(&*s, "lock").await.unwrap(),
            Status::Free(_)
        ));
        assert!(matches!(
            unlock(&*s, "lock", false).await.unwrap(),
            UnlockOutcome::NotLocked
        ));
        s.put("lock", Bytes::from("garbage"), PutMode::Overwrite)
            .await
            .unwrap();
        assert!(matches!(
            unlock(&*s, "lock", false).await.unwrap(),
            UnlockOutcome::Unreadable { .. }
        ));
        let err = Lease::acquire(s.clone(), "lock", "x", "o", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unlock --force"), "{err}");
    }

    /// A lease that claims to have been taken in 2099, as a hand edit or a clock far ahead
    /// writes it.
    fn from_the_future(duration: u64) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "state": "held", "run_id": "future", "owner": "elsewhere",
                "acquired_at": "2099-01-01T00:00:00Z",
                "expires_at": "2099-01-01T00:05:00Z",
                "duration_seconds": duration,
            }))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_lease_from_the_future_is_damaged_and_taken_over_once_unrenewed_on_a_local_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Store> =
            Arc::new(crate::storage::local::LocalStore::new(dir.path().to_str().unwrap()).unwrap());
        s.put("m/lock", from_the_future(60), PutMode::Overwrite)
            .await
            .unwrap();
        // Just written: live (its writer may be alive), but reported as damaged.
        let Status::Live(r) = status(&*s, "m/lock").await.unwrap() else {
            panic!("a lease written a moment ago is live")
        };
        let damage = r
            .damage(Utc::now())
            .expect("a lease from the future is damaged");
        assert!(damage.contains("2099"), "{damage}");
        // Unrenewed for its duration (the file untouched for two minutes): taken over.
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("m/lock"))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        assert!(
            matches!(status(&*s, "m/lock").await.unwrap(), Status::Expired(_)),
            "unrenewed for its duration"
        );
        let taken = Lease::acquire(s.clone(), "m/lock", "now", "o", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(matches!(taken, Acquired::Won(_)), "{taken:?}");
    }

    #[tokio::test]
    async fn a_lease_from_the_future_is_damaged_on_every_backend() {
        // Where the store cannot tell an object's age (memory), nothing in the lease can be
        // trusted: it is taken over.
        let s = store();
        s.put("lock", from_the_future(60), PutMode::Overwrite)
            .await
            .unwrap();
        assert!(
            matches!(status(&*s, "lock").await.unwrap(), Status::Expired(_)),
            "a lease from the future, of unknown age"
        );
    }
}
