//! Every checkpoint is a contestant: a tuning job that keeps its intermediate checkpoints
//! (`supervisedTuningSpec.exportLastCheckpointOnly` false, Vertex's default) reports them in
//! `tunedModel.checkpoints[]{checkpointId, epoch, step, endpoint}`, each deployed to its own
//! endpoint. Each checkpoint chosen by [`Selection`] (EVAL_CHECKPOINTS) is judged against the
//! champion on the same frozen rows, and the best one that the blessing rule passes wins.
//!
//! What Google documents (the "Use checkpoints in supervised fine-tuning for Gemini models"
//! page, cloud.google.com/vertex-ai/generative-ai/docs/models/tuning-checkpoints, read
//! 2026-12-08; and aiplatform v1 rev 20260815):
//! * below 10 epochs one checkpoint is saved about once an epoch; above, about 10 evenly
//!   spread, the final one right after the last epoch;
//! * each intermediate checkpoint is deployed to a new endpoint; `tunedModel.endpoint` is the
//!   endpoint of the *default* checkpoint, and `tunedModel.checkpoints` lists every checkpoint
//!   with its endpoint; the list is "only populated for tuning jobs that enable intermediate
//!   checkpoints" (`TunedModel.checkpoints`);
//! * `Model.defaultCheckpointId` ("the default checkpoint id of a model version") is set with
//!   `models.patch` and `updateMask=defaultCheckpointId`; `PreTunedModel.checkpointId` is "the
//!   source checkpoint id. If not specified, the default checkpoint will be used".
//!
//! # The rule: Holm's step-down over the checkpoints
//!
//! With one comparison, the blessing rule ([`super::bless`]) blesses a candidate no better than
//! the champion with probability at most α = 1 − EVAL_CONFIDENCE. Judging K checkpoints and
//! promoting the best of them would give K chances: K equal checkpoints would promote about
//! K·α of the time. So the K tests are corrected with Holm's step-down procedure (Holm 1979),
//! which keeps the family-wise error rate, the chance of blessing *any* checkpoint that is
//! not better than the champion, at most α whatever K is:
//!
//! 1. every checkpoint is judged against the champion on the same rows; the evidence of each
//!    is its paired test: McNemar's exact p for right/wrong metrics (smaller first), the lower
//!    bound of the paired bootstrap interval at confidence 1 − α/K for continuous ones
//!    (larger first);
//! 2. in that order, the checkpoint at position i (0-based) is tested at level α/(K − i):
//!    McNemar's p must be below it, or the bootstrap interval at confidence 1 − α/(K − i) must
//!    lie above 0 and EVAL_MIN_DELTA; the first checkpoint that fails stops the procedure, and
//!    it and every checkpoint after it are not significant;
//! 3. a significant checkpoint is blessed when the other rules hold too (EVAL_MIN_ROWS,
//!    EVAL_FLOOR, EVAL_MIN_DELTA, the guards), each as in [`super::bless`];
//! 4. of the blessed checkpoints the one with the highest primary score wins (ties: the one
//!    with more evidence, then the later one); none blessed, nothing is promoted.
//!
//! Why the error rate holds for any order of step 1: a checkpoint not better than the champion
//! can only be blessed if the first such checkpoint in the order is; with m of them, at most
//! K − m checkpoints come before it, so it is tested at a level of at most α/m; the chance
//! that any of the m passes at α/m is at most m · α/m = α. The order only decides the power:
//! the strongest evidence first loses least. With K = 1 the rule is exactly the single
//! blessing. The simulation tests below (200 seeded runs each) measure both sides.
//!
//! Each checkpoint's score is reported with the interval of its difference to the champion at
//! the level it was tested at: for right/wrong metrics the paired (Wald) interval
//! `delta ± z·√((b + c) − (b − c)²/n)/n`, for continuous metrics the bootstrap interval the test
//! used.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use statrs::distribution::{ContinuousCDF, Normal};

use super::bless::{Blessing, Paired, TOLERANCE, Test, Thresholds, Verdict, bless, mcnemar_p};
use super::metrics::{Metric, is_binary, row_score};

