//! The train/validation split, deterministic and stable across runs.
//!
//! A sample's side depends only on SHA-256(seed, key), never on which other samples exist, so
//! adding data never moves a validation sample into a later training set (the seed's random
//! split leaked validation data that way). Vertex accepts at most 5,000 validation examples: when
//! more samples fall on the validation side, the ones with the smallest hashes validate and the
//! rest are held out of both files, so the cap cannot leak them into training either.

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
pub(crate) fn position(seed: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Every sample's side, in the order of the keys it was made from. Each key is hashed once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Split {
    sides: Vec<Side>,
    train: u64,
    validation: u64,
    held_out: u64,
}

impl Split {
    /// Assigns a side to each key.
    pub(crate) fn assign<'a>(
        seed: &str,
        ratio: f64,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * 2f64.powi(64)) as u64
        };
        let positions: Vec<u64> = keys.into_iter().map(|k| position(seed, k)).collect();
        let mut sides: Vec<Side> = positions
            .iter()
            .map(|&p| {
                if p < threshold {
                    Side::Train
                } else {
                    Side::Validation
                }
            })
            .collect();
        let mut validation: Vec<(u64, usize)> = positions
            .iter()
            .enumerate()
            .filter(|&(i, _)| sides[i] == Side::Validation)
            .map(|(i, &p)| (p, i))
            .collect();
        if validation.len() > MAX_VALIDATION {
            validation.sort_unstable();
            for &(_, i) in &validation[MAX_VALIDATION..] {
                sides[i] = Side::HeldOut;
            }
        }
        let count = |side| sides.iter().filter(|&&s| s == side).count() as u64;
        Self {
            train: count(Side::Train),
            validation: count(Side::Validation),
            held_out: count(Side::HeldOut),
            sides,
        }
    }

    /// The side of the `i`-th key.
    pub(crate) fn side(&self, i: usize) -> Side {
        self.sides[i]
    }

    pub(crate) fn train(&self) -> u64 {
        self.train
    }

    pub(crate) fn validation(&self) -> u64 {
        self.validation
    }

    pub(crate) fn held_out(&self) -> u64 {
        self.held_out
    }
}

/// The seed of a bucket's first run. Fixed rather than random so that a first run that dies
/// and is retried makes the same split, hence the same run key, and re-attaches to its job.
pub const DEFAULT_SEED: &str = "autotune";

#[cfg(test)]
mod tests {
    use super::*;

    fn sides_of(split: &Split, n: usize) -> Vec<Side> {
        (0..n).map(|i| split.side(i)).collect()
    }

    #[test]
    fn ratio_is_respected_and_stable_under_growth() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let small = Split::assign("s", 0.8, keys[..2_000].iter().map(String::as_str));
        let large = Split::assign("s", 0.8, keys.iter().map(String::as_str));
        let val = large.validation();
        assert!((1_800..2_200).contains(&val), "about 20% validate: {val}");
        assert_eq!(large.train() + val, 10_000);
        assert_eq!(
            sides_of(&small, 2_000),
            sides_of(&large, 2_000),
            "keys kept their side as data grew"
        );
        let other_seed = Split::assign("t", 0.8, keys.iter().map(String::as_str));
        assert_ne!(
            sides_of(&other_seed, 10_000),
            sides_of(&large, 10_000),
            "the seed matters"
        );
    }

    #[test]
    fn validation_is_capped_without_leaking_into_training() {
        let keys: Vec<String> = (0..30_000).map(|i| format!("k{i}")).collect();
        let before = Split::assign("s", 0.5, keys[..12_000].iter().map(String::as_str));
        let after = Split::assign("s", 0.5, keys.iter().map(String::as_str));
        assert_eq!(after.validation(), MAX_VALIDATION as u64);
        for i in 0..12_000 {
            if before.side(i) != Side::Train {
                assert_ne!(after.side(i), Side::Train, "{i} never moves into training");
            }
        }
        assert!(after.held_out() > 0);
        assert_eq!(
            after.train() + after.validation() + after.held_out(),
            30_000
        );
    }

    #[test]
    fn ratio_one_means_no_validation() {
        let s = Split::assign("s", 1.0, ["a", "b", "c"]);
        assert_eq!(sides_of(&s, 3), [Side::Train; 3]);
    }
}
