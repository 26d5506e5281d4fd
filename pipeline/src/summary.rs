//! Readable tables of an [`Outcome`]: what `autotune plan --output text` prints. The JSON
//! output (`--output json`) is the same data for machines.

use std::fmt::Write;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::run::Outcome;
use crate::validate::SetEstimate;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// Renders an outcome as text tables.
pub fn render(o: &Outcome) -> String {
    let mut out = String::new();
    let status = serde_json::to_value(o.status).unwrap_or_default();
    let _ = writeln!(out, "{}: {}\n", status.as_str().unwrap_or("?"), o.reason);

    let mut gates = table(&["gate", "finding"]);
    let lock = o.plan.as_ref().map_or("see reason", |p| p.lock.as_str());
    gates.add_row(vec!["1 lock".to_owned(), lock.to_owned()]);
    gates.add_row(vec![
        "2 validation".to_owned(),
        format!(
            "{} matched pairs (MIN_SAMPLES {})",
            o.counts.pairs, o.min_samples
        ),
    ]);
    let baseline = o
        .baseline_run_id
        .as_deref()
        .map_or_else(|| "no earlier run".to_owned(), |b| format!("since run {b}"));
    gates.add_row(vec![
        "3 delta".to_owned(),
        format!("{} new or changed ({baseline})", o.sample_delta),
    ]);
    if let Some(reason) = &o.quiet_reason {
        gates.add_row(vec!["quiet".to_owned(), reason.clone()]);
    }
    let _ = writeln!(out, "Gates\n{gates}\n");

    let c = &o.counts;
    let mut samples = table(&[
        "pairs",
        "train",
        "validation",
        "held out",
        "rejected",
        "ambiguous",
        "unpaired raw",
        "unpaired labels",
        "ignored",
    ]);
    samples.add_row(
        [
            c.pairs,
            c.train,
            c.validation,
            c.held_out,
            c.rejected,
            c.ambiguous,
            c.unpaired_raw,
            c.unpaired_labels,
            c.ignored,
        ]
        .map(|n| n.to_string())
        .to_vec(),
    );
    let _ = writeln!(out, "Samples\n{samples}");
    if !o.unpaired_examples.is_empty() {
        let _ = writeln!(
            out,
            "unpaired, for example: {}",
            o.unpaired_examples.join(", ")
        );
    }
    out.push('\n');

    if let Some(plan) = &o.plan {
        render_plan(&mut out, plan);
    }
    out
}