/// The most checkpoints Vertex saves for a job (about ten above 10 epochs).
pub const MAX_CHECKPOINTS: u32 = 10;

/// One checkpoint of a tuned model, as the tuning job reported it
/// (`GoogleCloudAiplatformV1TunedModelCheckpoint`; int64 fields as numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `checkpointId`.
    pub checkpoint_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// The endpoint the checkpoint is deployed to (`projects/…/endpoints/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The key of the checkpoints in a run record's `model_details`.
pub const DETAILS_KEY: &str = "checkpoints";

impl Checkpoint {
    /// The checkpoints of a job's `tunedModel` (as Vertex answers them: int64 as strings), in
    /// training order; entries without a `checkpointId` are left out.
    pub fn of_job(tuned_model: &Value) -> Vec<Self> {
        let number = |v: &Value| match v {
            Value::String(s) => s.parse::<u64>().ok(),
            v => v.as_u64(),
        };
        let mut list: Vec<Self> = tuned_model["checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some(Self {
                    checkpoint_id: c["checkpointId"].as_str()?.to_owned(),
                    epoch: number(&c["epoch"]),
                    step: number(&c["step"]),
                    endpoint: c["endpoint"].as_str().map(str::to_owned),
                })
            })
            .collect();
        list.sort_by_key(|c| (c.step, c.epoch));
        list
    }

    /// The checkpoints a run record's `model_details` keeps (what [`Checkpoint::of_job`] read).
    pub fn of_details(details: &Value) -> Vec<Self> {
        details
            .get(DETAILS_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// `checkpoint 2 (epoch 2, step 60)`.
    pub fn describe(&self) -> String {
        let id = &self.checkpoint_id;
        match (self.epoch, self.step) {
            (Some(e), Some(st)) => format!("checkpoint {id} (epoch {e}, step {st})"),
            (Some(e), None) => format!("checkpoint {id} (epoch {e})"),
            (None, Some(st)) => format!("checkpoint {id} (step {st})"),
            (None, None) => format!("checkpoint {id}"),
        }
    }
}

/// EVAL_CHECKPOINTS: which checkpoints of a tuned model are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every checkpoint (the default).
    #[default]
    All,
    /// The last `k` (`last:K`).
    LastK(u32),
    /// Only the last: the job is asked for no intermediate checkpoints.
    Last,
}

impl Selection {
    /// Whether the tuning job is asked for the last checkpoint only
    /// (`exportLastCheckpointOnly`).
    pub fn export_last_only(self) -> bool {
        self == Self::Last
    }

    /// The checkpoints judged, of those a job reported (in training order): the last ones.
    pub fn pick(self, all: &[Checkpoint]) -> Vec<Checkpoint> {
        let keep = match self {
            Self::All => all.len(),
            Self::LastK(k) => usize::try_from(k).unwrap_or(usize::MAX),
            Self::Last => 1,
        };
        all[all.len().saturating_sub(keep)..].to_vec()
    }

    /// How many checkpoints a job of `epochs` epochs (`None`: Vertex chooses; counted as the
    /// most it saves) would have judged.
    pub fn expected(self, epochs: Option<u32>) -> u32 {
        let saved = epochs.map_or(MAX_CHECKPOINTS, |e| e.clamp(1, MAX_CHECKPOINTS));
        match self {
            Self::All => saved,
            Self::LastK(k) => k.min(saved),
            Self::Last => 1,
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Last => f.write_str("last"),
            Self::LastK(k) => write!(f, "last:{k}"),
        }
    }
}

/// EVAL_CHECKPOINTS that is not `all`, `last` or `last:K`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EVAL_CHECKPOINTS is {0:?}, expected all, last, or last:K with K a whole number from 1")]
pub struct InvalidSelection(pub String);

impl FromStr for Selection {
    type Err = InvalidSelection;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidSelection(s.to_owned());
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Self::All),
            "last" => Ok(Self::Last),
            other => {
                let k: u32 = other
                    .strip_prefix("last:")
                    .and_then(|k| k.trim().parse().ok())
                    .filter(|&k| k >= 1)
                    .ok_or_else(bad)?;
                Ok(if k == 1 { Self::Last } else { Self::LastK(k) })
            }
        }
    }
}

