//! The train/validation split, deterministic and stable across runs.
//!
//! A sample's side depends only on SHA-256(seed, key), never on which other samples exist, so
//! adding data never moves a validation sample into a later training set (the seed's random
//! split leaked validation data that way). Vertex accepts at most 5,000 validation examples: when
//! more samples fall on the validation side, the ones with the smallest hashes validate and the
//! rest are held out of both files, so the cap cannot leak them into training either.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// Vertex AI's limit on validation examples.
pub const MAX_VALIDATION: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Train,
    Validation,
    /// On the validation side but beyond the cap: in neither file.
    HeldOut,
}

/// A sample's position in [0, 2^64): the same for the same seed and key on every run.
pub fn position(seed: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

#[derive(Debug, Clone)]
pub struct Split {
    seed: String,
    /// Positions below this train.
    threshold: u64,
    /// Validation-side keys kept, when the cap applies; `None` keeps them all.
    kept: Option<HashSet<String>>,
}

impl Split {
    /// Plans the split for the given keys.
    pub fn plan<'a>(seed: &str, ratio: f64, keys: impl IntoIterator<Item = &'a str>) -> Self {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * 2f64.powi(64)) as u64
        };
        let mut validation: Vec<(u64, &str)> = keys
            .into_iter()
            .map(|k| (position(seed, k), k))
            .filter(|(p, _)| *p >= threshold)
            .collect();
        let kept = (validation.len() > MAX_VALIDATION).then(|| {
            validation.sort_unstable();
            validation[..MAX_VALIDATION]
                .iter()
                .map(|(_, k)| (*k).to_owned())
                .collect()
        });
        Self {
            seed: seed.to_owned(),
            threshold,
            kept,
        }
    }

    pub fn side(&self, key: &str) -> Side {
        if position(&self.seed, key) < self.threshold {
            Side::Train
        } else if self.kept.as_ref().is_none_or(|k| k.contains(key)) {
            Side::Validation
        } else {
            Side::HeldOut
        }
    }

    pub fn seed(&self) -> &str {
        &self.seed
    }
}

/// The seed of a bucket's first run. Fixed rather than random so that a first run that dies
/// and is retried makes the same split, hence the same run key, and re-attaches to its job.
pub const DEFAULT_SEED: &str = "autotune";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_respected_and_stable_under_growth() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let small = Split::plan("s", 0.8, keys[..2_000].iter().map(String::as_str));
        let large = Split::plan("s", 0.8, keys.iter().map(String::as_str));
        let val = keys
            .iter()
            .filter(|k| large.side(k) == Side::Validation)
            .count();
        assert!((1_800..2_200).contains(&val), "about 20% validate: {val}");
        for k in &keys[..2_000] {
            assert_eq!(
                small.side(k),
                large.side(k),
                "{k} kept its side as data grew"
            );
        }
        let other_seed = Split::plan("t", 0.8, keys.iter().map(String::as_str));
        assert!(
            keys.iter().any(|k| other_seed.side(k) != large.side(k)),
            "the seed matters"
        );
    }

    #[test]
    fn validation_is_capped_without_leaking_into_training() {
        let keys: Vec<String> = (0..30_000).map(|i| format!("k{i}")).collect();
        let before = Split::plan("s", 0.5, keys[..12_000].iter().map(String::as_str));
        let after = Split::plan("s", 0.5, keys.iter().map(String::as_str));
        let count = |s: &Split, side| keys.iter().filter(|k| s.side(k) == side).count();
        assert_eq!(count(&after, Side::Validation), MAX_VALIDATION);
        for k in &keys[..12_000] {
            if before.side(k) != Side::Train {
                assert_ne!(after.side(k), Side::Train, "{k} never moves into training");
            }
        }
        assert!(count(&after, Side::HeldOut) > 0);
    }

    #[test]
    fn ratio_one_means_no_validation() {
        let s = Split::plan("s", 1.0, ["a", "b", "c"]);
        assert!(["a", "b", "c"].iter().all(|k| s.side(k) == Side::Train));
    }
}
