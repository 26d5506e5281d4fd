//! Adaptive read concurrency: how many samples the build reads at once, found as it goes.
//!
//! The limit starts at [`START`] and moves between [`MIN`] and [`MAX`] (additive increase,
//! multiplicative decrease, as TCP does):
//! * each read that took less than twice the fastest read seen (plus a 50 ms allowance for
//!   large objects) raises the limit: by one per read until the first decrease (slow start:
//!   the limit doubles every round trip), by one per round of `limit` reads after it;
//! * a read that took longer, or a 429 or 503 answer, halves it, once per round: reads that
//!   began before the last decrease say nothing new;
//! * the limit never lets reads outrun Cloud Storage's documented initial read rate of a
//!   bucket (about 5,000 object reads a second): `limit / mean latency × objects per sample`
//!   stays under it.
//!
//! READ_CONCURRENCY pins the limit instead. The limiter is a fair semaphore whose permits are
//! added as the limit rises and forgotten as it falls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub(crate) const MIN: usize = 16;
pub(crate) const START: usize = 64;
pub(crate) const MAX: usize = 256;
/// Cloud Storage's documented initial read rate of a bucket, objects a second.
const BUCKET_READS_PER_SECOND: f64 = 5000.0;
/// Objects a sample reads at most (its raw text and its label, at once).
const OBJECTS_PER_SAMPLE: f64 = 2.0;
/// A read this much slower than the fastest is not congestion (a large object).
const ALLOWANCE: Duration = Duration::from_millis(50);

/// How many reads may run at once.
pub struct Limiter {
    permits: Arc<Semaphore>,
    /// READ_CONCURRENCY, when pinned.
    pinned: Option<usize>,
    state: Option<Mutex<State>>,
}

struct State {
    limit: usize,
    /// Permits to forget as they come back (the limit fell below the reads running).
    debt: usize,
    slow_start: bool,
    /// Good reads since the last increase (after slow start).
    good: usize,
    /// When the limit last fell: reads begun before say nothing new.
    decreased: Option<Instant>,
    fastest: Option<Duration>,
    /// Exponentially weighted mean latency, in seconds.
    mean: Option<f64>,
}

/// A read in flight: give it back with [`Limiter::done`].
pub struct Slot {
    permit: OwnedSemaphorePermit,
    started: Instant,
}

impl Limiter {
    /// `Some(n)`: n reads at once, always (READ_CONCURRENCY). `None`: adaptive.
    pub fn new(pinned: Option<usize>) -> Self {
        match pinned {
            Some(n) => Self {
                permits: Arc::new(Semaphore::new(n.max(1))),
                pinned: Some(n.max(1)),
                state: None,
            },
            None => Self {
                permits: Arc::new(Semaphore::new(START)),
                pinned: None,
                state: Some(Mutex::new(State {
                    limit: START,
                    debt: 0,
                    slow_start: true,
                    good: 0,
                    decreased: None,
                    fastest: None,
                    mean: None,
                })),
            },
        }
    }

    /// The most reads that may ever run at once.
    pub fn ceiling(&self) -> usize {
        self.pinned.unwrap_or(MAX)
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        match (&self.state, self.pinned) {
            (Some(s), _) => s.lock().expect("limiter state").limit,
            (None, pinned) => pinned.unwrap_or(MAX),
        }
    }

    /// Waits for a read's turn.
    pub async fn start(&self) -> Slot {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the limiter is never closed");
        Slot {
            permit,
            started: Instant::now(),
        }
    }

