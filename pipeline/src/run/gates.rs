//! Gates 1 to 3, read-only: the lock as it stands, the inventory (gate 2) and the delta against
//! the last successful run (gate 3). `run` and `plan` share them.

use std::sync::Arc;

use crate::inventory::{self, Inventory};
use crate::lease::{self, LeaseRecord};
use crate::reads::{self, ReadAhead};
use crate::record::{self, Stored};
use crate::split;
use crate::storage::StoreError;

use super::Job;

/// Gate 1 as it stands, before any write.
#[derive(Debug)]
pub enum Lock {
    /// No lease, or a released one; a released lease may carry a job to adopt.
    Free { pending_job: Option<String> },
    /// A lease whose holder died; it will be taken over.
    Expired {
        run_id: String,
        pending_job: Option<String>,
    },
    /// Another run holds the lock: this one is skipped.
    Live(LeaseRecord),
    /// The lock object is not a lease: an operator must look.
    Unreadable { uri: String, reason: String },
    /// The lock could not be read at all.
    Failed(StoreError),
}

/// What gates 2 and 3 found.
#[derive(Debug)]
pub struct Gates {
    pub inventory: Inventory,
    /// The last successful run, the baseline of gate 3.
    pub baseline: Option<Stored>,
    /// Samples new or changed since the baseline.
    pub delta: u64,
    /// The samples against the baseline's manifest (inventory order); `None` when there is no
    /// baseline or it has no manifest (a seed record).
    pub comparison: Option<crate::delta::Comparison>,
    /// How the quiet stage ended, once it ran.
    pub quiet: Option<super::Quiet>,
    /// The objects of new or changed samples, read as the listing arrived (remote stores).
    pub ahead: Option<Arc<ReadAhead>>,
}

/// The decision of gates 2 and 3.
#[derive(Debug)]
pub enum Gate {
    Pass(Gates),
    Wait { reason: String, gates: Gates },
}

/// What a run reads first, read at once by [`Job::check_against_last_run`] and handed to the
/// first cycle ([`Job::run_cycles_after`]) so that it does not read them again, one after the
/// other: the lock as it stands, and the newest baseline record.
#[derive(Debug, Default)]
pub struct FirstLook {
    /// Gate 1 as it stood, and the lock object it was told from.
    pub(super) lock: Option<(Lock, Option<lease::Seen>)>,
    /// The baseline the check read.
    pub(super) baseline: Baseline,
}

/// The newest baseline record, as far as a look read it.
#[derive(Debug, Default)]
pub(super) enum Baseline {
    /// Not read: [`Job::evaluate`] reads it.
    #[default]
    Unread,
    /// Read; `None`: there is none.
    Read(Option<Box<Stored>>),
}

impl Job {
    /// Gate 1 without taking the lock.
    pub(super) async fn peek_lock(&self) -> Lock {
        self.look_at_lock().await.0
    }

    /// [`Job::peek_lock`], and the lock object it was told from (none when it could not be
    /// read), which [`lease::Lease::acquire_after`] takes the lock on.
    pub(super) async fn look_at_lock(&self) -> (Lock, Option<lease::Seen>) {
        let key = self.lock_key();
        let (status, seen) = match lease::look(&*self.store, &key).await {
            Ok((status, seen)) => (Ok(status), Some(seen)),
            Err(e) => (Err(e), None),
        };
        let lock = match status {
            Ok(lease::Status::Live(r)) => Lock::Live(r),
            Ok(lease::Status::Unreadable(reason)) => Lock::Unreadable {
                uri: self.store.uri(&key),
                reason,
            },
            Ok(lease::Status::Expired(r)) => Lock::Expired {
                pending_job: r.pending_job().map(|(j, _)| j.to_owned()),
                run_id: r.run_id,
            },
            Ok(lease::Status::Free(r)) => Lock::Free {
                pending_job: r
                    .as_ref()
                    .and_then(LeaseRecord::pending_job)
                    .map(|(j, _)| j.to_owned()),
            },
            Err(e) => Lock::Failed(e),
        };
        (lock, seen)
    }

