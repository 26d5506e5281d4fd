//! The blessing: is the candidate better than the champion on the paired evaluation rows, by a
//! margin the rows can show? Pure; the run writes the result as `blessing.json`.
//!
//! # The rule
//!
//! A candidate is [`Verdict::Blessed`] when all of these hold, and [`Verdict::NotBlessed`]
//! otherwise, with one reason per failed rule in [`Blessing::reasons`]:
//!
//! 1. at least `min_rows` rows were scored (EVAL_MIN_ROWS);
//! 2. the candidate's primary score is at least `floor` (EVAL_FLOOR);
//! 3. `delta` = candidate − champion (primary scores) is at least `min_delta`
//!    (EVAL_MIN_DELTA), and the difference is significant on the paired rows at `confidence`
//!    (`EVAL_CONFIDENCE)`:
//!    * right/wrong metrics ([`is_binary`]: exact match, class): McNemar's exact test, one
//!      sided, on the discordant rows (`b` = only the candidate right, `c` = only the champion
//!      right): `p = P(X ≥ b)` for `X ~ Binomial(b + c, ½)`, significant when
//!      `p < 1 − confidence`. No discordant row is never significant;
//!    * continuous metrics (JSON field accuracy, ROUGE-L): a paired bootstrap of the mean
//!      per-row difference ([`BOOTSTRAP_RESAMPLES`] resamples of the rows with replacement,
//!      drawn by rand's `StdRng` from the given seed), its two-sided percentile interval at
//!      `confidence`; significant when the lower bound is above 0 and at least `min_delta`;
//! 4. no guard is worse for the candidate by more than `guard_epsilon` (`EVAL_GUARD_EPSILON)`:
//!    `json_validity` lower (JSON metric only), `blocked_rate` or `empty_rate` higher.
//!
//! Comparisons of scores with thresholds allow [`TOLERANCE`] for floating-point rounding, so a
//! difference of exactly `min_delta` rows' worth passes.
//!
//! # Defaults
//!
//! The run's settings default to EVAL_MIN_ROWS 50, EVAL_FLOOR 0.0, EVAL_MIN_DELTA 0.0,
//! EVAL_CONFIDENCE 0.95 and EVAL_GUARD_EPSILON 0.02 ([`Thresholds`] has no `Default`: the
//! caller always says which thresholds it judged with).

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, DiscreteCDF};

use super::Answer;
use super::metrics::{Metric, Scores, aggregate, is_binary, names, row_score};

/// Resamples of the paired bootstrap.
pub const BOOTSTRAP_RESAMPLES: u32 = 2_000;

/// Slack for floating-point rounding when a score is compared with a threshold.
pub const TOLERANCE: f64 = 1e-9;

/// What a candidate must show to be blessed. Every field is in `[0, 1]`; `confidence` is
/// strictly inside. The run's defaults are in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Fewest rows scored (EVAL_MIN_ROWS; default 50).
    pub min_rows: u64,
    /// Lowest primary score the candidate may have (EVAL_FLOOR; default 0.0).
    pub floor: f64,
    /// Smallest candidate − champion difference of the primary scores (EVAL_MIN_DELTA;
    /// default 0.0).
    pub min_delta: f64,
    /// Confidence of the paired test (EVAL_CONFIDENCE; default 0.95).
    pub confidence: f64,
    /// How much worse a guard may be (EVAL_GUARD_EPSILON; default 0.02).
    pub guard_epsilon: f64,
}

/// A threshold outside its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting} is {value}, expected a number {expected}")]
pub struct InvalidThreshold {
    /// The setting's name (EVAL_FLOOR…).
    pub setting: &'static str,
    /// The value given.
    pub value: f64,
    /// The range it must be in, in words.
    pub expected: &'static str,
}

impl Thresholds {
    /// Checks every field is in its range (the caller checks before a run spends anything).
    pub fn check(&self) -> Result<(), InvalidThreshold> {
        let closed = |setting, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(InvalidThreshold {
                    setting,
                    value,
                    expected: "from 0 to 1",
                })
            }
        };
        closed("EVAL_FLOOR", self.floor)?;
        closed("EVAL_MIN_DELTA", self.min_delta)?;
        closed("EVAL_GUARD_EPSILON", self.guard_epsilon)?;
        if self.confidence > 0.0 && self.confidence < 1.0 {
            Ok(())
        } else {
            Err(InvalidThreshold {
                setting: "EVAL_CONFIDENCE",
                value: self.confidence,
                expected: "strictly between 0 and 1",
            })
        }
    }
}

/// One evaluation row answered by both models.
#[derive(Debug, Clone, Copy)]
pub struct Paired<'a> {
    /// The expected answer.
    pub reference: &'a str,
    /// The candidate's answer.
    pub candidate: &'a Answer,
    /// The champion's answer.
    pub champion: &'a Answer,
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every rule held: the candidate may be promoted.
    Blessed,
    /// At least one rule failed ([`Blessing::reasons`]).
    NotBlessed,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Blessed => "BLESSED",
            Self::NotBlessed => "NOT_BLESSED",
        })
    }
}

