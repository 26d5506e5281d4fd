//! The quiet stage: before a build takes the inventory it trains on, wait until uploads have
//! stopped, so that a bulk upload is trained as one batch rather than from its first few files.
//!
//! ```text
//!  list raw + label folders ─▶ digest ─▶ same as last poll for QUIET_PERIOD? ── yes ─▶ settled
//!        ▲                                      │ no (or changed)
//!        └──── sleep a poll interval ◀──────────┘        MAX_QUIET_WAIT reached ─▶ max_wait
//! ```
//!
//! A poll is one listing of the folders (keys, generations and sizes only, never contents),
//! reduced to an order-independent digest, so it costs what gate 2's listing costs and keeps
//! nothing in memory. The stage only sees changes between its own polls: it waits at least
//! QUIET_PERIOD even for data that arrived long ago. It runs only when gate 3 already passes on
//! a first listing, so an execution with nothing to do never waits. Time is `tokio::time`, so
//! tests run it on a paused clock; the caller races it against the shutdown future.

use std::time::Duration;

use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::inventory::Rules;
use crate::sample::Sample;
use crate::storage::{Store, StoreError};

use super::Job;

/// Longest pause between two polls, whatever QUIET_PERIOD is.
const MAX_POLL: Duration = Duration::from_secs(10);
/// Shortest pause between two polls.
const MIN_POLL: Duration = Duration::from_millis(100);

/// Why the quiet stage stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietEnd {
    /// QUIET_PERIOD is 0: no wait.
    Off,
    /// Nothing was added or changed for QUIET_PERIOD.
    Settled,
    /// Objects kept changing until MAX_QUIET_WAIT: the run builds from what is there.
    MaxWait,
}

impl QuietEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Settled => "settled",
            Self::MaxWait => "max_wait",
        }
    }

    /// The variant of a name [`as_str`](Self::as_str) gave (a run record's `quiet_end`).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Off, Self::Settled, Self::MaxWait]
            .into_iter()
            .find(|e| e.as_str() == name)
    }
}

/// What the quiet stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quiet {
    /// How long it waited.
    pub waited: Duration,
    pub end: QuietEnd,
    /// Listings made.
    pub polls: u32,
    /// Polls that saw the folders changed since the previous one.
    pub changes: u32,
    /// The reason, as a sentence, for the record and the logs.
    pub reason: String,
}

impl Quiet {
    /// The waited time in seconds, to the millisecond.
    pub fn waited_seconds(&self) -> f64 {
        (self.waited.as_millis() as f64) / 1000.0
    }
}

/// How often the folders are listed while waiting for QUIET_PERIOD: four times a period, within
/// [`MIN_POLL`] and [`MAX_POLL`].
pub(super) fn poll_interval(quiet_period: Duration) -> Duration {
    (quiet_period / 4).clamp(MIN_POLL, MAX_POLL)
}

/// An order-independent digest of the inputs under the raw and label folders: their count and
/// the wrapping sum of a hash of each (key, generation, size). Outputs are left out, so the
/// job's own writes never count as uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ListingDigest {
    objects: u64,
    sum: u128,
}

impl ListingDigest {
    /// Lists the folders once.
    pub(crate) async fn take(store: &dyn Store, rules: &Rules) -> Result<Self, StoreError> {
        let mut d = Self::default();
        for prefix in rules.layout().list_prefixes() {
            let mut listing = store.list(prefix);
            loop {
                let meta = match listing.try_next().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    // The inventory reports such names; here they only must not stop the wait.
                    Err(StoreError::InvalidKey { key, .. }) => {
                        d.add(&key, "", 0);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if matches!(
                    rules.layout().classify(&meta.key),
                    autotune_layout::Class::Output(_)
                ) {
                    continue;
                }
                d.add(&meta.key, &meta.generation, meta.size);
            }
        }
        Ok(d)
    }

    /// The same digest over the samples an inventory paired: a run's inputs, to tell whether
    /// anything changed since (no listing).
    pub(crate) fn of_samples(samples: &[Sample]) -> Self {
        let mut d = Self::default();
        for s in samples {
            d.add(&s.raw.meta.key, &s.raw.meta.generation, s.raw.meta.size);
            d.add(
                &s.label.meta.key,
                &s.label.meta.generation,
                s.label.meta.size,
            );
        }
        d
    }

    fn add(&mut self, key: &str, generation: &str, size: u64) {
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update([0]);
        h.update(generation.as_bytes());
        h.update([0]);
        h.update(size.to_be_bytes());
        let bytes: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(bytes));
        self.objects += 1;
    }
}