/// Rejects, token estimate and problems of a plan.
fn render_plan(out: &mut String, plan: &crate::run::Plan) {
    if !plan.built.rejected_by_category.is_empty() {
        let mut rejects = table(&["category", "samples", "examples"]);
        for (category, n) in &plan.built.rejected_by_category {
            let examples = plan
                .built
                .reject_examples
                .get(category)
                .map_or_else(String::new, |v| {
                    v.iter()
                        .map(|e| format!("{}: {}", e.key, e.reason))
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            let name = serde_json::to_value(category).unwrap_or_default();
            rejects.add_row(vec![
                name.as_str().unwrap_or("?").to_owned(),
                n.to_string(),
                examples,
            ]);
        }
        let _ = writeln!(out, "Rejects\n{rejects}\n");
    }
    if let Some(e) = &plan.estimate {
        let mut tokens = table(&["dataset", "examples", "tokens", "largest example"]);
        for (name, set) in [("training", &e.train), ("validation", &e.validation)] {
            tokens.add_row(vec![
                name.to_owned(),
                set.examples.to_string(),
                set.tokens.to_string(),
                set.max_example_tokens.to_string(),
            ]);
        }
        let cost = e.cost.map_or_else(
            || "set PRICE_PER_MILLION_TRAINING_TOKENS for a cost".to_owned(),
            |c| format!("estimated cost {c:.2}"),
        );
        let _ = writeln!(
            out,
            "Token estimate\n{tokens}\nbilled: {} training tokens × {} epoch(s) = {}; {cost}\n",
            e.train.tokens, e.epochs, e.training_tokens
        );
        let _ = writeln!(out, "Tokens per training example\n{}", histogram(&e.train));
    }
    if let Some(e) = &plan.evaluation {
        let mut t = table(&[
            "evaluation",
            "rows",
            "checkpoints judged",
            "generateContent calls",
            "prompt tokens",
            "answer tokens at most",
        ]);
        t.add_row(vec![
            if e.new_set { "new set" } else { "frozen set" }.to_owned(),
            e.rows.to_string(),
            e.checkpoints.to_string(),
            e.calls.to_string(),
            e.prompt_tokens.to_string(),
            e.max_answer_tokens.to_string(),
        ]);
        let _ = writeln!(
            out,
            "Evaluation of the candidate against the champion\n{t}\neach checkpoint judged and the champion answer every row (EVAL_CHECKPOINTS=last judges the last checkpoint only)\n"
        );
    }
    for p in &plan.problems {
        let _ = writeln!(out, "would stop: {p}");
    }
}

fn histogram(set: &SetEstimate) -> Table {
    let buckets = set.histogram.buckets();
    let most = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    let mut t = table(&["tokens", "examples", ""]);
    for b in buckets {
        let range = b.to.map_or_else(
            || format!("{}+", b.from),
            |to| format!("{}–{}", b.from, to - 1),
        );
        let bar = "█".repeat(usize::try_from(b.count * 40 / most).unwrap_or(40).max(1));
        t.add_row(vec![range, b.count.to_string(), bar]);
    }
    t
}

/// One run in `autotune history`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    pub run_id: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub status: crate::status::RunStatus,
    /// Matched pairs, and those new or changed since the run's baseline.
    pub samples: u64,
    pub new: u64,
    /// Estimated training tokens and cost (when a price was set).
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
    /// The metric and the two scores on the evaluation set.
    pub metric: Option<String>,
    pub candidate: Option<f64>,
    pub champion: Option<f64>,
    pub blessed: Option<bool>,
    pub promoted: Option<bool>,
    /// The checkpoints judged and the winner: `2 of 3` (the winner's id, of how many were
    /// judged), `none of 3`; `None` for a job without intermediate checkpoints.
    pub checkpoint: Option<String>,
    /// Each checkpoint judged, with its score and interval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<String>,
    /// Why it was not blessed or not promoted, or why it failed.
    pub note: Option<String>,
}

impl HistoryRow {
    pub fn of(r: &crate::record::RunRecord) -> Self {
        let e = r.evaluation.as_ref();
        let p = r.promotion.as_ref();
        let estimate = r.estimate.as_ref();
        let note = r
            .error
            .clone()
            .or_else(|| p.and_then(|p| p.reason.clone()))
            .or_else(|| e.and_then(|e| e.reasons.first().cloned()));
        Self {
            run_id: r.run_id.clone(),
            started: r.training_start_time,
            status: r.status,
            samples: r.sample_size,
            new: r.sample_delta,
            tokens: estimate.map(|e| e.training_tokens),
            cost: estimate.and_then(|e| e.cost),
            metric: e.and_then(|e| e.metric.map(|m| m.name().to_owned())),
            candidate: e.and_then(|e| e.candidate.as_ref().map(|c| c.primary)),
            champion: e.and_then(|e| e.champion.as_ref().map(|c| c.primary)),
            blessed: e.and_then(crate::record::EvaluationSummary::blessed),
            promoted: p.map(|p| p.promoted),
            checkpoint: e.and_then(|e| e.checkpoints.as_ref()).map(|c| {
                format!(
                    "{} of {}",
                    c.winner.as_deref().unwrap_or("none"),
                    c.judged.len()
                )
            }),
            checkpoints: e
                .and_then(|e| e.checkpoints.as_ref())
                .map(|c| {
                    c.judged
                        .iter()
                        .map(crate::evaluate::checkpoints::CheckpointScore::line)
                        .collect()
                })
                .unwrap_or_default(),
            note,
        }
    }
}

/// The rows of `autotune history`, from the run records (newest first).
pub fn history(records: &[crate::record::RunRecord]) -> Vec<HistoryRow> {
    records.iter().map(HistoryRow::of).collect()
}

/// `autotune history` as a table, newest first.
pub fn render_history(rows: &[HistoryRow]) -> String {
    let mut t = table(&[
        "run",
        "status",
        "samples",
        "new",
        "tokens",
        "est. cost",
        "metric",
        "candidate",
        "champion",
        "blessed",
        "promoted",
        "checkpoint",
    ]);
    let num = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
    };
    let yes = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    };
    for r in rows {
        t.add_row(vec![
            r.run_id.clone(),
            r.status.as_str().to_owned(),
            r.samples.to_string(),
            r.new.to_string(),
            r.tokens.map_or_else(|| "–".to_owned(), |t| t.to_string()),
            num(r.cost, 2),
            r.metric.clone().unwrap_or_else(|| "–".to_owned()),
            num(r.candidate, 3),
            num(r.champion, 3),
            yes(r.blessed).to_owned(),
            yes(r.promoted).to_owned(),
            r.checkpoint.clone().unwrap_or_else(|| "–".to_owned()),
        ]);
    }
    let mut out = format!("{t}\n");
    for r in rows {
        if let Some(note) = &r.note {
            let _ = writeln!(out, "{}: {note}", r.run_id);
        }
        for line in &r.checkpoints {
            let _ = writeln!(out, "{}: {line}", r.run_id);
        }
    }
    out
}

/// The model table as `autotune models` prints it: where each model is tuned and served, its
/// dates and successor, and the pages that say so.
pub fn render_models(models: &[crate::validate::ModelLimits]) -> String {
    let mut t = table(&[
        "model",
        "tuning regions",
        "tuned model served",
        "base model served",
        "released",
        "retires",
        "successor",
    ]);
    let scopes = |s: &[crate::locations::Scope]| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let date = |d: Option<chrono::NaiveDate>| d.map_or_else(|| "–".to_owned(), |d| d.to_string());
    for m in models {
        let name = if m.assumed {
            format!("{} (assumed)", m.name)
        } else {
            m.name.clone()
        };
        t.add_row(vec![
            name,
            if m.tuning_regions.is_empty() {
                "any (not stated)".to_owned()
            } else {
                m.tuning_regions.join(", ")
            },
            scopes(&m.tuned_serving),
            scopes(&m.base_serving),
            date(m.released),
            date(m.retires),
            m.successor.clone().unwrap_or_else(|| "–".to_owned()),
        ]);
    }
    let mut out = format!("{t}\n");
    for m in models {
        let _ = writeln!(out, "{}: {}", m.name, m.source);
        if !m.locations_source.is_empty() {
            let _ = writeln!(out, "  where it lives: {}", m.locations_source);
        }
    }
    out
}
