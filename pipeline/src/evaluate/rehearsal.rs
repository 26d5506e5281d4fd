//! The rehearsal stand-in (`EVAL_MODEL=rehearsal`): a [`Model`] that answers from the labels,
//! without a network, so that the dry-run tuner of the embedded default can show the whole
//! evaluate → bless → promote → rollback path locally.
//!
//! **Only for the dry-run tuner.** The dry-run tuner makes no real model, so there is nothing to
//! ask; this stand-in answers each row with its reference, except for a fixed share of rows
//! (`error_rate`) where it gives a plainly wrong answer. Which rows are wrong is decided by a
//! hash of the stand-in's name and the row's id, so two runs give the same answers and two
//! stand-ins with different names err on different rows. It is never a measure of any model,
//! and it must never be used with the Vertex tuner: its name says "rehearsal" wherever it is
//! reported.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::model::{Generation, Model, ModelError, Reply};
use super::{Answer, Row};

/// The answer a rehearsal gives on the rows it gets wrong.
pub const WRONG_ANSWER: &str = "rehearsal: wrong answer";

/// A deterministic stand-in that answers `row.reference`, except on a share `error_rate` of rows.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    name: String,
    error_rate: f64,
    /// Which rows are wrong depends on the row alone, not on the name: a stand-in with a
    /// lower error rate is right wherever one with a higher rate is ([`Rehearsal::nested`]).
    nested: bool,
}

impl Rehearsal {
    /// `error_rate` is clamped to 0..=1.
    pub fn new(name: &str, error_rate: f64) -> Self {
        let error_rate = if error_rate.is_nan() {
            0.0
        } else {
            error_rate.clamp(0.0, 1.0)
        };
        Self {
            name: format!("rehearsal stand-in {name} (not a model)"),
            error_rate,
            nested: false,
        }
    }

    /// A stand-in whose wrong rows are the rows under `error_rate` on one scale shared by
    /// every nested stand-in: a lower error rate is right on every row a higher one is, so
    /// more data rehearses as a better model, deterministically, whatever the names.
    pub fn nested(name: &str, error_rate: f64) -> Self {
        Self {
            nested: true,
            ..Self::new(name, error_rate)
        }
    }

    /// Whether this stand-in answers `row` wrongly: the first 8 bytes of
    /// SHA-256(name, NUL, row id) (of the row id alone when nested) as a fraction of 2^64,
    /// under the error rate.
    pub fn errs_on(&self, row: &Row) -> bool {
        let mut h = Sha256::new();
        if !self.nested {
            h.update(self.name.as_bytes());
        }
        h.update([0]);
        h.update(row.id.as_bytes());
        let d = h.finalize();
        let x = u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"));
        (x as f64 / 18_446_744_073_709_551_616.0) < self.error_rate
    }
}

/// Roughly four characters a token, as Google counts English text.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[async_trait]
impl Model for Rehearsal {
    fn name(&self) -> &str {
        &self.name
    }

    async fn generate(&self, row: &Row, _config: &Generation) -> Result<Reply, ModelError> {
        let text = if self.errs_on(row) {
            WRONG_ANSWER.to_owned()
        } else {
            row.reference.clone()
        };
        let mut prompt = row
            .system_instruction
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        for c in &row.contents {
            prompt.push_str(&c.to_string());
        }
        Ok(Reply {
            answer_tokens: tokens(&text),
            prompt_tokens: tokens(&prompt),
            answer: Answer::Text { text },
        })
    }
}