impl Job {
    /// Waits until nothing under the raw or label folders was added or changed for
    /// QUIET_PERIOD, or MAX_QUIET_WAIT has passed.
    pub(super) async fn quiet(&self) -> Result<Quiet, StoreError> {
        let period = self.config.quiet_period;
        let max_wait = self.config.max_quiet_wait;
        if period.is_zero() {
            return Ok(Quiet {
                waited: Duration::ZERO,
                end: QuietEnd::Off,
                polls: 0,
                changes: 0,
                reason: "QUIET_PERIOD is 0: no wait for uploads to settle".to_owned(),
            });
        }
        // Inside TASK_DEADLINE: the wait takes at most half the time left, leaving the rest
        // to build and tune.
        let by_deadline = self.time_left().map(|left| left / 2);
        let (max_wait, limit) = match by_deadline {
            Some(half) if half < max_wait => (half, "half the time left before TASK_DEADLINE"),
            _ => (max_wait, "MAX_QUIET_WAIT"),
        };
        let poll = poll_interval(period);
        let folders = self.config.rules.layout().list_prefixes().join(", ");
        tracing::info!(
            quiet_period = %humantime::format_duration(period),
            max_quiet_wait = %humantime::format_duration(round_ms(max_wait)),
            "waiting until nothing under {folders} has been added or changed for QUIET_PERIOD"
        );
        let start = Instant::now();
        let mut last = ListingDigest::take(&*self.store, &self.config.rules).await?;
        let (mut polls, mut changes) = (1_u32, 0_u32);
        let mut stable_since = start;
        loop {
            let now = Instant::now();
            let quiet_at = stable_since + period;
            let give_up_at = start + max_wait;
            if now >= quiet_at {
                let waited = now - start;
                return Ok(Quiet {
                    waited,
                    end: QuietEnd::Settled,
                    polls,
                    changes,
                    reason: format!(
                        "settled: nothing under {folders} was added or changed for {} (QUIET_PERIOD); waited {}",
                        humantime::format_duration(period),
                        format_secs(waited)
                    ),
                });
            }
            if now >= give_up_at {
                let waited = now - start;
                tracing::warn!(
                    changes,
                    "uploads were still arriving after MAX_QUIET_WAIT; building from what is there"
                );
                return Ok(Quiet {
                    waited,
                    end: QuietEnd::MaxWait,
                    polls,
                    changes,
                    reason: format!(
                        "max_wait: objects under {folders} were still being added or changed after {} ({limit}); the run builds from what is there, and a later cycle or run trains the rest",
                        humantime::format_duration(round_ms(max_wait))
                    ),
                });
            }
            tokio::time::sleep_until((now + poll).min(quiet_at).min(give_up_at)).await;
            let next = ListingDigest::take(&*self.store, &self.config.rules).await?;
            polls += 1;
            if next != last {
                changes += 1;
                stable_since = Instant::now();
                last = next;
                tracing::debug!(changes, "uploads still arriving");
            }
        }
    }
}

/// A duration to the millisecond, for messages.
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `12.3s`.
fn format_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_four_times_a_period_within_bounds() {
        assert_eq!(
            poll_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(poll_interval(Duration::from_secs(600)), MAX_POLL);
        assert_eq!(poll_interval(Duration::from_millis(10)), MIN_POLL);
    }

    #[test]
    fn the_digest_ignores_order_and_sees_every_change() {
        let mut a = ListingDigest::default();
        a.add("r/x.txt", "1", 3);
        a.add("r/x.json", "2", 4);
        let mut b = ListingDigest::default();
        b.add("r/x.json", "2", 4);
        b.add("r/x.txt", "1", 3);
        assert_eq!(a, b);
        let mut c = ListingDigest::default();
        c.add("r/x.json", "3", 4);
        c.add("r/x.txt", "1", 3);
        assert_ne!(a, c, "a new generation is a change");
        let mut d = b;
        d.add("r/y.txt", "1", 3);
        assert_ne!(b, d, "a new object is a change");
    }
}
