//! The evaluate stage: the frozen evaluation set the build routes out of both files, and, once
//! a tuning job has succeeded, the candidate against the champion on that set, the blessing,
//! and the promotion of a blessed candidate.

use std::sync::Arc;

use crate::dataset::Built;
use crate::evaluate::set::{self, Frozen, Picked, Routing};

use super::{Gates, Job, RunError};

/// EVAL_* settings: the evaluation set and the blessing rule.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// EVAL_RATIO: the share of the digest space a new set is picked from.
    pub ratio: f64,
    /// EVAL_MAX: the most rows a set holds.
    pub max: u64,
    /// `--new-eval-set`: pick a new set in this run.
    pub new_set: bool,
    /// EVAL_MODEL, resolved against the tuner.
    pub model: EvalModel,
    /// EVAL_METRIC; `None`: chosen by the labels.
    pub metric: Option<String>,
    /// EVAL_MIN_ROWS, EVAL_FLOOR, EVAL_MIN_DELTA, EVAL_CONFIDENCE, EVAL_GUARD_EPSILON.
    pub min_rows: u64,
    pub floor: f64,
    pub min_delta: f64,
    pub confidence: f64,
    pub guard_epsilon: f64,
    /// EVAL_CONCURRENCY.
    pub concurrency: usize,
    /// EVAL_GOOGLE_METRICS.
    pub google_metrics: bool,
    /// EVAL_MAX_OUTPUT_TOKENS.
    pub max_output_tokens: u32,
}

/// Which models answer the evaluation rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalModel {
    /// The tuned model's endpoint and the champion's (or the base model's publisher path).
    Vertex,
    /// The rehearsal stand-in of the dry-run tuner.
    Rehearsal,
}

impl Job {
    /// The evaluation set in use, when evaluation is on.
    pub(super) async fn eval_set(&self) -> Result<Option<Frozen>, RunError> {
        if self.config.evaluation.is_none() {
            return Ok(None);
        }
        set::current(&*self.store, &self.config.model_meta_folder)
            .await
            .map_err(|e| RunError::EvalSet(e.to_string()))
    }

    /// How the build routes samples to the evaluation set: the set in use, or a new one
    /// picked from content no earlier run trained on.
    pub(super) fn eval_routing(&self, gates: &Gates, current: Option<&Frozen>) -> Arc<Routing> {
        let Some(eval) = &self.config.evaluation else {
            return Arc::new(Routing::none());
        };
        Arc::new(match current {
            Some(set) if !eval.new_set => Routing::frozen(set),
            _ => Routing::pick(
                eval.ratio,
                eval.max,
                gates
                    .comparison
                    .as_ref()
                    .map(|c| c.trained.clone())
                    .unwrap_or_default(),
            ),
        })
    }

    /// Writes the set a build picked, once: the set in use is kept unless `--new-eval-set`.
    pub(super) async fn freeze_eval_set(
        &self,
        run_id: &str,
        built: &Built,
        current: Option<Frozen>,
    ) -> Result<Option<Frozen>, RunError> {
        let Some(eval) = &self.config.evaluation else {
            return Ok(None);
        };
        let replacing = match current {
            Some(set) if !eval.new_set => return Ok(Some(set)),
            other => other,
        };
        if built.eval_rows.is_empty() {
            tracing::warn!(
                ratio = eval.ratio,
                "no sample fell in the evaluation set (EVAL_RATIO); nothing to evaluate on yet"
            );
            return Ok(replacing);
        }
        let picked = Picked {
            run_id: run_id.to_owned(),
            ratio: eval.ratio,
            max: eval.max,
        };
        let frozen = set::freeze(
            &*self.store,
            &self.config.model_meta_folder,
            built.eval_rows.clone(),
            &picked,
            replacing.as_ref(),
        )
        .await
        .map_err(|e| RunError::EvalSet(e.to_string()))?;
        tracing::info!(
            set = %frozen.info.id,
            rows = frozen.info.rows,
            object = %self.store.uri(&frozen.info.object),
            replaced = frozen.info.replaced.as_deref().unwrap_or("none"),
            "evaluation set frozen: no later run trains or validates on these rows"
        );
        Ok(Some(frozen))
    }
}
