//! Scoring answers against references: exact match, JSON validity and per-field accuracy,
//! class accuracy and macro-F1, ROUGE-L. Pure functions; no I/O.
//!
//! Every row gets one score in `[0, 1]` ([`row_score`]); a model's scores over the evaluation
//! set are gathered by [`aggregate`] into [`Scores`]. Blocked and empty answers score 0 under
//! every metric and are counted apart (`blocked_rate`, `empty_rate`).
//!
//! # The metrics
//!
//! * **`exact_match`**: the answer equals the reference after [`normalize`] (trim, whitespace
//!   runs collapsed to one space, Unicode lower-case). Always reported, whatever the metric.
//! * **json**: `json_validity` is the fraction of answers that parse as JSON ([`parse_json`]:
//!   an answer that is exactly one fenced block, ```` ```json … ``` ```` or ```` ``` … ``` ````,
//!   counts as the block's content). `field_accuracy` is the mean over rows of the fraction of
//!   the reference's top-level fields (of an object) or elements (of an array, by position)
//!   that the answer has equal ([`json_equal`]: JSON value equality, numbers compared as
//!   decimal numbers, so `1`, `1.0` and `1e0` are equal). Fields or elements the answer has
//!   beyond the reference's are not penalised. A reference that is a JSON scalar scores 1 when
//!   equal; a reference that is not JSON at all (`EVAL_METRIC=json` forced on free text) falls
//!   back to exact match. An answer that is not JSON scores 0.
//! * **class**: a row is right when the normalised answer equals the normalised reference
//!   label. `accuracy` is the fraction right; `macro_f1` is the unweighted mean of the
//!   per-class F1 over every class seen in the references or in the (text) answers. A blocked
//!   or empty answer predicts no class: it is a miss for the reference's class and a false
//!   positive for none.
//! * **`rouge_l`**: the ROUGE-L F-measure (β = 1) of the longest common subsequence of word
//!   tokens, the tokens being the runs of alphanumeric characters of the lower-cased text
//!   ([`rouge_l`]). The cross-check is Google's `evaluateInstances` with `rougeInput`
//!   (`rougeType` `rougeL`, `useStemmer` false), whose tokenizer keeps ASCII `[a-z0-9]` runs
//!   only: on ASCII text the two agree; on other scripts ours keeps the letters Google drops.
//!   Like Google's, a row where either side has no token scores 0.
//!
//! # Choosing the metric (`EVAL_METRIC=auto`)
//!
//! [`Metric::choose`] looks at the references only, in this order:
//! 1. every reference parses as a JSON object or array → [`Metric::Json`];
//! 2. every reference is short (at most [`SHORT_WORDS`] words) and they form a label set: at
//!    most [`CLASS_MAX_DISTINCT`] distinct normalised values, and at most half as many distinct
//!    values as rows (each label recurs on average) → [`Metric::Class`];
//! 3. every reference is short → [`Metric::ExactMatch`];
//! 4. otherwise (free text) → [`Metric::RougeL`].
//!
//! No references at all choose [`Metric::ExactMatch`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Answer;

/// The most words a reference may have to count as short (a label or a short answer).
pub const SHORT_WORDS: usize = 5;
/// The most distinct labels a class label set may have.
pub const CLASS_MAX_DISTINCT: usize = 50;

/// Names of the entries of [`Scores::metrics`].
pub mod names {
    /// Fraction of answers equal to the reference after normalisation (always present).
    pub const EXACT_MATCH: &str = "exact_match";
    /// Fraction of answers that parse as JSON (JSON metric; a guard).
    pub const JSON_VALIDITY: &str = "json_validity";
    /// Mean per-row fraction of the reference's fields the answer has equal (JSON metric).
    pub const FIELD_ACCURACY: &str = "field_accuracy";
    /// Fraction of rows whose label is right (class metric).
    pub const ACCURACY: &str = "accuracy";
    /// Unweighted mean of the per-class F1 (class metric).
    pub const MACRO_F1: &str = "macro_f1";
    /// Mean ROUGE-L F-measure (free-text metric).
    pub const ROUGE_L: &str = "rouge_l";
    /// Fraction of answers blocked for safety (always present; a guard).
    pub const BLOCKED_RATE: &str = "blocked_rate";
    /// Fraction of empty answers (always present; a guard).
    pub const EMPTY_RATE: &str = "empty_rate";
}

