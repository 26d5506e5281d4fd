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
    /// A sampling stand-in ([`Rehearsal::sampling`]): which rows are wrong also depends on
    /// this draw, as a model sampled at temperature 1 answers a row differently each time.
    draw: Option<u64>,
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
            draw: None,
        }
    }

    /// A stand-in that samples: it errs on each row with probability `error_rate`, the rows
    /// drawn anew for each `draw` (an evaluation at temperature 1, where the same model
    /// answers a row rightly one time and wrongly the next).
    pub fn sampling(name: &str, error_rate: f64, draw: u64) -> Self {
        Self {
            draw: Some(draw),
            ..Self::new(name, error_rate)
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
        if let Some(draw) = self.draw {
            h.update([1]);
            h.update(draw.to_be_bytes());
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

#[cfg(test)]
mod tests {
    use super::super::bless::{Paired, Thresholds, Verdict, bless};
    use super::super::metrics::Metric;
    use super::*;

    fn rows(n: usize) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                id: format!("row-{i}"),
                key: format!("k{i}"),
                system_instruction: None,
                contents: Vec::new(),
                reference: format!("answer {i}"),
            })
            .collect()
    }

    fn answer(m: &Rehearsal, row: &Row) -> Answer {
        Answer::Text {
            text: if m.errs_on(row) {
                WRONG_ANSWER.to_owned()
            } else {
                row.reference.clone()
            },
        }
    }

    /// How many of `runs` seeded evaluations bless a sampling candidate of error rate
    /// `candidate` against a sampling champion of `champion`, on `n` rows, with the default
    /// thresholds (exact match, McNemar's exact test at 95%).
    fn blessed(candidate: f64, champion: f64, n: usize, runs: u64) -> u64 {
        let rows = rows(n);
        let t = Thresholds {
            min_rows: 50,
            floor: 0.0,
            min_delta: 0.0,
            confidence: 0.95,
            guard_epsilon: 0.02,
        };
        (0..runs)
            .filter(|&seed| {
                let cand = Rehearsal::sampling("candidate", candidate, seed);
                let champ = Rehearsal::sampling("champion", champion, seed);
                let answers: Vec<(Answer, Answer)> = rows
                    .iter()
                    .map(|r| (answer(&cand, r), answer(&champ, r)))
                    .collect();
                let paired: Vec<Paired<'_>> = rows
                    .iter()
                    .zip(&answers)
                    .map(|(r, (c, h))| Paired {
                        reference: &r.reference,
                        candidate: c,
                        champion: h,
                    })
                    .collect();
                bless(Metric::ExactMatch, &paired, &t, seed).verdict == Verdict::Blessed
            })
            .count() as u64
    }

    /// Both sides sampling (Gemini 3 at temperature 1.0) adds disagreements that are noise;
    /// McNemar's test counts only the rows where the two disagree, and under the null those
    /// still split evenly, so the false blessing rate stays under 1 − EVAL_CONFIDENCE. The
    /// price is power: noise widens the test, so a real gain needs more rows to show.
    /// 200 seeds (0..200), 400 rows.
    #[test]
    fn sampling_on_both_sides_keeps_the_paired_tests_error_rates() {
        let null = blessed(0.3, 0.3, 400, 200);
        assert!(
            null <= 10,
            "equal models blessed {null} times in 200 (≤ 5% wanted)"
        );
        let power = blessed(0.15, 0.3, 400, 200);
        assert!(
            power >= 190,
            "a 15-point gain blessed only {power} times in 200 (≥ 95% wanted)"
        );
        let worse = blessed(0.35, 0.3, 400, 200);
        assert_eq!(worse, 0, "a worse sampling candidate is never blessed");
    }

    #[test]
    fn sampling_draws_differ_and_repeat() {
        let rows = rows(200);
        let a = Rehearsal::sampling("m", 0.3, 1);
        let b = Rehearsal::sampling("m", 0.3, 2);
        let wrong = |m: &Rehearsal| rows.iter().filter(|r| m.errs_on(r)).count();
        assert!((40..=80).contains(&wrong(&a)), "{}", wrong(&a));
        assert_ne!(
            rows.iter().map(|r| a.errs_on(r)).collect::<Vec<_>>(),
            rows.iter().map(|r| b.errs_on(r)).collect::<Vec<_>>()
        );
        let again = Rehearsal::sampling("m", 0.3, 1);
        assert!(rows.iter().all(|r| a.errs_on(r) == again.errs_on(r)));
    }
}