    /// Gates 2 and 3. On Cloud Storage the baseline's manifest is read first: its keys cut the
    /// listing into key ranges listed at once, and it tells which listed objects a build will
    /// read, which `ahead` (if any) reads as the listing arrives. Elsewhere it is read after
    /// the listing, so that it and the listing are not held at once. `baseline`: the baseline
    /// record as just read ([`FirstLook`]), or to read.
    pub(super) async fn evaluate(
        &self,
        ahead: Option<&Arc<ReadAhead>>,
        baseline: Baseline,
    ) -> Result<Gate, StoreError> {
        let baseline = match baseline {
            Baseline::Read(b) => b.map(|b| *b),
            Baseline::Unread => {
                record::latest(
                    &*self.store,
                    &self.config.model_meta_folder,
                    self.baseline_statuses(),
                )
                .await?
            }
        };
        let early = self.store.lists_ranges() || ahead.is_some();
        let manifest = match &baseline {
            Some(b) if early => Some(self.manifest_of(b).await?),
            _ => None,
        };
        let known = manifest.as_ref().and_then(|m| m.as_ref()).map(|(m, _)| m);
        let splits = match known {
            Some(m) if self.store.lists_ranges() => inventory::split_points(m.keys().map(|k| &**k)),
            _ => inventory::folder_splits(&*self.store, &self.config.rules).await?,
        };
        // A full rebuild reads everything; otherwise what the manifest does not know as it is.
        let reused = known.filter(|_| !self.config.full_rebuild);
        let mut listed = |l: inventory::Listed<'_>| {
            if let Some(ahead) = ahead
                && !reused.is_some_and(|m| unchanged(m, &l))
            {
                ahead.want(reads::Want {
                    key: l.meta.key.clone(),
                    generation: l.meta.generation.clone(),
                    size: l.meta.size,
                    gzip: l.gzip,
                });
            }
        };
        let inventory =
            inventory::take_in_ranges(&*self.store, &self.config.rules, &splits, &mut listed)
                .await?;
        let min = self.config.min_samples;
        let pairs = inventory.samples.len() as u64;
        tracing::info!(
            pairs,
            unpaired_raw = inventory.unpaired_raw,
            unpaired_labels = inventory.unpaired_labels,
            ambiguous = inventory.ambiguous.len(),
            "inventory taken"
        );
        let mut gates = Gates {
            inventory,
            baseline,
            delta: 0,
            comparison: None,
            quiet: None,
            ahead: ahead.cloned(),
        };
        if pairs < min {
            let reason = format!("gate 2: {pairs} matched pairs, fewer than MIN_SAMPLES ({min})");
            return Ok(Gate::Wait { reason, gates });
        }
        let manifest = match manifest {
            Some(m) => m,
            None => match gates.baseline.as_ref() {
                Some(b) => self.manifest_of(b).await?,
                None => None,
            },
        };
        (gates.delta, gates.comparison) =
            Self::delta_from(&gates.inventory, gates.baseline.as_ref(), manifest);
        if gates.delta < min {
            let since = gates
                .baseline
                .as_ref()
                .map_or_else(String::new, |b| format!(" since run {}", b.record.run_id));
            let reason = format!(
                "gate 3: {} new or changed samples{since}, fewer than MIN_SAMPLES ({min})",
                gates.delta
            );
            return Ok(Gate::Wait { reason, gates });
        }
        Ok(Gate::Pass(gates))
    }

    /// Gate 3 again once the lock is held: a run that finished between our look and our lock
    /// moved the baseline. `Some(reason)` when the run must wait after all.
    pub(super) async fn recheck(&self, gates: &mut Gates) -> Result<Option<String>, StoreError> {
        let now = record::latest(
            &*self.store,
            &self.config.model_meta_folder,
            self.baseline_statuses(),
        )
        .await?;
        if now.as_ref().map(|s| &s.key) == gates.baseline.as_ref().map(|s| &s.key) {
            return Ok(None);
        }
        gates.baseline = now;
        (gates.delta, gates.comparison) = self
            .delta_against(&gates.inventory, gates.baseline.as_ref())
            .await?;
        let min = self.config.min_samples;
        Ok((gates.delta < min).then(|| {
            format!(
                "gate 3: another run finished meanwhile; {} new or changed samples remain, fewer than MIN_SAMPLES ({min})",
                gates.delta
            )
        }))
    }

    async fn delta_against(
        &self,
        inv: &Inventory,
        baseline: Option<&Stored>,
    ) -> Result<(u64, Option<crate::delta::Comparison>), StoreError> {
        let manifest = match baseline {
            Some(b) => self.manifest_of(b).await?,
            None => None,
        };
        Ok(Self::delta_from(inv, baseline, manifest))
    }

    /// The baseline's manifest; `None` for a record from the seed, which has none.
    async fn manifest_of(
        &self,
        b: &Stored,
    ) -> Result<Option<(crate::delta::Manifest, crate::delta::Carried)>, StoreError> {
        match crate::delta::read(&*self.store, &b.manifest_key()).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_not_found() => {
                tracing::warn!(record = %self.store.uri(&b.key), "baseline has no manifest; counting the difference in samples, as the seed did");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn delta_from(
        inv: &Inventory,
        baseline: Option<&Stored>,
        manifest: Option<(crate::delta::Manifest, crate::delta::Carried)>,
    ) -> (u64, Option<crate::delta::Comparison>) {
        let Some(b) = baseline else {
            return (inv.samples.len() as u64, None);
        };
        match manifest {
            Some((m, validation)) => {
                let c = crate::delta::compare(&inv.samples, &m, validation);
                let n = c.changed.iter().filter(|&&c| c).count() as u64;
                (n, Some(c))
            }
            // A record from the seed, without manifest: fall back to its count difference.
            None => (
                (inv.samples.len() as u64).saturating_sub(b.record.sample_size),
                None,
            ),
        }
    }

    /// SPLIT_SEED, else the baseline's seed, else the default.
    pub(super) fn split_seed(&self, baseline: Option<&Stored>) -> String {
        self.config
            .split_seed
            .clone()
            .or_else(|| baseline.and_then(|b| b.record.split_seed.clone()))
            .unwrap_or_else(|| split::DEFAULT_SEED.to_owned())
    }
}

/// Whether a listed file is the version the manifest's run read: its line is reused, the build
/// will not read it.
fn unchanged(manifest: &crate::delta::Manifest, l: &inventory::Listed<'_>) -> bool {
    manifest.get(l.stem).is_some_and(|k| {
        k.digest.is_some()
            && ((l.text && k.raw() == l.meta.generation)
                || (l.label && k.label() == l.meta.generation))
    })
}