/// How answers are scored against references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Normalised text equality (short answers).
    ExactMatch,
    /// JSON validity and per-field accuracy (structured answers).
    Json,
    /// Accuracy and macro-F1 over a label set.
    Class,
    /// ROUGE-L F-measure (free text).
    RougeL,
}

impl Metric {
    /// Every metric, in the order of their names in messages.
    pub const ALL: [Metric; 4] = [Self::ExactMatch, Self::Json, Self::Class, Self::RougeL];

    /// The metric's name, as serialised and as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Self::ExactMatch => "exact_match",
            Self::Json => "json",
            Self::Class => "class",
            Self::RougeL => "rouge_l",
        }
    }

    /// The name of this metric's primary score in [`Scores::metrics`].
    pub fn primary_name(self) -> &'static str {
        match self {
            Self::ExactMatch => names::EXACT_MATCH,
            Self::Json => names::FIELD_ACCURACY,
            Self::Class => names::ACCURACY,
            Self::RougeL => names::ROUGE_L,
        }
    }

    /// Parses a setting that may also say `auto` (returned as `None`: the caller then uses
    /// [`Metric::choose`]). Case and surrounding whitespace are ignored.
    pub fn parse_or_auto(value: &str) -> Result<Option<Metric>, UnknownMetric> {
        if value.trim().eq_ignore_ascii_case("auto") {
            Ok(None)
        } else {
            value.parse().map(Some)
        }
    }

    /// The metric for these references (`EVAL_METRIC=auto`); the rule is in the module docs.
    pub fn choose(references: &[&str]) -> Metric {
        if references.is_empty() {
            return Self::ExactMatch;
        }
        let structured = references
            .iter()
            .all(|r| matches!(parse_json(r), Some(Value::Object(_) | Value::Array(_))));
        if structured {
            return Self::Json;
        }
        if !references
            .iter()
            .all(|r| r.split_whitespace().count() <= SHORT_WORDS)
        {
            return Self::RougeL;
        }
        let distinct: BTreeSet<String> = references.iter().map(|r| normalize(r)).collect();
        if distinct.len() <= CLASS_MAX_DISTINCT && distinct.len() * 2 <= references.len() {
            Self::Class
        } else {
            Self::ExactMatch
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metric name that is not one of `exact_match`, `json`, `class`, `rouge_l`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric `{0}`: expected exact_match, json, class or rouge_l")]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;

    /// Accepts the serialised names, ignoring case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownMetric(s.to_owned()))
    }
}

/// Whether the metric's row scores are right/wrong (0 or 1): exact match and class. Binary
/// metrics are compared with McNemar's test, the others with a paired bootstrap.
pub fn is_binary(metric: Metric) -> bool {
    matches!(metric, Metric::ExactMatch | Metric::Class)
}

/// The text as exact match and class labels compare it: trimmed, every run of Unicode
/// whitespace collapsed to one space, Unicode lower-case.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The JSON value of a text: the whole trimmed text, or, when the text is exactly one fenced
/// block (```` ```json ```` or a bare ```` ``` ```` opening line, a closing ```` ``` ````
/// line), the block's content. `None` when neither parses.
pub fn parse_json(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(value) = serde_json::from_str(text) {
        return Some(value);
    }
    let inner = text.strip_prefix("```")?.strip_suffix("```")?;
    let (tag, body) = inner.split_once('\n')?;
    let tag = tag.trim();
    if !(tag.is_empty() || tag.eq_ignore_ascii_case("json")) {
        return None;
    }
    serde_json::from_str(body.trim()).ok()
}