/// The paired test and its numbers: an object whose `name` says which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", try_from = "TestRecord")]
pub enum Test {
    /// McNemar's exact test (right/wrong metrics).
    McnemarExact {
        /// Rows only the candidate got right (`b`).
        candidate_only_right: u64,
        /// Rows only the champion got right (`c`).
        champion_only_right: u64,
        /// One-sided exact p-value that the candidate is better: `P(X ≥ b)`,
        /// `X ~ Binomial(b + c, ½)`; 1 with no discordant row.
        p_value: f64,
    },
    /// Paired bootstrap of the mean per-row difference (continuous metrics).
    PairedBootstrap {
        /// Resamples drawn.
        resamples: u32,
        /// The seed of rand's `StdRng` that drew them.
        seed: u64,
        /// Two-sided percentile interval `[lo, hi]` at the thresholds' confidence.
        interval: [f64; 2],
    },
}

/// How [`Test`] is read back. `serde_json` with `arbitrary_precision` (this crate's) cannot read
/// numbers inside an internally tagged enum, which serde buffers before it knows the variant;
/// a plain struct has no such buffer.
#[derive(Deserialize)]
struct TestRecord {
    name: String,
    candidate_only_right: Option<u64>,
    champion_only_right: Option<u64>,
    p_value: Option<f64>,
    resamples: Option<u32>,
    seed: Option<u64>,
    interval: Option<[f64; 2]>,
}

impl TryFrom<TestRecord> for Test {
    type Error = String;

    fn try_from(r: TestRecord) -> Result<Self, Self::Error> {
        let missing = |field: &str| format!("test `{}` has no `{field}`", r.name);
        match r.name.as_str() {
            "mcnemar_exact" => Ok(Self::McnemarExact {
                candidate_only_right: r
                    .candidate_only_right
                    .ok_or_else(|| missing("candidate_only_right"))?,
                champion_only_right: r
                    .champion_only_right
                    .ok_or_else(|| missing("champion_only_right"))?,
                p_value: r.p_value.ok_or_else(|| missing("p_value"))?,
            }),
            "paired_bootstrap" => Ok(Self::PairedBootstrap {
                resamples: r.resamples.ok_or_else(|| missing("resamples"))?,
                seed: r.seed.ok_or_else(|| missing("seed"))?,
                interval: r.interval.ok_or_else(|| missing("interval"))?,
            }),
            other => Err(format!(
                "unknown test `{other}`: expected mcnemar_exact or paired_bootstrap"
            )),
        }
    }
}

/// A guard metric of both models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    /// `json_validity`, `blocked_rate` or `empty_rate`.
    pub name: String,
    /// The candidate's value.
    pub candidate: f64,
    /// The champion's value.
    pub champion: f64,
    /// How much worse the candidate is (negative when better): lower validity, higher rates.
    pub worse_by: f64,
    /// `worse_by` ≤ the guard epsilon.
    pub passed: bool,
}

/// The judgement of a candidate against the champion: `blessing.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blessing {
    /// BLESSED or NOT_BLESSED.
    pub verdict: Verdict,
    /// The metric the rows were scored with.
    pub metric: Metric,
    /// Paired rows scored.
    pub rows: u64,
    /// The candidate's scores.
    pub candidate: Scores,
    /// The champion's scores.
    pub champion: Scores,
    /// `candidate.primary − champion.primary`.
    pub delta: f64,
    /// The paired test.
    pub test: Test,
    /// The thresholds judged with.
    pub thresholds: Thresholds,
    /// The guards, each with both values.
    pub guards: Vec<Guard>,
    /// The rule, in words, with these thresholds.
    pub rule: String,
    /// Every rule that failed, in words naming the setting and the numbers; empty when
    /// blessed.
    pub reasons: Vec<String>,
}

impl Blessing {
    /// Whether the verdict is BLESSED.
    pub fn blessed(&self) -> bool {
        self.verdict == Verdict::Blessed
    }

    /// One line for logs: the verdict, both scores, the test and the reasons.
    pub fn summary(&self) -> String {
        let test = match &self.test {
            Test::McnemarExact {
                candidate_only_right,
                champion_only_right,
                p_value,
            } => format!(
                "McNemar p {} ({candidate_only_right} rows only the candidate right, \
                 {champion_only_right} only the champion)",
                pvalue(*p_value)
            ),
            Test::PairedBootstrap { interval, .. } => format!(
                "bootstrap {}% interval [{}, {}]",
                num(self.thresholds.confidence * 100.0),
                signed(interval[0]),
                signed(interval[1])
            ),
        };
        let mut line = format!(
            "{}: {} candidate {} vs champion {} (delta {}) on {} rows, {test}",
            self.verdict,
            self.metric.primary_name(),
            num(self.candidate.primary),
            num(self.champion.primary),
            signed(self.delta),
            self.rows,
        );
        if !self.reasons.is_empty() {
            line.push_str("; ");
            line.push_str(&self.reasons.join("; "));
        }
        line
    }
}