/// One checkpoint's judgement, as the record, `blessing.json` and the logs report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointScore {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// The candidate's primary score.
    pub score: f64,
    /// Candidate − champion (primary scores).
    pub delta: f64,
    /// The interval of `delta` at the level it was tested at.
    pub interval: [f64; 2],
    /// McNemar's one-sided p (right/wrong metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The Holm level it was tested at, α/(K − position).
    pub level: f64,
    pub verdict: Verdict,
    /// Every rule that failed (empty when blessed).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Whether it won.
    #[serde(default)]
    pub winner: bool,
}

impl CheckpointScore {
    /// `checkpoint 2 (epoch 2, step 60): 0.91 (delta +0.12, [+0.06, +0.18]) BLESSED`.
    pub fn line(&self) -> String {
        format!(
            "{}: {:.4} (delta {:+.4}, interval [{:+.4}, {:+.4}] at level {:.4}) {}{}",
            self.checkpoint.describe(),
            self.score,
            self.delta,
            self.interval[0],
            self.interval[1],
            self.level,
            self.verdict,
            if self.winner { ", the winner" } else { "" }
        )
    }
}

/// The record's `evaluation.checkpoints`: what was judged and which won.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointsSummary {
    /// EVAL_CHECKPOINTS.
    pub selection: String,
    /// The checkpoints the job reported.
    pub reported: u64,
    /// `holm`: how the tests were corrected for their number.
    pub correction: String,
    /// Each judged checkpoint, in training order.
    pub judged: Vec<CheckpointScore>,
    /// The winning checkpoint's id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
}

/// The outcome of judging every checkpoint: one blessing each (at its Holm level, its verdict
/// final), their scores, and the winner.
#[derive(Debug, Clone)]
pub struct Choice {
    /// In the order of the input.
    pub blessings: Vec<Blessing>,
    pub scores: Vec<CheckpointScore>,
    /// Index of the winner.
    pub winner: Option<usize>,
}