/// JSON value equality with numbers compared as decimal numbers (`1`, `1.0`, `1e0` and
/// `10E-1` are equal; `-0` equals `0`), exactly, whatever their size.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.to_string(), y.to_string());
            x == y || matches!((decimal(&x), decimal(&y)), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A JSON number's text as `(negative, significant digits, exponent)`, the value being
/// `±0.DIGITS × 10^exponent`, with no leading or trailing zero digit (zero: no digits).
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut exponent = exponent.checked_add(i64::try_from(int.len()).ok()?)?;
    let digits = format!("{int}{frac}");
    let trimmed = digits.trim_start_matches('0');
    exponent -= i64::try_from(digits.len() - trimmed.len()).ok()?;
    let digits = trimmed.trim_end_matches('0');
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    Some((negative, digits.to_owned(), exponent))
}

/// The fraction of the reference's top-level fields (object) or elements (array, by
/// position) that the answer has equal; 0 when the answer is not JSON. The rules for scalar
/// and non-JSON references are in the module docs.
pub fn field_accuracy(reference: &str, answer: &str) -> f64 {
    let Some(expected) = parse_json(reference) else {
        return binary(normalize(reference) == normalize(answer));
    };
    let Some(given) = parse_json(answer) else {
        return 0.0;
    };
    match (&expected, &given) {
        (Value::Object(want), _) if !want.is_empty() => {
            let have = given.as_object();
            let equal = want
                .iter()
                .filter(|(k, v)| {
                    have.and_then(|h| h.get(k.as_str()))
                        .is_some_and(|w| json_equal(v, w))
                })
                .count();
            equal as f64 / want.len() as f64
        }
        (Value::Array(want), _) if !want.is_empty() => {
            let have = given.as_array();
            let equal = want
                .iter()
                .enumerate()
                .filter(|(i, v)| {
                    have.and_then(|h| h.get(*i))
                        .is_some_and(|w| json_equal(v, w))
                })
                .count();
            equal as f64 / want.len() as f64
        }
        // Scalars, `{}` and `[]`: all or nothing.
        _ => binary(json_equal(&expected, &given)),
    }
}

