//! The report of one validation: counts, findings, the token estimate; as JSON for machines
//! and as plain tables for people. Both come from the same [`Report`] value, so they cannot
//! disagree.

use std::fmt::Write as _;

use serde::Serialize;

use super::estimate::Estimate;
use super::models::Resolved;
use super::rules::{Category, Finding, Findings, Severity};

/// Which dataset a file is; the limits differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    Training,
    Validation,
}

/// Findings of one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryCount {
    pub category: Category,
    pub severity: Severity,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub dataset: Dataset,
    pub model: Resolved,
    /// True when there is no error (warnings allowed).
    pub valid: bool,
    pub bytes: u64,
    pub lines: u64,
    /// Lines that are JSON objects, whether or not they break rules.
    pub examples: u64,
    /// Examples with at least one image, document, audio or video part.
    pub multimodal_examples: u64,
    pub errors: u64,
    pub warnings: u64,
    /// Non-zero categories, errors first, then by count.
    pub by_category: Vec<CategoryCount>,
    /// The first findings in file order (file-level ones first).
    pub findings: Vec<Finding>,
    /// Findings counted but not listed (over MAX_FINDINGS).
    pub findings_not_listed: u64,
    pub estimate: Estimate,
    pub elapsed_seconds: f64,
    pub megabytes_per_second: f64,
    /// Personal data found, per kind: the lines it was found in (never a value).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub personal_data: std::collections::BTreeMap<crate::screen::Kind, u64>,
}

impl Report {
    /// Builds the report; `findings` holds every finding already counted.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        file: String,
        dataset: Dataset,
        model: Resolved,
        findings: Findings,
        bytes: u64,
        lines: u64,
        multimodal_examples: u64,
        estimate: Estimate,
        elapsed_seconds: f64,
    ) -> Self {
        let mut by_category: Vec<CategoryCount> = Category::ALL
            .iter()
            .filter(|c| findings.counts[**c as usize] > 0)
            .map(|&category| CategoryCount {
                category,
                severity: category.severity(),
                count: findings.counts[category as usize],
            })
            .collect();
        by_category.sort_by(|a, b| a.severity.cmp(&b.severity).then(b.count.cmp(&a.count)));
        let errors = findings.count(Severity::Error);
        let warnings = findings.count(Severity::Warning);
        let examples = match dataset {
            Dataset::Training => estimate.train.examples,
            Dataset::Validation => estimate.validation.examples,
        };
        Self {
            file,
            dataset,
            model,
            valid: errors == 0,
            bytes,
            lines,
            examples,
            multimodal_examples,
            errors,
            warnings,
            by_category,
            findings_not_listed: findings.total().saturating_sub(findings.kept.len() as u64),
            findings: findings.kept,
            estimate,
            elapsed_seconds,
            megabytes_per_second: if elapsed_seconds > 0.0 {
                bytes as f64 / 1e6 / elapsed_seconds
            } else {
                0.0
            },
            personal_data: std::collections::BTreeMap::new(),
        }
    }

    /// Exit code of `autotune validate`: 0 without errors, 1 with.
    pub fn exit_code(&self) -> i32 {
        i32::from(!self.valid)
    }

    /// The report as readable tables.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_text(&mut s)
            .expect("writing to a String cannot fail");
        s
    }

    /// The kinds of personal data found and in how many lines (never a value).
    fn write_personal_data(&self, s: &mut String) -> std::fmt::Result {
        if self.personal_data.is_empty() {
            return Ok(());
        }
        let kinds: Vec<String> = self
            .personal_data
            .iter()
            .map(|(k, n)| format!("{k} in {}", plural(*n, "line")))
            .collect();
        writeln!(
            s,
            "  personal data (values not shown): {}",
            kinds.join(", ")
        )
    }

    fn write_text(&self, s: &mut String) -> std::fmt::Result {
        let kind = match self.dataset {
            Dataset::Training => "training",
            Dataset::Validation => "validation",
        };
        writeln!(
            s,
            "{} ({kind} dataset, model {})",
            self.file, self.model.limits.name
        )?;
        writeln!(
            s,
            "  {} bytes, {} lines, {} examples ({} multimodal), {:.2} s, {:.0} MB/s",
            group(self.bytes),
            group(self.lines),
            group(self.examples),
            group(self.multimodal_examples),
            self.elapsed_seconds,
            self.megabytes_per_second
        )?;
        if let Some(w) = self.model.warning() {
            writeln!(s, "  note: {w}")?;
        }
        self.write_personal_data(s)?;
        writeln!(s)?;
        writeln!(
            s,
            "Findings: {}, {}",
            plural(self.errors, "error"),
            plural(self.warnings, "warning")
        )?;
        if !self.by_category.is_empty() {
            let w = self
                .by_category
                .iter()
                .map(|c| name(c.category).len())
                .max()
                .unwrap_or(8)
                .max(8);
            writeln!(
                s,
                "  {:<w$}  {:<8}  {:>10}",
                "category", "severity", "count"
            )?;
            for c in &self.by_category {
                writeln!(
                    s,
                    "  {:<w$}  {:<8}  {:>10}",
                    name(c.category),
                    sev(c.severity),
                    group(c.count)
                )?;
            }
            writeln!(s)?;
            writeln!(s, "First findings:")?;
            let pw = self
                .findings
                .iter()
                .map(|f| f.path.len())
                .max()
                .unwrap_or(4)
                .clamp(4, 48);
            writeln!(
                s,
                "  {:>9}  {:<pw$}  {:<8}  message",
                "line", "path", "severity"
            )?;
            for f in &self.findings {
                let line = f.line.map_or_else(|| "file".to_owned(), |l| l.to_string());
                let path = if f.path.is_empty() { "-" } else { &f.path };
                writeln!(
                    s,
                    "  {line:>9}  {path:<pw$}  {:<8}  {}: {}",
                    sev(f.severity),
                    name(f.category),
                    f.message
                )?;
            }
            if self.findings_not_listed > 0 {
                writeln!(
                    s,
                    "  … and {} more (raise --max-findings to list them)",
                    group(self.findings_not_listed)
                )?;
            }
        }
        writeln!(s)?;
        self.write_estimate(s)?;
        writeln!(s)?;
        if self.valid {
            writeln!(s, "VALID: no errors.")
        } else {
            writeln!(s, "INVALID: {}.", plural(self.errors, "error"))
        }
    }

    fn write_estimate(&self, s: &mut String) -> std::fmt::Result {
        let e = &self.estimate;
        writeln!(
            s,
            "Token estimate (text at 4 characters a token; media at documented rates):"
        )?;
        writeln!(
            s,
            "  {:<10}  {:>10}  {:>14}  {:>10}  {:>10}",
            "dataset", "examples", "tokens", "mean", "max"
        )?;
        for (label, set) in [("training", &e.train), ("validation", &e.validation)] {
            if set.examples > 0 {
                writeln!(
                    s,
                    "  {label:<10}  {:>10}  {:>14}  {:>10}  {:>10}",
                    group(set.examples),
                    group(set.tokens),
                    group(set.mean_example_tokens()),
                    group(set.max_example_tokens)
                )?;
            }
        }
        writeln!(
            s,
            "  billed training tokens: {} ({} epoch{})",
            group(e.training_tokens),
            e.epochs,
            if e.epochs == 1 { "" } else { "s" }
        )?;
        match (e.cost, e.price_per_million_training_tokens) {
            (Some(cost), Some(price)) => writeln!(
                s,
                "  cost: {cost:.4} at {price} per million training tokens"
            )?,
            _ => writeln!(
                s,
                "  cost: set PRICE_PER_MILLION_TRAINING_TOKENS to estimate it"
            )?,
        }
        let set = if e.train.examples > 0 {
            &e.train
        } else {
            &e.validation
        };
        let buckets = set.histogram.buckets();
        if buckets.is_empty() {
            return Ok(());
        }
        writeln!(s)?;
        writeln!(s, "Tokens per example:")?;
        let most = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        for b in buckets {
            let range = match b.to {
                Some(to) => format!("{}–{}", group(b.from), group(to - 1)),
                None => format!("{}+", group(b.from)),
            };
            let bar = "█".repeat(((b.count * 40).div_ceil(most)) as usize);
            writeln!(s, "  {range:>23}  {:>10}  {bar}", group(b.count))?;
        }
        Ok(())
    }
}