/// Judges each checkpoint's paired rows against the champion (the rule is in the module docs).
/// `contestants` are in training order; `seed` draws every bootstrap.
pub fn choose(
    metric: Metric,
    contestants: &[(&Checkpoint, &[Paired<'_>])],
    t: &Thresholds,
    seed: u64,
) -> Choice {
    let k = contestants.len();
    let alpha = 1.0 - t.confidence;
    let at = |level: f64| Thresholds {
        confidence: (1.0 - level).clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON),
        ..*t
    };
    // Step 1: the evidence of each, at the Bonferroni level.
    let bonferroni = alpha / k.max(1) as f64;
    let evidence: Vec<f64> = contestants
        .iter()
        .map(|(_, rows)| {
            if is_binary(metric) {
                let (b, c) = discordant(metric, rows);
                return mcnemar_p(b, c);
            }
            match bless(metric, rows, &at(bonferroni), seed).test {
                Test::McnemarExact { p_value, .. } => p_value,
                // A larger lower bound is stronger evidence: order by its negation.
                Test::PairedBootstrap { interval, .. } => -interval[0],
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| evidence[a].total_cmp(&evidence[b]).then(b.cmp(&a)));

    // Step 2: the step-down.
    let mut blessings: Vec<Option<Blessing>> = vec![None; k];
    let mut levels = vec![0.0; k];
    let mut stopped: Option<usize> = None;
    for (position, &j) in order.iter().enumerate() {
        let level = alpha / (k - position) as f64;
        levels[j] = level;
        let mut b = bless(metric, contestants[j].1, &at(level), seed);
        holm_words(&mut b, t, level, k);
        if let Some(first) = stopped {
            if b.blessed() {
                b.verdict = Verdict::NotBlessed;
            }
            b.reasons.push(format!(
                "Holm's step-down over {k} checkpoints stopped before it: {} was not significant at its level {}",
                contestants[first].0.describe(),
                short(levels[first])
            ));
        } else if !significant(&b, t, level) {
            stopped = Some(j);
        }
        blessings[j] = Some(b);
    }
    let blessings: Vec<Blessing> = blessings.into_iter().map(Option::unwrap).collect();

    // Step 4: the best blessed one.
    let rank: Vec<usize> = {
        let mut r = vec![0; k];
        for (position, &j) in order.iter().enumerate() {
            r[j] = position;
        }
        r
    };
    let winner = (0..k).filter(|&j| blessings[j].blessed()).max_by(|&a, &b| {
        blessings[a]
            .candidate
            .primary
            .total_cmp(&blessings[b].candidate.primary)
            .then(rank[b].cmp(&rank[a]))
            .then(a.cmp(&b))
    });
    let scores = (0..k)
        .map(|j| {
            let b = &blessings[j];
            CheckpointScore {
                checkpoint: contestants[j].0.clone(),
                score: b.candidate.primary,
                delta: b.delta,
                interval: interval(metric, contestants[j].1, b, levels[j]),
                p_value: match b.test {
                    Test::McnemarExact { p_value, .. } => Some(p_value),
                    Test::PairedBootstrap { .. } => None,
                },
                level: levels[j],
                verdict: b.verdict,
                reasons: b.reasons.clone(),
                winner: winner == Some(j),
            }
        })
        .collect();
    Choice {
        blessings,
        scores,
        winner,
    }
}

/// The blessing's words say the level it was tested at is Holm's, from EVAL_CONFIDENCE (with
/// more than one checkpoint: the thresholds it records carry the adjusted confidence).
fn holm_words(b: &mut Blessing, t: &Thresholds, level: f64, k: usize) {
    if k < 2 {
        return;
    }
    let holm = format!(
        "Holm's level {} (EVAL_CONFIDENCE {} over {k} checkpoints)",
        short(level),
        short(t.confidence)
    );
    let confidence = short(1.0 - level);
    let swaps = [
        (
            format!("1 − EVAL_CONFIDENCE = {}", short(level)),
            holm.clone(),
        ),
        (
            format!("(EVAL_CONFIDENCE {confidence})"),
            format!("(at {holm})"),
        ),
        (
            format!("at EVAL_CONFIDENCE {confidence}"),
            format!("at {holm}"),
        ),
    ];
    for text in b.reasons.iter_mut().chain(std::iter::once(&mut b.rule)) {
        for (from, to) in &swaps {
            *text = text.replace(from.as_str(), to);
        }
    }
}

/// Whether the paired test of `b` passed at `level` (the significance rule alone).
fn significant(b: &Blessing, t: &Thresholds, level: f64) -> bool {
    match b.test {
        Test::McnemarExact {
            candidate_only_right,
            champion_only_right,
            p_value,
        } => candidate_only_right + champion_only_right > 0 && p_value < level,
        Test::PairedBootstrap { interval, .. } => {
            interval[0] > TOLERANCE && interval[0] >= t.min_delta - TOLERANCE
        }
    }
}

/// The interval of the difference at `level`: the paired Wald interval for right/wrong
/// metrics, the bootstrap interval of the test otherwise.
fn interval(metric: Metric, rows: &[Paired<'_>], b: &Blessing, level: f64) -> [f64; 2] {
    if let Test::PairedBootstrap { interval, .. } = b.test {
        return interval;
    }
    let n = rows.len() as f64;
    if !is_binary(metric) || rows.is_empty() {
        return [b.delta, b.delta];
    }
    let (only_candidate, only_champion) = discordant(metric, rows);
    let (only_candidate, only_champion) = (only_candidate as f64, only_champion as f64);
    let z = Normal::new(0.0, 1.0)
        .expect("the standard normal")
        .inverse_cdf(1.0 - level / 2.0);
    let spread = ((only_candidate + only_champion) - (only_candidate - only_champion).powi(2) / n)
        .max(0.0)
        .sqrt()
        / n;
    [b.delta - z * spread, b.delta + z * spread]
}

/// The rows only the candidate got right, and those only the champion got right.
fn discordant(metric: Metric, rows: &[Paired<'_>]) -> (u64, u64) {
    let (mut b, mut c) = (0, 0);
    for r in rows {
        let right = |a| row_score(metric, r.reference, a) >= 0.5;
        match (right(r.candidate), right(r.champion)) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    (b, c)
}

fn short(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::Answer;
    use super::super::rehearsal::{Rehearsal, WRONG_ANSWER};
    use super::super::set::Row;
    use super::*;

    fn checkpoint(i: usize) -> Checkpoint {
        Checkpoint {
            checkpoint_id: (i + 1).to_string(),
            epoch: Some(i as u64 + 1),
            step: Some(30 * (i as u64 + 1)),
            endpoint: Some(format!("projects/p/locations/l/endpoints/{}", i + 1)),
        }
    }

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

    fn thresholds() -> Thresholds {
        Thresholds {
            min_rows: 50,
            floor: 0.0,
            min_delta: 0.0,
            confidence: 0.95,
            guard_epsilon: 0.02,
        }
    }

    /// One simulated run: a sampling champion of error rate `champion` and one sampling
    /// stand-in per checkpoint (`checkpoints`: their error rates), drawn with `seed`, on `n`
    /// rows.
    fn simulate(checkpoints: &[f64], champion: f64, n: usize, seed: u64) -> Choice {
        let rows = rows(n);
        let champ = Rehearsal::sampling("champion", champion, seed);
        let champion_answers: Vec<Answer> = rows.iter().map(|r| answer(&champ, r)).collect();
        let answers: Vec<Vec<Answer>> = checkpoints
            .iter()
            .enumerate()
            .map(|(i, &e)| {
                let m = Rehearsal::sampling(&format!("checkpoint-{i}"), e, seed);
                rows.iter().map(|r| answer(&m, r)).collect()
            })
            .collect();
        let paired: Vec<Vec<Paired<'_>>> = answers
            .iter()
            .map(|a| {
                rows.iter()
                    .zip(a)
                    .zip(&champion_answers)
                    .map(|((r, c), h)| Paired {
                        reference: &r.reference,
                        candidate: c,
                        champion: h,
                    })
                    .collect()
            })
            .collect();
        let list: Vec<Checkpoint> = (0..checkpoints.len()).map(checkpoint).collect();
        let contestants: Vec<(&Checkpoint, &[Paired<'_>])> = list
            .iter()
            .zip(&paired)
            .map(|(c, p)| (c, p.as_slice()))
            .collect();
        choose(Metric::ExactMatch, &contestants, &thresholds(), seed)
    }

    /// Issue 23's "must show": over 200 seeded runs (seeds 0..200, 400 rows, a champion
    /// erring on 30% of them, every model sampling), a planted best checkpoint that is not the
    /// last (errors 25%, 15%, 22%) is chosen in at least 95% of the runs; with no checkpoint
    /// better than the champion (three, and five, at 30%) at most 5% of the runs promote
    /// anything, where each checkpoint tested alone at the nominal level would have promoted
    /// more often. Run with `cargo test -p autotune --lib every_checkpoint`.
    #[test]
    fn every_checkpoint_is_a_contestant_and_more_of_them_promote_no_more_often() {
        let planted = (0..200)
            .filter(|&seed| simulate(&[0.25, 0.15, 0.22], 0.3, 400, seed).winner == Some(1))
            .count();
        assert!(
            planted >= 190,
            "the planted best checkpoint won {planted} of 200 runs (≥ 95% wanted)"
        );
        let null3 = (0..200)
            .filter(|&seed| simulate(&[0.3; 3], 0.3, 400, seed).winner.is_some())
            .count();
        assert!(
            null3 <= 10,
            "3 checkpoints no better than the champion promoted {null3} of 200 runs (≤ 5% wanted)"
        );
        let (mut null5, mut uncorrected) = (0, 0);
        for seed in 0..200 {
            let choice = simulate(&[0.3; 5], 0.3, 400, seed);
            null5 += usize::from(choice.winner.is_some());
            uncorrected += usize::from(
                choice
                    .scores
                    .iter()
                    .any(|s| s.p_value.is_some_and(|p| p < 0.05)),
            );
        }
        assert!(
            null5 <= 10,
            "5 checkpoints no better than the champion promoted {null5} of 200 runs (≤ 5% wanted)"
        );
        assert!(
            uncorrected > null5 && uncorrected > 10,
            "without the correction {uncorrected} of 200 runs would have promoted (corrected {null5})"
        );
        // Checkpoints all worse than the champion never promote.
        let worse = (0..50)
            .filter(|&seed| {
                simulate(&[0.4, 0.35, 0.38], 0.3, 400, seed)
                    .winner
                    .is_some()
            })
            .count();
        assert_eq!(worse, 0);
    }

    #[test]
    fn one_checkpoint_is_judged_exactly_as_the_single_blessing() {
        let rows = rows(200);
        let cand = Rehearsal::sampling("c", 0.15, 3);
        let champ = Rehearsal::sampling("h", 0.3, 3);
        let a: Vec<(Answer, Answer)> = rows
            .iter()
            .map(|r| (answer(&cand, r), answer(&champ, r)))
            .collect();
        let paired: Vec<Paired<'_>> = rows
            .iter()
            .zip(&a)
            .map(|(r, (c, h))| Paired {
                reference: &r.reference,
                candidate: c,
                champion: h,
            })
            .collect();
        let c = checkpoint(0);
        let choice = choose(Metric::ExactMatch, &[(&c, &paired)], &thresholds(), 1);
        let single = bless(Metric::ExactMatch, &paired, &thresholds(), 1);
        assert_eq!(choice.blessings[0], single);
        assert_eq!(choice.winner, Some(0));
        let s = &choice.scores[0];
        assert!((s.level - 0.05).abs() < 1e-12);
        assert!(s.interval[0] < s.delta && s.delta < s.interval[1], "{s:?}");
        assert!(
            s.interval[0] > 0.0,
            "a clear gain's interval is above 0: {s:?}"
        );
        assert!(
            s.line().contains("checkpoint 1 (epoch 1, step 30)"),
            "{}",
            s.line()
        );
    }

    #[test]
    fn holm_levels_follow_the_evidence_and_the_step_down_stops_at_the_first_failure() {
        let rows = rows(300);
        // The champion is right on rows 0..210; checkpoint 2 on 0..270 (60 more, clearly
        // better), checkpoint 1 on 0..214 (4 more: McNemar p 1/16), checkpoint 3 on 0..210.
        let right_below = |k: usize| -> Vec<Answer> {
            rows.iter()
                .enumerate()
                .map(|(i, r)| Answer::Text {
                    text: if i < k {
                        r.reference.clone()
                    } else {
                        WRONG_ANSWER.to_owned()
                    },
                })
                .collect()
        };
        let answers = [right_below(214), right_below(270), right_below(210)];
        let champion = right_below(210);
        let paired: Vec<Vec<Paired<'_>>> = answers
            .iter()
            .map(|a| {
                rows.iter()
                    .zip(a)
                    .zip(&champion)
                    .map(|((r, c), h)| Paired {
                        reference: &r.reference,
                        candidate: c,
                        champion: h,
                    })
                    .collect()
            })
            .collect();
        let list: Vec<Checkpoint> = (0..3).map(checkpoint).collect();
        let contestants: Vec<(&Checkpoint, &[Paired<'_>])> = list
            .iter()
            .zip(&paired)
            .map(|(c, p)| (c, p.as_slice()))
            .collect();
        let choice = choose(Metric::ExactMatch, &contestants, &thresholds(), 1);
        assert_eq!(choice.winner, Some(1));
        // Checkpoint 2 first at α/3, checkpoint 1 second at α/2, checkpoint 3 last at α.
        assert!((choice.scores[1].level - 0.05 / 3.0).abs() < 1e-12);
        assert!((choice.scores[0].level - 0.025).abs() < 1e-12);
        assert!((choice.scores[2].level - 0.05).abs() < 1e-12);
        assert_eq!(choice.scores[1].verdict, Verdict::Blessed);
        assert!(choice.scores[1].winner && !choice.scores[0].winner);
        // p = 1/16 is not significant at α/2: the step-down stops there.
        assert_eq!(choice.scores[0].verdict, Verdict::NotBlessed);
        assert_eq!(choice.scores[2].verdict, Verdict::NotBlessed);
        assert!(
            choice.scores[2]
                .reasons
                .iter()
                .any(|r| r.contains("Holm's step-down")),
            "{:?}",
            choice.scores[2].reasons
        );
        let words = "Holm's level 0.025 (EVAL_CONFIDENCE 0.95 over 3 checkpoints)";
        assert!(
            choice.scores[0].reasons.iter().any(|r| r.contains(words)),
            "{:?}",
            choice.scores[0].reasons
        );
        assert!(
            choice.blessings[0].rule.contains(words),
            "{}",
            choice.blessings[0].rule
        );
        let json = serde_json::to_value(&choice.scores[1]).unwrap();
        assert_eq!(json["checkpoint_id"], "2");
        assert_eq!(json["epoch"], 2);
        assert_eq!(json["verdict"], "BLESSED");
        let back: CheckpointScore = serde_json::from_value(json).unwrap();
        assert_eq!(back, choice.scores[1]);
    }

    #[test]
    fn selections_parse_pick_and_shape_the_job() {
        let all: Vec<Checkpoint> = (0..4).map(checkpoint).collect();
        let ids = |s: Selection| -> Vec<String> {
            s.pick(&all).into_iter().map(|c| c.checkpoint_id).collect()
        };
        assert_eq!("all".parse::<Selection>().unwrap(), Selection::All);
        assert_eq!("last".parse::<Selection>().unwrap(), Selection::Last);
        assert_eq!("last:1".parse::<Selection>().unwrap(), Selection::Last);
        assert_eq!("LAST:2".parse::<Selection>().unwrap(), Selection::LastK(2));
        for bad in ["", "first", "last:0", "last:x", "last:-1"] {
            let err = bad.parse::<Selection>().unwrap_err();
            assert!(err.to_string().contains("EVAL_CHECKPOINTS"), "{err}");
        }
        assert_eq!(ids(Selection::All), ["1", "2", "3", "4"]);
        assert_eq!(ids(Selection::LastK(2)), ["3", "4"]);
        assert_eq!(ids(Selection::LastK(9)), ["1", "2", "3", "4"]);
        assert_eq!(ids(Selection::Last), ["4"]);
        assert!(Selection::Last.export_last_only());
        assert!(!Selection::All.export_last_only() && !Selection::LastK(2).export_last_only());
        assert_eq!(Selection::All.expected(Some(3)), 3);
        assert_eq!(Selection::All.expected(Some(40)), 10);
        assert_eq!(Selection::All.expected(None), 10);
        assert_eq!(Selection::LastK(2).expected(Some(3)), 2);
        assert_eq!(Selection::Last.expected(Some(3)), 1);
        assert_eq!(Selection::LastK(3).to_string(), "last:3");
    }

    #[test]
    fn checkpoints_are_read_from_the_job_in_training_order() {
        let tuned = serde_json::json!({
            "model": "projects/p/locations/l/models/m@1",
            "checkpoints": [
                {"checkpointId": "3", "epoch": "3", "step": "90", "endpoint": "e3"},
                {"checkpointId": "1", "epoch": "1", "step": "30", "endpoint": "e1"},
                {"epoch": "2"},
                {"checkpointId": "2", "epoch": 2, "step": "60", "endpoint": "e2"}
            ]
        });
        let list = Checkpoint::of_job(&tuned);
        let ids: Vec<&str> = list.iter().map(|c| c.checkpoint_id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert_eq!(list[1].epoch, Some(2));
        assert_eq!(list[2].endpoint.as_deref(), Some("e3"));
        let details = serde_json::json!({ DETAILS_KEY: list });
        assert_eq!(Checkpoint::of_details(&details), list);
        assert!(Checkpoint::of_job(&serde_json::json!({})).is_empty());
    }
}