/// The ROUGE-L F-measure (β = 1) of the answer against the reference: with `L` the length of
/// the longest common subsequence of their tokens, `P = L / |answer|`, `R = L / |reference|`,
/// `F = 2PR / (P + R)`; 0 when either has no token or nothing is in common.
pub fn rouge_l(reference: &str, answer: &str) -> f64 {
    let reference = tokens(reference);
    let answer = tokens(answer);
    let common = lcs_len(&reference, &answer);
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / answer.len() as f64;
    let recall = common as f64 / reference.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Lower-cased runs of alphanumeric characters.
fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The length of the longest common subsequence (two rows of the dynamic programme).
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            current[j + 1] = if x == y {
                previous[j] + 1
            } else {
                current[j].max(previous[j + 1])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

fn binary(right: bool) -> f64 {
    if right { 1.0 } else { 0.0 }
}

/// One row's score in `[0, 1]`: 0 or 1 for exact match and class, the field accuracy for
/// JSON, the ROUGE-L F-measure for free text. A blocked or empty answer scores 0.
pub fn row_score(metric: Metric, reference: &str, answer: &Answer) -> f64 {
    let Some(text) = answer.text() else {
        return 0.0;
    };
    match metric {
        Metric::ExactMatch | Metric::Class => binary(normalize(reference) == normalize(text)),
        Metric::Json => field_accuracy(reference, text),
        Metric::RougeL => rouge_l(reference, text),
    }
}

/// One model's scores over the evaluation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Rows scored.
    pub rows: u64,
    /// The metric's primary score: `exact_match`, `field_accuracy`, `accuracy` or `rouge_l`.
    pub primary: f64,
    /// Every score by name ([`names`]): `exact_match`, `blocked_rate` and `empty_rate` always;
    /// `json_validity` and `field_accuracy` (json); `accuracy` and `macro_f1` (class);
    /// `rouge_l` (free text). All in `[0, 1]`.
    pub metrics: BTreeMap<String, f64>,
    /// Answers blocked for safety.
    pub blocked: u64,
    /// Empty answers.
    pub empty: u64,
}

impl Scores {
    /// A score by name ([`names`]).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
}

/// Scores a model's answers against the references (row `i` answers reference `i`). With no
/// rows every score is 0.
///
/// # Panics
///
/// When the two slices differ in length.
pub fn aggregate(metric: Metric, references: &[&str], answers: &[&Answer]) -> Scores {
    assert_eq!(references.len(), answers.len(), "one answer per reference");
    let rows = references.len();
    let mean = |score: &dyn Fn(&str, &Answer) -> f64| -> f64 {
        if rows == 0 {
            return 0.0;
        }
        let total: f64 = references
            .iter()
            .zip(answers)
            .map(|(r, a)| score(r, a))
            .sum();
        total / rows as f64
    };
    let count = |f: fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count() as u64;
    let blocked = count(|a| matches!(a, Answer::Blocked { .. }));
    let empty = count(|a| matches!(a, Answer::Empty));
    let rate = |n: u64| {
        if rows == 0 {
            0.0
        } else {
            n as f64 / rows as f64
        }
    };

    let mut metrics = BTreeMap::new();
    let mut put = |name: &str, value: f64| {
        metrics.insert(name.to_owned(), value);
        value
    };
    let exact = put(
        names::EXACT_MATCH,
        mean(&|r, a| row_score(Metric::ExactMatch, r, a)),
    );
    put(names::BLOCKED_RATE, rate(blocked));
    put(names::EMPTY_RATE, rate(empty));
    let primary = match metric {
        Metric::ExactMatch => exact,
        Metric::Json => {
            put(
                names::JSON_VALIDITY,
                mean(&|_, a| binary(a.text().and_then(parse_json).is_some())),
            );
            put(
                names::FIELD_ACCURACY,
                mean(&|r, a| row_score(Metric::Json, r, a)),
            )
        }
        Metric::Class => {
            put(names::MACRO_F1, macro_f1(references, answers));
            put(
                names::ACCURACY,
                mean(&|r, a| row_score(Metric::Class, r, a)),
            )
        }
        Metric::RougeL => put(
            names::ROUGE_L,
            mean(&|r, a| row_score(Metric::RougeL, r, a)),
        ),
    };
    Scores {
        rows: rows as u64,
        primary,
        metrics,
        blocked,
        empty,
    }
}

/// The unweighted mean over the classes seen in the references or the text answers
/// (normalised) of `F1 = 2·TP / (2·TP + FP + FN)`; 0 with no rows.
fn macro_f1(references: &[&str], answers: &[&Answer]) -> f64 {
    // Per class: (true positives, false positives, false negatives).
    let mut counts: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for (reference, answer) in references.iter().zip(answers) {
        let want = normalize(reference);
        let got = answer.text().map(normalize);
        if got.as_deref() == Some(want.as_str()) {
            counts.entry(want).or_default().0 += 1;
        } else {
            counts.entry(want).or_default().2 += 1;
            if let Some(got) = got {
                counts.entry(got).or_default().1 += 1;
            }
        }
    }
    if counts.is_empty() {
        return 0.0;
    }
    let total: f64 = counts
        .values()
        .map(|&(tp, fp, fn_)| 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64)
        .sum();
    total / counts.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Answer {
        Answer::Text { text: s.to_owned() }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for metric in Metric::ALL {
            let json = serde_json::to_string(&metric).unwrap();
            assert_eq!(json, format!("\"{}\"", metric.name()));
            assert_eq!(serde_json::from_str::<Metric>(&json).unwrap(), metric);
            assert_eq!(metric.name().parse::<Metric>().unwrap(), metric);
        }
        assert_eq!(Metric::RougeL.name(), "rouge_l");
        assert_eq!(" ROUGE_L ".parse::<Metric>().unwrap(), Metric::RougeL);
        let err = "bleu".parse::<Metric>().unwrap_err();
        assert!(err.to_string().contains("`bleu`"), "{err}");
        assert!("auto".parse::<Metric>().is_err());
        assert_eq!(Metric::parse_or_auto("Auto").unwrap(), None);
        assert_eq!(Metric::parse_or_auto("class").unwrap(), Some(Metric::Class));
        assert!(Metric::parse_or_auto("f1").is_err());
    }

    #[test]
    fn choose_follows_the_documented_order() {
        assert_eq!(
            Metric::choose(&[r#"{"a": 1}"#, "[1, 2]", "```json\n{\"b\": 2}\n```"]),
            Metric::Json
        );
        // A JSON scalar is not structured.
        assert_eq!(Metric::choose(&[r#"{"a": 1}"#, "3"]), Metric::ExactMatch);
        let labels = [
            "positive",
            "Negative",
            "negative ",
            "positive",
            "neutral",
            "neutral",
        ];
        assert_eq!(Metric::choose(&labels), Metric::Class);
        // Distinct values more than half the rows: short answers, not a label set.
        assert_eq!(
            Metric::choose(&["Paris", "Rome", "Berlin", "Paris"]),
            Metric::ExactMatch
        );
        // More than 50 distinct labels is not a label set, even if each recurs.
        let many: Vec<String> = (0..51).map(|i| format!("label {i}")).collect();
        let rows: Vec<&str> = many.iter().chain(&many).map(String::as_str).collect();
        assert_eq!(Metric::choose(&rows), Metric::ExactMatch);
        let fifty: Vec<&str> = rows.iter().copied().filter(|r| *r != "label 50").collect();
        assert_eq!(Metric::choose(&fifty), Metric::Class);
        // One reference longer than five words makes it free text.
        assert_eq!(
            Metric::choose(&["yes", "yes", "no", "it is not possible to say"]),
            Metric::RougeL
        );
        assert_eq!(
            Metric::choose(&[
                "yes",
                "no",
                "no",
                "it is not possible",
                "yes",
                "it is not possible"
            ]),
            Metric::Class
        );
        assert_eq!(Metric::choose(&[]), Metric::ExactMatch);
    }

    #[test]
    fn exact_match_normalises_whitespace_and_unicode_case() {
        assert_eq!(normalize("  Hello \t\n  WORLD  "), "hello world");
        assert_eq!(normalize("ÉCOLE\u{00a0}Straße"), "école straße");
        let score = |r, a| row_score(Metric::ExactMatch, r, &text(a));
        assert!(close(score("Hello world", " hello\n  WORLD "), 1.0));
        assert!(close(score("ÉCOLE", "école"), 1.0));
        assert!(close(score("hello world", "hello world."), 0.0));
        assert!(close(score("helloworld", "hello world"), 0.0));
        let blocked = Answer::Blocked {
            reason: "SAFETY".into(),
        };
        assert!(close(row_score(Metric::ExactMatch, "", &blocked), 0.0));
        assert!(close(
            row_score(Metric::ExactMatch, "", &Answer::Empty),
            0.0
        ));
        assert!(close(row_score(Metric::ExactMatch, "", &text("")), 1.0));
        assert!(is_binary(Metric::ExactMatch) && is_binary(Metric::Class));
        assert!(!is_binary(Metric::Json) && !is_binary(Metric::RougeL));
    }

    #[test]
    fn json_fields_are_compared_as_values() {
        let reference = r#"{"name": "Ada", "age": 36, "tags": ["a", "b"], "ok": true}"#;
        // All four equal, in another order and spacing, numbers written differently.
        assert!(close(
            field_accuracy(
                reference,
                r#"{"ok":true,"tags":["a","b"],"age":36.0,"name":"Ada"}"#
            ),
            1.0
        ));
        // Fenced block counts as its content; extra fields are not penalised.
        assert!(close(
            field_accuracy(
                reference,
                "```json\n{\"name\": \"Ada\", \"age\": 3.6e1, \"tags\": [\"b\", \"a\"], \"extra\": 1}\n```"
            ),
            0.5
        ));
        assert!(close(
            field_accuracy(reference, "```\n{\"name\": \"Ada\"}\n```"),
            0.25
        ));
        // Not JSON, a fence of another language, text around the block: 0.
        assert!(close(field_accuracy(reference, "name: Ada, age: 36"), 0.0));
        assert!(close(
            field_accuracy(reference, "```python\n{\"name\": \"Ada\"}\n```"),
            0.0
        ));
        assert!(close(
            field_accuracy(reference, "Here it is:\n```json\n{\"name\": \"Ada\"}\n```"),
            0.0
        ));
        // Arrays by position; a wrong type scores 0.
        assert!(close(field_accuracy("[1, 2, 3, 4]", "[1, 2, 4, 3]"), 0.5));
        assert!(close(field_accuracy("[1, 2]", r#"{"0": 1}"#), 0.0));
        assert!(close(field_accuracy(r#"{"a": 1}"#, "[1]"), 0.0));
        assert!(close(field_accuracy("{}", "{}"), 1.0));
        assert!(close(field_accuracy("{}", r#"{"a": 1}"#), 0.0));
        // Non-JSON reference: exact match.
        assert!(close(field_accuracy("Paris", " paris "), 1.0));
    }

    #[test]
    fn json_numbers_compare_as_decimals_exactly() {
        let eq = |a: &str, b: &str| {
            json_equal(
                &serde_json::from_str(a).unwrap(),
                &serde_json::from_str(b).unwrap(),
            )
        };
        assert!(eq("1", "1.0"));
        assert!(eq("100", "1e2"));
        assert!(eq("0.5", "5E-1"));
        assert!(eq("-0", "0.000"));
        assert!(eq("120", "1.20e+2"));
        assert!(eq("1E+400", "10E+399"));
        assert!(!eq("1", "-1"));
        assert!(!eq("1.5", "15"));
        // Beyond f64 precision, still exact.
        assert!(!eq("12345678901234567890123", "12345678901234567890124"));
        assert!(eq("12345678901234567890123", "1.2345678901234567890123e22"));
        assert!(!eq("1", "\"1\""));
        assert!(eq(r#"{"a": [1, {"b": 2.0}]}"#, r#"{"a": [1.0, {"b": 2}]}"#));
        assert!(!eq(r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#));
    }

    #[test]
    fn json_aggregate_reports_validity_and_field_accuracy() {
        let references = [r#"{"a": 1, "b": 2}"#; 4];
        let answers = [
            text(r#"{"a": 1, "b": 2}"#),
            text("```json\n{\"a\": 1, \"b\": 3}\n```"),
            text("not json"),
            Answer::Blocked {
                reason: "SAFETY".into(),
            },
        ];
        let answers: Vec<&Answer> = answers.iter().collect();
        let scores = aggregate(Metric::Json, &references, &answers);
        assert_eq!(scores.rows, 4);
        assert!(close(scores.get(names::JSON_VALIDITY).unwrap(), 0.5));
        assert!(close(scores.get(names::FIELD_ACCURACY).unwrap(), 1.5 / 4.0));
        assert!(close(scores.primary, 1.5 / 4.0));
        assert!(close(scores.get(names::EXACT_MATCH).unwrap(), 0.25));
        assert!(close(scores.get(names::BLOCKED_RATE).unwrap(), 0.25));
        assert!(close(scores.get(names::EMPTY_RATE).unwrap(), 0.0));
        assert_eq!((scores.blocked, scores.empty), (1, 0));
        assert_eq!(
            scores
                .metrics
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            [
                "blocked_rate",
                "empty_rate",
                "exact_match",
                "field_accuracy",
                "json_validity"
            ]
        );
    }

    #[test]
    fn class_accuracy_and_macro_f1_on_a_small_confusion() {
        // The empty answer is a miss for b and a false positive for no class; d is only
        // predicted, never a reference.
        let references = ["a", "a", "A", "b", "b", "c", "a", "b"];
        let answers = [
            text("a"),
            text(" a "),
            text("b"),
            text("B"),
            text("b"),
            text("a"),
            text("d"),
            Answer::Empty,
        ];
        let answers: Vec<&Answer> = answers.iter().collect();
        let scores = aggregate(Metric::Class, &references, &answers);
        // a: TP 2 (rows 0, 1), FN 2 (rows 2, 6), FP 1 (row 5) → 4/7.
        // b: TP 2 (rows 3, 4), FN 1 (row 7), FP 1 (row 2) → 4/6.
        // c: FN 1 → 0. d: FP 1 → 0.
        let expected = (4.0 / 7.0 + 4.0 / 6.0 + 0.0 + 0.0) / 4.0;
        assert!(
            close(scores.get(names::MACRO_F1).unwrap(), expected),
            "{scores:?}"
        );
        assert!(close(scores.primary, 4.0 / 8.0));
        assert!(close(scores.get(names::ACCURACY).unwrap(), 0.5));
        assert!(close(scores.get(names::EMPTY_RATE).unwrap(), 1.0 / 8.0));
        assert_eq!(scores.empty, 1);
        // All right: macro-F1 is 1.
        let perfect: Vec<Answer> = references.iter().map(|r| text(r)).collect();
        let perfect: Vec<&Answer> = perfect.iter().collect();
        let scores = aggregate(Metric::Class, &references, &perfect);
        assert!(close(scores.get(names::MACRO_F1).unwrap(), 1.0));
    }

    #[test]
    fn rouge_l_on_textbook_pairs() {
        // Lin (2004), section 3.1: S1 against S2 and S3.
        let s1 = "police killed the gunman";
        assert!(close(rouge_l(s1, "police kill the gunman"), 0.75));
        assert!(close(rouge_l(s1, "the gunman kill police"), 0.5));
        // The example of Google's rouge-score README: P 5/8, R 5/9.
        let f = rouge_l(
            "The quick brown fox jumps over the lazy dog",
            "The quick brown dog jumps on the log.",
        );
        let (p, r) = (5.0 / 8.0, 5.0 / 9.0);
        assert!(close(f, 2.0 * p * r / (p + r)), "{f}");
        assert!((f - 0.588_235).abs() < 1e-6);
        // Case and punctuation are not tokens; nothing in common or no tokens: 0.
        assert!(close(rouge_l("Hello, World!", "hello world"), 1.0));
        assert!(close(rouge_l("alpha beta", "gamma"), 0.0));
        assert!(close(rouge_l("", ""), 0.0));
        assert!(close(rouge_l("...", "..."), 0.0));
        // Non-ASCII letters are tokens.
        assert!(close(rouge_l("Ünïcode façade", "ünïcode façade"), 1.0));
        let scores = aggregate(
            Metric::RougeL,
            &[s1, s1],
            &[&text("police kill the gunman"), &Answer::Empty],
        );
        assert!(close(scores.primary, 0.375));
        assert!(close(scores.get(names::ROUGE_L).unwrap(), 0.375));
    }

    #[test]
    fn no_rows_scores_zero_without_nan() {
        for metric in Metric::ALL {
            let scores = aggregate(metric, &[], &[]);
            assert_eq!(scores.rows, 0);
            assert!(scores.metrics.values().all(|v| *v == 0.0), "{scores:?}");
            assert!(scores.metrics.contains_key(metric.primary_name()));
        }
    }
}