/// Judges the candidate against the champion on the paired rows (the rule is in the module
/// docs); `seed` draws the bootstrap's resamples (continuous metrics).
pub fn bless(metric: Metric, rows: &[Paired<'_>], t: &Thresholds, seed: u64) -> Blessing {
    let references: Vec<&str> = rows.iter().map(|r| r.reference).collect();
    let candidate_answers: Vec<&Answer> = rows.iter().map(|r| r.candidate).collect();
    let champion_answers: Vec<&Answer> = rows.iter().map(|r| r.champion).collect();
    let candidate = aggregate(metric, &references, &candidate_answers);
    let champion = aggregate(metric, &references, &champion_answers);
    let delta = candidate.primary - champion.primary;
    let score = metric.primary_name();
    let count = rows.len() as u64;
    let mut reasons = Vec::new();

    if count < t.min_rows {
        let rows = if count == 1 { "row was" } else { "rows were" };
        reasons.push(format!(
            "only {count} {rows} scored, fewer than EVAL_MIN_ROWS {} (a set smaller than that grows as new data arrives; or lower EVAL_MIN_ROWS, or raise EVAL_RATIO with --new-eval-set)",
            t.min_rows
        ));
    }
    if candidate.primary < t.floor - TOLERANCE {
        reasons.push(format!(
            "the candidate's {score} {} is below EVAL_FLOOR {}",
            num(candidate.primary),
            num(t.floor)
        ));
    }
    if delta < t.min_delta - TOLERANCE {
        reasons.push(format!(
            "the candidate's {score} {} minus the champion's {} is {}, less than EVAL_MIN_DELTA {}",
            num(candidate.primary),
            num(champion.primary),
            signed(delta),
            num(t.min_delta)
        ));
    }

    let (test, significant) = if is_binary(metric) {
        mcnemar_test(metric, rows, t)
    } else {
        bootstrap_test(metric, rows, t, seed)
    };
    reasons.extend(significant);

    let guards = guards(metric, &candidate, &champion, t.guard_epsilon);
    for guard in guards.iter().filter(|g| !g.passed) {
        reasons.push(format!(
            "the candidate's {} is {} against the champion's {}: worse by {}, more than \
             EVAL_GUARD_EPSILON {}",
            guard.name,
            num(guard.candidate),
            num(guard.champion),
            num(guard.worse_by),
            num(t.guard_epsilon)
        ));
    }

    Blessing {
        verdict: if reasons.is_empty() {
            Verdict::Blessed
        } else {
            Verdict::NotBlessed
        },
        metric,
        rows: count,
        candidate,
        champion,
        delta,
        test,
        thresholds: *t,
        guards,
        rule: rule(metric, t),
        reasons,
    }
}

/// McNemar's exact test on the right/wrong outcomes of the paired rows, and the reason it
/// fails, if it does.
fn mcnemar_test(metric: Metric, rows: &[Paired<'_>], t: &Thresholds) -> (Test, Option<String>) {
    let (mut b, mut c) = (0, 0);
    for row in rows {
        let right = |a| row_score(metric, row.reference, a) >= 0.5;
        match (right(row.candidate), right(row.champion)) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    let p = mcnemar_p(b, c);
    let alpha = 1.0 - t.confidence;
    let reason = if b + c == 0 {
        Some(format!(
            "no row has exactly one model right, so McNemar's test cannot show a difference \
             at EVAL_CONFIDENCE {}",
            num(t.confidence)
        ))
    } else if p < alpha {
        None
    } else {
        Some(format!(
            "the difference is not significant: McNemar's exact one-sided p is {} ({b} rows \
             only the candidate right, {c} only the champion), not below 1 − \
             EVAL_CONFIDENCE = {}",
            pvalue(p),
            num(alpha)
        ))
    };
    let test = Test::McnemarExact {
        candidate_only_right: b,
        champion_only_right: c,
        p_value: p,
    };
    (test, reason)
}

/// The paired bootstrap of the per-row differences, and the reason it fails, if it does.
fn bootstrap_test(
    metric: Metric,
    rows: &[Paired<'_>],
    t: &Thresholds,
    seed: u64,
) -> (Test, Option<String>) {
    let differences: Vec<f64> = rows
        .iter()
        .map(|r| {
            row_score(metric, r.reference, r.candidate) - row_score(metric, r.reference, r.champion)
        })
        .collect();
    let interval = paired_bootstrap(&differences, t.confidence, BOOTSTRAP_RESAMPLES, seed);
    let [lo, hi] = interval;
    let reason = if lo > TOLERANCE && lo >= t.min_delta - TOLERANCE {
        None
    } else {
        Some(format!(
            "the paired rows do not show the gain: the paired bootstrap {}% interval of the \
             per-row difference is [{}, {}], and its lower bound must be above 0 and at least \
             EVAL_MIN_DELTA {} (EVAL_CONFIDENCE {})",
            num(t.confidence * 100.0),
            signed(lo),
            signed(hi),
            num(t.min_delta),
            num(t.confidence)
        ))
    };
    let test = Test::PairedBootstrap {
        resamples: BOOTSTRAP_RESAMPLES,
        seed,
        interval,
    };
    (test, reason)
}

/// The rule in words, with the thresholds.
fn rule(metric: Metric, t: &Thresholds) -> String {
    let test = if is_binary(metric) {
        format!(
            "McNemar's exact one-sided p below 1 − EVAL_CONFIDENCE = {}",
            num(1.0 - t.confidence)
        )
    } else {
        format!(
            "the lower bound of the paired bootstrap {}% interval above 0 and at least \
             EVAL_MIN_DELTA",
            num(t.confidence * 100.0)
        )
    };
    let guards = if metric == Metric::Json {
        "json_validity, blocked_rate, empty_rate"
    } else {
        "blocked_rate, empty_rate"
    };
    format!(
        "BLESSED when at least EVAL_MIN_ROWS {} rows are scored, the candidate's {score} is at \
         least EVAL_FLOOR {}, candidate − champion is at least EVAL_MIN_DELTA {} and \
         significant ({test}), and no guard ({guards}) is worse by more than \
         EVAL_GUARD_EPSILON {}",
        t.min_rows,
        num(t.floor),
        num(t.min_delta),
        num(t.guard_epsilon),
        score = metric.primary_name(),
    )
}

/// The guards of this metric: `json_validity` (JSON only; lower is worse), `blocked_rate`
/// and `empty_rate` (higher is worse).
fn guards(metric: Metric, candidate: &Scores, champion: &Scores, epsilon: f64) -> Vec<Guard> {
    let mut list = Vec::new();
    if metric == Metric::Json {
        list.push((names::JSON_VALIDITY, true));
    }
    list.push((names::BLOCKED_RATE, false));
    list.push((names::EMPTY_RATE, false));
    list.into_iter()
        .map(|(name, higher_is_better)| {
            let c = candidate.get(name).unwrap_or(0.0);
            let h = champion.get(name).unwrap_or(0.0);
            let worse_by = if higher_is_better { h - c } else { c - h };
            Guard {
                name: name.to_owned(),
                candidate: c,
                champion: h,
                worse_by,
                passed: worse_by <= epsilon + TOLERANCE,
            }
        })
        .collect()
}

/// McNemar's exact one-sided p-value that the candidate is better: `P(X ≥ b)` for
/// `X ~ Binomial(b + c, ½)`, with `b` the rows only the candidate got right and `c` those only
/// the champion got right. 1 when `b` is 0 (including no discordant row). The tail is the
/// regularised incomplete beta function (statrs), accurate far into the tail for any `n`.
pub fn mcnemar_p(candidate_only_right: u64, champion_only_right: u64) -> f64 {
    let b = candidate_only_right;
    let n = b + champion_only_right;
    if b == 0 {
        return 1.0;
    }
    let binomial = Binomial::new(0.5, n).expect("one half is a probability");
    // sf(x) = P(X > x).
    binomial.sf(b - 1).clamp(0.0, 1.0)
}

/// The two-sided percentile interval at `confidence` of the mean of `differences`, over
/// `resamples` resamples with replacement drawn by `StdRng::seed_from_u64(seed)` (the same
/// seed and inputs give the same interval with this build's rand). Quantiles interpolate
/// linearly between order statistics. `[0, 0]` with no differences.
pub fn paired_bootstrap(
    differences: &[f64],
    confidence: f64,
    resamples: u32,
    seed: u64,
) -> [f64; 2] {
    let n = differences.len();
    if n == 0 || resamples == 0 {
        return [0.0, 0.0];
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let total: f64 = (0..n).map(|_| differences[rng.gen_range(0..n)]).sum();
            total / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    [
        quantile(&means, alpha / 2.0),
        quantile(&means, 1.0 - alpha / 2.0),
    ]
}

/// The `q` quantile of sorted, non-empty values, interpolating linearly.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

/// A score in messages: four decimals at most, trailing zeros dropped.
fn num(x: f64) -> String {
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// A difference in messages: signed.
fn signed(x: f64) -> String {
    let text = num(x);
    if text.starts_with('-') || text == "0" {
        text
    } else {
        format!("+{text}")
    }
}

/// A p-value in messages: scientific when tiny.
fn pvalue(p: f64) -> String {
    if p > 0.0 && p < 1e-4 {
        format!("{p:.2e}")
    } else {
        num(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Answer {
        Answer::Text { text: s.to_owned() }
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

    /// Rows of exact-match outcomes: `both` right by both, `cand` only by the candidate,
    /// `champ` only by the champion, `none` by neither.
    struct Outcomes {
        references: Vec<String>,
        candidate: Vec<Answer>,
        champion: Vec<Answer>,
    }

    impl Outcomes {
        fn new(both: usize, cand: usize, champ: usize, none: usize) -> Self {
            let mut o = Outcomes {
                references: Vec::new(),
                candidate: Vec::new(),
                champion: Vec::new(),
            };
            let mut push = |n: usize, c: bool, h: bool| {
                for _ in 0..n {
                    let i = o.references.len();
                    let reference = format!("answer {i}");
                    let answer = |right: bool| {
                        text(&if right {
                            reference.clone()
                        } else {
                            format!("wrong {i}")
                        })
                    };
                    o.candidate.push(answer(c));
                    o.champion.push(answer(h));
                    o.references.push(reference);
                }
            };
            push(both, true, true);
            push(cand, true, false);
            push(champ, false, true);
            push(none, false, false);
            o
        }

        fn paired(&self) -> Vec<Paired<'_>> {
            (0..self.references.len())
                .map(|i| Paired {
                    reference: &self.references[i],
                    candidate: &self.candidate[i],
                    champion: &self.champion[i],
                })
                .collect()
        }
    }

    /// The exact binomial upper tail P(X ≥ b), X ~ Bin(n, ½), from integer coefficients.
    fn exact_tail(b: u64, n: u64) -> f64 {
        let mut coefficient: u128 = 1; // C(n, 0)
        let mut tail: u128 = 0;
        for k in 0..=n {
            if k >= b {
                tail += coefficient;
            }
            coefficient = coefficient * u128::from(n - k) / u128::from(k + 1);
        }
        tail as f64 / 2f64.powi(n as i32)
    }

    #[test]
    #[allow(clippy::float_cmp)] // 1 exactly, by definition.
    fn mcnemar_p_values_match_the_binomial_formula() {
        assert!((mcnemar_p(10, 0) - 1.0 / 1024.0).abs() < 1e-15);
        assert_eq!(mcnemar_p(0, 10), 1.0);
        assert_eq!(mcnemar_p(0, 0), 1.0);
        // b = 8, c = 2: (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 56 / 1024.
        assert!((mcnemar_p(8, 2) - 56.0 / 1024.0).abs() < 1e-12);
        // b = c: a little above one half.
        assert!((mcnemar_p(5, 5) - 638.0 / 1024.0).abs() < 1e-12);
        for (b, c) in [
            (1, 0),
            (3, 7),
            (20, 5),
            (60, 40),
            (70, 30),
            (100, 0),
            (1, 99),
        ] {
            let expected = exact_tail(b, b + c);
            let p = mcnemar_p(b, c);
            assert!(
                (p - expected).abs() <= 1e-10 * expected.max(1e-300) + 1e-15,
                "b {b} c {c}: {p} against {expected}"
            );
        }
        // n = 10,000 stays finite and in range: b = c gives ½ + P(X = 5000)/2, and
        // P(X = 5000) ≈ 1 / √(π · 5000) (Stirling).
        let half = mcnemar_p(5_000, 5_000);
        let expected = 0.5 + 0.5 / (std::f64::consts::PI * 5_000.0).sqrt();
        assert!((half - expected).abs() < 1e-5, "{half} against {expected}");
        let tiny = mcnemar_p(5_400, 4_600);
        assert!(tiny > 0.0 && tiny < 1e-12, "{tiny}");
        assert!(mcnemar_p(10_000, 0) >= 0.0);
        assert!(mcnemar_p(4_600, 5_400) > 0.999_999);
    }

    #[test]
    #[allow(clippy::float_cmp)] // Determinism: the very same numbers.
    fn the_bootstrap_is_deterministic_for_a_seed() {
        let differences: Vec<f64> = (0..200).map(|i| f64::from(i % 7) / 10.0 - 0.25).collect();
        let a = paired_bootstrap(&differences, 0.95, 2_000, 42);
        let b = paired_bootstrap(&differences, 0.95, 2_000, 42);
        let c = paired_bootstrap(&differences, 0.95, 2_000, 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mean = differences.iter().sum::<f64>() / differences.len() as f64;
        assert!(a[0] < mean && mean < a[1], "{a:?} around {mean}");
        // A wider confidence gives a wider interval, from the same draws.
        let wide = paired_bootstrap(&differences, 0.99, 2_000, 42);
        assert!(wide[0] < a[0] && wide[1] > a[1], "{wide:?} against {a:?}");
        // Every row the same difference: the interval is that difference.
        let constant = paired_bootstrap(&[0.25; 40], 0.95, 500, 7);
        assert!((constant[0] - 0.25).abs() < 1e-12 && (constant[1] - 0.25).abs() < 1e-12);
        assert_eq!(paired_bootstrap(&[], 0.95, 2_000, 1), [0.0, 0.0]);
    }

    #[test]
    fn clearly_better_is_blessed() {
        let o = Outcomes::new(50, 25, 2, 23);
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        assert_eq!(blessing.verdict, Verdict::Blessed, "{}", blessing.summary());
        assert!(blessing.blessed() && blessing.reasons.is_empty());
        assert_eq!(blessing.rows, 100);
        assert!((blessing.candidate.primary - 0.75).abs() < 1e-12);
        assert!((blessing.champion.primary - 0.52).abs() < 1e-12);
        assert!((blessing.delta - 0.23).abs() < 1e-12);
        let Test::McnemarExact {
            candidate_only_right,
            champion_only_right,
            p_value,
        } = blessing.test
        else {
            panic!("binary metric, McNemar: {:?}", blessing.test);
        };
        assert_eq!((candidate_only_right, champion_only_right), (25, 2));
        assert!((p_value - exact_tail(25, 27)).abs() < 1e-12);
        assert_eq!(
            blessing
                .guards
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            ["blocked_rate", "empty_rate"]
        );
        assert!(
            blessing.summary().starts_with(
                "BLESSED: exact_match candidate 0.75 vs champion 0.52 (delta +0.23) on 100 rows"
            ),
            "{}",
            blessing.summary()
        );
    }

    #[test]
    fn worse_is_not_blessed() {
        let o = Outcomes::new(50, 2, 25, 23);
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert!(blessing.delta < 0.0);
        assert_eq!(blessing.reasons.len(), 2, "{:?}", blessing.reasons);
        assert!(
            blessing.reasons[0].contains("EVAL_MIN_DELTA 0"),
            "{:?}",
            blessing.reasons
        );
        assert!(
            blessing.reasons[0].contains("-0.23"),
            "{:?}",
            blessing.reasons
        );
        assert!(
            blessing.reasons[1].contains("EVAL_CONFIDENCE"),
            "{:?}",
            blessing.reasons
        );
    }

    #[test]
    #[allow(clippy::float_cmp)] // The same answers: a difference of exactly 0.
    fn equal_is_not_blessed() {
        // The same answers: no discordant row.
        let o = Outcomes::new(70, 0, 0, 30);
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(blessing.delta, 0.0);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(blessing.reasons[0].contains("no row has exactly one model right"));
        // Equal accuracy, different rows.
        let o = Outcomes::new(60, 10, 10, 20);
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert!(
            blessing.reasons[0].contains("not significant"),
            "{:?}",
            blessing.reasons
        );
        // Continuous: the same answers give an interval of [0, 0].
        let references = ["the cat sat on the mat"; 60];
        let answers: Vec<Answer> = (0..60).map(|i| text(["the cat", "a mat"][i % 2])).collect();
        let rows: Vec<Paired<'_>> = references
            .iter()
            .zip(&answers)
            .map(|(r, a)| Paired {
                reference: r,
                candidate: a,
                champion: a,
            })
            .collect();
        let blessing = bless(Metric::RougeL, &rows, &thresholds(), 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert!(matches!(
            blessing.test,
            Test::PairedBootstrap {
                interval: [0.0, 0.0],
                ..
            }
        ));
    }

    #[test]
    fn a_noisy_small_difference_is_not_blessed() {
        // Right/wrong: 2 more right rows out of 100, 6 against 4 discordant: p = 386/1024.
        let o = Outcomes::new(60, 6, 4, 30);
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert!(blessing.delta > 0.0);
        let Test::McnemarExact { p_value, .. } = blessing.test else {
            panic!("McNemar");
        };
        assert!((p_value - 386.0 / 1024.0).abs() < 1e-12);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(
            blessing.reasons[0].contains("0.377"),
            "{:?}",
            blessing.reasons
        );
        assert!(blessing.reasons[0].contains("1 − EVAL_CONFIDENCE = 0.05"));

        // Continuous: the candidate is much better on some rows and much worse on others,
        // a little better on average.
        let reference = "one two three four five six seven eight nine ten";
        let good = text(reference);
        let half = text("one two three four five");
        let mut candidate = Vec::new();
        let mut champion = Vec::new();
        for i in 0..80 {
            let (c, h) = match i % 8 {
                0..=2 => (&good, &half),
                3 | 4 => (&half, &good),
                _ => (&half, &half),
            };
            candidate.push(c);
            champion.push(h);
        }
        // Rows 0 to 2 of 8: +1/3; rows 3 and 4: −1/3; a mean of +1/24.
        let rows: Vec<Paired<'_>> = candidate
            .iter()
            .zip(&champion)
            .map(|(c, h)| Paired {
                reference,
                candidate: c,
                champion: h,
            })
            .collect();
        let blessing = bless(Metric::RougeL, &rows, &thresholds(), 7);
        assert!(blessing.delta > 0.04, "{}", blessing.summary());
        let Test::PairedBootstrap {
            interval,
            resamples,
            seed,
        } = blessing.test
        else {
            panic!("bootstrap");
        };
        assert_eq!((resamples, seed), (2_000, 7));
        assert!(interval[0] < 0.0 && interval[1] > 0.0, "{interval:?}");
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(
            blessing.reasons[0].contains("bootstrap 95% interval"),
            "{:?}",
            blessing.reasons
        );

        // The same rows with the good ones dominating: blessed.
        let mut many = rows.clone();
        many.extend(rows.iter().filter(|r| r.candidate == &good));
        many.extend(rows.iter().filter(|r| r.candidate == &good));
        let blessing = bless(Metric::RougeL, &many, &thresholds(), 7);
        assert_eq!(blessing.verdict, Verdict::Blessed, "{}", blessing.summary());
    }

    #[test]
    fn too_few_rows_is_not_blessed() {
        let o = Outcomes::new(10, 20, 0, 0);
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(
            blessing.reasons[0]
                .starts_with("only 30 rows were scored, fewer than EVAL_MIN_ROWS 50"),
            "{:?}",
            blessing.reasons
        );
        let enough = Thresholds {
            min_rows: 30,
            ..thresholds()
        };
        assert!(bless(Metric::ExactMatch, &o.paired(), &enough, 1).blessed());
    }

    #[test]
    fn under_the_floor_is_not_blessed() {
        let o = Outcomes::new(30, 50, 0, 20);
        let floor = Thresholds {
            floor: 0.9,
            ..thresholds()
        };
        let blessing = bless(Metric::ExactMatch, &o.paired(), &floor, 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(
            blessing.reasons,
            ["the candidate's exact_match 0.8 is below EVAL_FLOOR 0.9"]
        );
        let at = Thresholds {
            floor: 0.8,
            ..thresholds()
        };
        assert!(bless(Metric::ExactMatch, &o.paired(), &at, 1).blessed());
    }

    #[test]
    fn min_delta_applies_to_significant_differences() {
        // +0.2, highly significant, but EVAL_MIN_DELTA asks for 0.3.
        let o = Outcomes::new(50, 20, 0, 30);
        let strict = Thresholds {
            min_delta: 0.3,
            ..thresholds()
        };
        let blessing = bless(Metric::ExactMatch, &o.paired(), &strict, 1);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(blessing.reasons[0].contains("EVAL_MIN_DELTA 0.3"));
        // Exactly the minimum passes (0.2 from 20 / 100, with rounding).
        let exact = Thresholds {
            min_delta: 0.2,
            ..thresholds()
        };
        assert!(bless(Metric::ExactMatch, &o.paired(), &exact, 1).blessed());
    }

    #[test]
    fn a_continuous_interval_must_clear_min_delta() {
        // Field accuracy: the candidate gains 0.5 on half the rows, nothing on the others; a
        // mean gain of 0.25 whose interval reaches below 0.24.
        let reference = r#"{"a": 1, "b": 2}"#;
        let right = text(reference);
        let half = text(r#"{"a": 1}"#);
        let rows: Vec<Paired<'_>> = (0..100)
            .map(|i| Paired {
                reference,
                candidate: if i % 2 == 0 { &right } else { &half },
                champion: &half,
            })
            .collect();
        let strict = Thresholds {
            min_delta: 0.24,
            ..thresholds()
        };
        let blessing = bless(Metric::Json, &rows, &strict, 5);
        assert!((blessing.delta - 0.25).abs() < 1e-12);
        let Test::PairedBootstrap { interval, .. } = blessing.test else {
            panic!("bootstrap");
        };
        assert!(interval[0] > 0.0 && interval[0] < 0.24, "{interval:?}");
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(
            blessing.reasons[0].contains("at least EVAL_MIN_DELTA 0.24"),
            "{:?}",
            blessing.reasons
        );
        let lenient = Thresholds {
            min_delta: 0.1,
            ..thresholds()
        };
        let blessing = bless(Metric::Json, &rows, &lenient, 5);
        assert!(blessing.blessed(), "{}", blessing.summary());
    }

    #[test]
    fn a_guard_regression_is_not_blessed_despite_a_better_score() {
        // The candidate is right on 90 rows and blocked on 10; the champion is right on 60
        // and wrong (but answers) on 40.
        let mut o = Outcomes::new(60, 30, 0, 10);
        for answer in o.candidate.iter_mut().skip(90) {
            *answer = Answer::Blocked {
                reason: "SAFETY".into(),
            };
        }
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        let summary = blessing.summary();
        assert!(
            summary.starts_with("NOT_BLESSED: exact_match candidate 0.9 vs champion 0.6")
                && summary.ends_with("more than EVAL_GUARD_EPSILON 0.02"),
            "{summary}"
        );
        assert!((blessing.delta - 0.3).abs() < 1e-12);
        assert_eq!(blessing.candidate.blocked, 10);
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(
            blessing.reasons[0].contains("EVAL_GUARD_EPSILON 0.02"),
            "{:?}",
            blessing.reasons
        );
        assert!(
            blessing.reasons[0].contains("blocked_rate is 0.1"),
            "{:?}",
            blessing.reasons
        );
        let blocked = &blessing.guards[0];
        assert_eq!(blocked.name, "blocked_rate");
        assert!(!blocked.passed && (blocked.worse_by - 0.1).abs() < 1e-12);
        // Within the epsilon: blessed.
        let lenient = Thresholds {
            guard_epsilon: 0.1,
            ..thresholds()
        };
        assert!(bless(Metric::ExactMatch, &o.paired(), &lenient, 1).blessed());
    }

    #[test]
    fn json_validity_is_a_guard_of_the_json_metric() {
        // The candidate gets more fields right on average but breaks JSON on 10 rows.
        let reference = r#"{"a": 1, "b": 2}"#;
        let right = text(reference);
        let half = text(r#"{"a": 1, "b": 0}"#);
        let broken = text(r#"{"a": 1, "b": "#);
        let candidate: Vec<&Answer> = (0..100)
            .map(|i| if i < 10 { &broken } else { &right })
            .collect();
        let rows: Vec<Paired<'_>> = candidate
            .iter()
            .map(|c| Paired {
                reference,
                candidate: c,
                champion: &half,
            })
            .collect();
        let blessing = bless(Metric::Json, &rows, &thresholds(), 3);
        assert!(blessing.delta > 0.3, "{}", blessing.summary());
        assert_eq!(blessing.verdict, Verdict::NotBlessed);
        assert_eq!(blessing.reasons.len(), 1, "{:?}", blessing.reasons);
        assert!(
            blessing.reasons[0].contains("json_validity is 0.9"),
            "{:?}",
            blessing.reasons
        );
        assert_eq!(blessing.guards[0].name, "json_validity");
        let lenient = Thresholds {
            guard_epsilon: 0.1,
            ..thresholds()
        };
        assert!(bless(Metric::Json, &rows, &lenient, 3).blessed());
    }

    #[test]
    fn the_blessing_serialises_as_blessing_json() {
        let o = Outcomes::new(50, 25, 2, 23);
        let blessing = bless(Metric::ExactMatch, &o.paired(), &thresholds(), 1);
        let json = serde_json::to_value(&blessing).unwrap();
        assert_eq!(json["verdict"], "BLESSED");
        assert_eq!(json["metric"], "exact_match");
        assert_eq!(json["test"]["name"], "mcnemar_exact");
        assert_eq!(json["test"]["candidate_only_right"], 25);
        assert_eq!(json["thresholds"]["min_rows"], 50);
        assert_eq!(json["guards"][0]["name"], "blocked_rate");
        assert!(json["candidate"]["metrics"]["exact_match"].is_number());
        assert!(
            json["rule"]
                .as_str()
                .unwrap()
                .contains("EVAL_GUARD_EPSILON 0.02")
        );
        let back: Blessing = serde_json::from_value(json).unwrap();
        assert_eq!(back, blessing);

        let reference = ["a b c"; 50];
        let answer = text("a b");
        let rows: Vec<Paired<'_>> = reference
            .iter()
            .map(|r| Paired {
                reference: r,
                candidate: &answer,
                champion: &answer,
            })
            .collect();
        let blessing = bless(Metric::RougeL, &rows, &thresholds(), 9);
        let json = serde_json::to_value(&blessing).unwrap();
        assert_eq!(json["verdict"], "NOT_BLESSED");
        assert_eq!(json["test"]["name"], "paired_bootstrap");
        assert_eq!(json["test"]["resamples"], 2_000);
        assert_eq!(json["test"]["interval"].as_array().unwrap().len(), 2);
        let back: Blessing =
            serde_json::from_str(&serde_json::to_string(&blessing).unwrap()).unwrap();
        assert_eq!(back, blessing);
    }

    #[test]
    fn a_test_record_names_what_is_missing() {
        let err = serde_json::from_str::<Test>(r#"{"name": "mcnemar_exact", "p_value": 0.5}"#)
            .unwrap_err();
        assert!(err.to_string().contains("`candidate_only_right`"), "{err}");
        let err = serde_json::from_str::<Test>(r#"{"name": "t_test"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown test `t_test`"), "{err}");
        let test: Test = serde_json::from_str(
            r#"{"name": "paired_bootstrap", "resamples": 10, "seed": 1, "interval": [-0.5, 1e-3]}"#,
        )
        .unwrap();
        assert_eq!(
            test,
            Test::PairedBootstrap {
                resamples: 10,
                seed: 1,
                interval: [-0.5, 0.001]
            }
        );
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(thresholds().check().is_ok());
        let bad = Thresholds {
            confidence: 1.0,
            ..thresholds()
        };
        let err = bad.check().unwrap_err();
        assert_eq!(err.setting, "EVAL_CONFIDENCE");
        assert!(err.to_string().contains("EVAL_CONFIDENCE is 1"), "{err}");
        let bad = Thresholds {
            floor: 1.5,
            ..thresholds()
        };
        assert_eq!(bad.check().unwrap_err().setting, "EVAL_FLOOR");
        let bad = Thresholds {
            guard_epsilon: f64::NAN,
            ..thresholds()
        };
        assert_eq!(bad.check().unwrap_err().setting, "EVAL_GUARD_EPSILON");
    }
}
