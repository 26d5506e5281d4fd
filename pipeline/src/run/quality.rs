//! The quality stage, on what the build wrote: too many rejects, Vertex's dataset rules (checked
//! line by line as the files were written, so nothing is read back) and the token budget.

use crate::dataset::Built;
use crate::validate::{self, Dataset, Estimate, SetEstimate};

use super::{Gates, Job, RunError};

impl Job {
    /// The checks that stop a run before tuning; returns the token and cost estimate.
    pub(super) fn quality(&self, gates: &Gates, built: &Built) -> Result<Estimate, RunError> {
        self.check_rejects(gates, built)?;
        self.estimate(built)
    }

    /// Fails when more than MAX_REJECTED_RATIO of the samples were rejected.
    pub(super) fn check_rejects(&self, gates: &Gates, built: &Built) -> Result<(), RunError> {
        let considered =
            gates.inventory.samples.len() as u64 + gates.inventory.ambiguous.len() as u64;
        let ratio = built.rejected as f64 / considered.max(1) as f64;
        if ratio > self.config.max_rejected_ratio {
            return Err(RunError::TooManyRejects {
                rejected: built.rejected,
                considered,
                percent: ratio * 100.0,
                max: self.config.max_rejected_ratio,
                where_: built
                    .rejected_uri
                    .clone()
                    .unwrap_or_else(|| "the run's rejected.jsonl".to_owned()),
            });
        }
        Ok(())
    }

    /// The budget gate: MAX_TRAINING_TOKENS.
    pub(super) fn check_budget(&self, estimate: &Estimate) -> Result<(), RunError> {
        match self.config.max_training_tokens {
            Some(max) => estimate
                .exceeds(max)
                .map_or(Ok(()), |over| Err(RunError::OverBudget(over))),
            None => Ok(()),
        }
    }

    /// Vertex's rules on the files written, from the checks made as each line was written.
    pub(super) fn estimate(&self, built: &Built) -> Result<Estimate, RunError> {
        if let Some(w) = self.config.model.warning() {
            tracing::warn!("{w}");
        }
        let mut train = SetEstimate::default();
        let mut validation = SetEstimate::default();
        for (uri, tally, dataset) in [
            (&built.train_uri, &built.train_tally, Dataset::Training),
            (
                &built.validation_uri,
                &built.validation_tally,
                Dataset::Validation,
            ),
        ] {
            let (Some(uri), Some(tally)) = (uri, tally) else {
                continue;
            };
            let config = self.validate_config(dataset);
            let report = validate::report(uri.clone(), &config, tally.clone(), 0.0);
            if !report.valid {
                let first = report.findings.first().map_or_else(String::new, |f| {
                    let line = f.line.map_or_else(String::new, |l| format!("line {l} "));
                    format!("; first: {line}{}: {}", f.path, f.message)
                });
                return Err(RunError::BreaksRules {
                    file: report.file,
                    errors: report.errors,
                    first,
                });
            }
            match dataset {
                Dataset::Training => train = report.estimate.train,
                Dataset::Validation => validation = report.estimate.validation,
            }
        }
        Ok(Estimate::new(
            train,
            validation,
            self.config.epochs,
            self.config.price_per_million_training_tokens,
        ))
    }
}