    /// A read ended; `throttled`: the store answered 429 or 503.
    pub fn done(&self, slot: Slot, throttled: bool) {
        let Some(state) = &self.state else {
            return;
        };
        let latency = slot.started.elapsed();
        let mut s = state.lock().expect("limiter state");
        let fastest = *s.fastest.get_or_insert(latency);
        s.fastest = Some(fastest.min(latency));
        let secs = latency.as_secs_f64();
        s.mean = Some(s.mean.map_or(secs, |m| 0.9 * m + 0.1 * secs));
        let congested = throttled || latency > fastest * 2 + ALLOWANCE;
        let mut target = s.limit;
        if congested {
            if s.decreased.is_none_or(|d| slot.started >= d) {
                target = (s.limit / 2).max(MIN);
                s.slow_start = false;
                s.decreased = Some(Instant::now());
                s.good = 0;
            }
        } else if s.slow_start {
            target = s.limit + 1;
        } else {
            s.good += 1;
            if s.good >= s.limit {
                s.good = 0;
                target = s.limit + 1;
            }
        }
        // Little's law: reads a second = reads in flight / mean latency.
        let mean = s.mean.unwrap_or(secs).max(1e-6);
        let rate_cap = (BUCKET_READS_PER_SECOND / OBJECTS_PER_SAMPLE * mean) as usize;
        target = target.min(rate_cap.max(MIN)).clamp(MIN, MAX);
        if target > s.limit {
            let mut add = target - s.limit;
            let repaid = add.min(s.debt);
            s.debt -= repaid;
            add -= repaid;
            self.permits.add_permits(add);
        } else {
            s.debt += s.limit - target;
        }
        s.limit = target;
        if s.debt > 0 {
            s.debt -= 1;
            slot.permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pinned_limit_stays_what_it_is_while_reads_run() {
        // The read-ahead and the build share the limiter: the build asks for the ceiling while
        // the read-ahead's reads hold slots.
        let l = Limiter::new(Some(4));
        let running = [
            l.start().await,
            l.start().await,
            l.start().await,
            l.start().await,
        ];
        assert_eq!((l.ceiling(), l.limit()), (4, 4));
        for slot in running {
            l.done(slot, false);
        }
        assert_eq!((l.ceiling(), l.limit()), (4, 4));
    }

    /// Runs `n` reads one after another, each taking `latency`; the limit after.
    async fn reads(l: &Limiter, n: usize, latency: Duration, throttled: bool) -> usize {
        for _ in 0..n {
            let slot = l.start().await;
            tokio::time::sleep(latency).await;
            l.done(slot, throttled);
        }
        l.limit()
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_grows_while_reads_stay_fast_and_halves_when_they_slow() {
        let l = Limiter::new(None);
        assert_eq!(l.limit(), START);
        // 30 ms reads: the rate cap is 2,500 samples/s × 30 ms = 75.
        assert_eq!(reads(&l, 100, Duration::from_millis(30), false).await, 75);
        // A throttled read halves it (reads in flight together count once: see below).
        assert_eq!(reads(&l, 1, Duration::from_millis(30), true).await, 37);
        assert_eq!(reads(&l, 1, Duration::from_millis(30), true).await, 18);
        // Slow reads bring it down to the floor, never below.
        assert_eq!(
            reads(&l, 2000, Duration::from_millis(500), false).await,
            MIN
        );
        // Slow start is over: growth is one per round.
        let l = Limiter::new(None);
        reads(&l, 1, Duration::from_millis(200), true).await;
        assert_eq!(l.limit(), 32);
        assert_eq!(reads(&l, 32, Duration::from_millis(200), false).await, 33);
        assert_eq!(reads(&l, 300, Duration::from_millis(200), false).await, 41);
    }

    #[tokio::test(start_paused = true)]
    async fn the_permits_follow_the_limit() {
        let l = Limiter::new(None);
        let mut slots = Vec::new();
        for _ in 0..START {
            slots.push(l.start().await);
        }
        assert_eq!(l.permits.available_permits(), 0);
        // Every read in flight comes back throttled: the limit halves once, not once per read,
        // and the permits follow it.
        tokio::time::sleep(Duration::from_millis(30)).await;
        for s in slots {
            l.done(s, true);
        }
        assert_eq!(l.limit(), START / 2);
        assert_eq!(l.permits.available_permits(), START / 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pinned_limit_does_not_move() {
        let l = Limiter::new(Some(8));
        assert_eq!(l.ceiling(), 8);
        reads(&l, 50, Duration::from_secs(2), true).await;
        assert_eq!(l.limit(), 8);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), async {
                let _held: Vec<Slot> = futures::future::join_all((0..8).map(|_| l.start())).await;
                l.start().await
            })
            .await
            .is_err(),
            "a ninth read waits"
        );
    }
}
