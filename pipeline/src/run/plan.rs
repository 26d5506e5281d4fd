//! `autotune plan`: the gates, the quiet wait, the split, the conversion (into a throwaway in-memory store),
//! Vertex's rules and the token estimate, writing nothing to the bucket.

use std::future::pending;
use std::sync::Arc;

use crate::status::RunStatus;
use crate::storage::{Store, memory::MemoryStore};

use super::{Gate, Job, Lock, Outcome, Plan, RunError, Watch};

impl Job {
    /// Gate 1 as `plan` reports it; `Err` when the plan ends there.
    async fn lock_finding(&self) -> Result<String, Outcome> {
        match self.peek_lock().await {
            Lock::Expired { run_id, .. } => Ok(format!(
                "expired lease of run {run_id} (would be taken over)"
            )),
            Lock::Free {
                pending_job: Some(job),
            } => Ok(format!("free; a run would first adopt tuning job {job}")),
            Lock::Free { pending_job: None } => Ok("free".to_owned()),
            lock => Err(Outcome::of_lock(&lock)),
        }
    }

    /// `autotune plan`: what `run` would do now.
    pub async fn plan(&self) -> Outcome {
        let mut outcome = Box::pin(self.plan_stages()).await;
        // The one place the plan learns MIN_SAMPLES, whichever stage ended it.
        outcome.min_samples = self.config.min_samples;
        outcome
    }

    async fn plan_stages(&self) -> Outcome {
        let lock = match self.lock_finding().await {
            Ok(l) => l,
            Err(o) => return o,
        };
        // The quiet stage too: plan says how long a run would wait for uploads to settle.
        let gates = match self.evaluate(None, super::gates::Baseline::Unread).await {
            Ok(Gate::Pass(g)) => match self.settle(&Watch::signal(pending()), g).await {
                Ok(g) => g,
                Err(o) => return *o,
            },
            Ok(Gate::Wait { reason, gates }) => return Outcome::waiting(reason, &gates),
            Err(e) => return Outcome::failed(RunError::from(e).to_string()),
        };
        // A run would fail on a champion pointer it cannot read, before tuning.
        if let Err(e) = self.check_pointer().await {
            return Outcome::failed(e.to_string());
        }
        let seed = self.split_seed(gates.baseline.as_ref());
        let split = self.split(&gates, &seed);
        let (would_train, would_validate, would_hold_out) =
            (split.train(), split.validation(), split.held_out());
        // A damaged set is replaced by the run: the plan shows the set it would pick.
        let eval_set = match self.open_eval_set().await {
            Ok((s, _)) => s,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let routing = self.eval_routing(&gates, eval_set.as_ref());
        // Convert into a throwaway in-memory store: the bucket is only read.
        let sink: Arc<dyn Store> = Arc::new(MemoryStore::named(&format!(
            "plan-{}",
            uuid::Uuid::new_v4().simple()
        )));
        let mut built = match Box::pin(self.convert(
            "plan",
            "plan",
            &gates,
            split,
            routing,
            Some(sink),
        ))
        .await
        {
            Ok(b) => b,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        // The files were made in memory only: name none of them.
        built.train_uri = None;
        built.validation_uri = None;
        built.rejected_uri = None;
        built.index_uri = None;
        let mut problems = Vec::new();
        if let Err(e) = self.check_rejects(&gates, &built) {
            problems.push(e.to_string());
        }
        let estimate = match self.estimate_plan(&built) {
            Ok(e) => {
                if let Err(over) = self.check_budget(&e) {
                    problems.push(over.to_string());
                }
                Some(e)
            }
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        if built.train_examples == 0 {
            problems.push(RunError::NoTrainingExamples.to_string());
        }
        let mut o = Outcome::waiting(String::new(), &gates);
        if problems.is_empty() {
            o.status = RunStatus::Success;
            o.reason = format!(
                "all gates pass: a run would convert {} pairs ({} new or changed) and start tuning with the {} tuner",
                gates.inventory.samples.len(),
                gates.delta,
                self.tuner.kind()
            );
        } else {
            o.status = RunStatus::Failed;
            o.reason = format!("a run would stop before tuning: {}", problems.join("; "));
        }
        o.counts.train = built.train_examples;
        o.counts.validation = built.validation_examples;
        o.counts.held_out = built.held_out;
        o.counts.rejected = built.rejected;
        o.counts
            .rejected_by_category
            .clone_from(&built.rejected_by_category);
        let evaluation = self.eval_cost(eval_set.as_ref(), &built);
        o.plan = Some(Plan {
            lock,
            would_train,
            would_validate,
            would_hold_out,
            split_seed: seed,
            built,
            estimate,
            problems,
            evaluation,
        });
        o
    }

    /// The estimate of files made in memory: their checks are named as the run would name them.
    fn estimate_plan(
        &self,
        built: &crate::dataset::Built,
    ) -> Result<crate::validate::Estimate, RunError> {
        let mut named = crate::dataset::Built {
            train_uri: built
                .train_tally
                .as_ref()
                .map(|_| self.config.train_file.clone()),
            validation_uri: built
                .validation_tally
                .as_ref()
                .filter(|t| t.lines > 0)
                .map(|_| self.config.val_file.clone()),
            ..built.clone()
        };
        if built.train_examples == 0 {
            named.train_uri = None;
        }
        self.estimate(&named)
    }
}