fn name(c: Category) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn sev(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// `3 errors`, `1 error`.
fn plural(n: u64, word: &str) -> String {
    format!("{} {word}{}", group(n), if n == 1 { "" } else { "s" })
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::estimate::SetEstimate;
    use crate::validate::models::ModelTable;

    fn report(findings: Findings) -> Report {
        let mut set = SetEstimate::default();
        for t in [3, 3, 200, 5000] {
            set.add(t);
        }
        let estimate = Estimate::new(set, SetEstimate::default(), Some(2), Some(1.5));
        Report::new(
            "x.jsonl".into(),
            Dataset::Training,
            ModelTable::built_in().resolve("gemini-2.5-flash"),
            findings,
            2_000_000,
            4,
            0,
            estimate,
            0.5,
        )
    }

    #[test]
    fn counts_and_tables() {
        let mut f = Findings::new(1);
        f.push(
            Some(2),
            Category::InvalidRole,
            || "contents[1].role".into(),
            || "bad".into(),
        );
        f.push(
            Some(3),
            Category::SnakeCase,
            || "file_data".into(),
            || "snake".into(),
        );
        f.push(
            Some(4),
            Category::SnakeCase,
            || "file_data".into(),
            || "snake".into(),
        );
        let r = report(f);
        assert_eq!(
            (r.errors, r.warnings, r.valid, r.exit_code()),
            (1, 2, false, 1)
        );
        assert_eq!(r.findings_not_listed, 2);
        assert_eq!(
            r.by_category[0].category,
            Category::InvalidRole,
            "errors first"
        );
        assert_eq!(r.by_category[1].count, 2);
        assert!((r.megabytes_per_second - 4.0).abs() < 1e-9);
        let text = r.to_text();
        for want in [
            "invalid_role",
            "contents[1].role",
            "and 2 more",
            "INVALID: 1 error.",
            "2,000,000 bytes",
            "billed training tokens: 10,412 (2 epochs)",
            "cost: 0.0156 at 1.5",
            "4,096–8,191",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["by_category"][0]["category"], "invalid_role");
        assert_eq!(json["findings"][0]["path"], "contents[1].role");
        assert_eq!(json["estimate"]["train"]["histogram"][0]["from"], 2);
        assert_eq!(json["dataset"], "training");
    }

    #[test]
    fn a_clean_file_is_valid() {
        let r = report(Findings::new(10));
        assert_eq!(r.exit_code(), 0);
        assert!(r.to_text().contains("VALID: no errors."));
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
    }
}
