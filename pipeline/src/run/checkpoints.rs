//! Every checkpoint is a contestant (`evaluate::checkpoints`): the checkpoints of a tuned model
//! that EVAL_CHECKPOINTS picks are each judged against the champion on the frozen rows (the
//! champion answers once, its answers read back for each checkpoint), the Holm-corrected rule
//! picks the winner, and a promoted winner becomes its model version's default checkpoint
//! (`models.patch`, `updateMask=defaultCheckpointId`). Checkpoints that lost are left as Vertex
//! keeps them.
//!
//! Answers are stored per checkpoint, the champion's once:
//!
//! ```text
//! {run}/eval_responses/champion/…                      the champion, asked once
//! {run}/eval_responses/checkpoint-{id}/candidate/…     each checkpoint
//! ```

use crate::champion::Champion;
use crate::evaluate::Row;
use crate::evaluate::checkpoints::{Checkpoint, CheckpointsSummary, choose};
use crate::evaluate::contestants::CandidateRun;
use crate::evaluate::infer::Totals;
use crate::record::EvalSpend;
use crate::storage;

use super::evaluate::{Asked, BOOTSTRAP_SEED, Evaluation, Judged};
use super::{Job, RESPONSES_FOLDER};

/// The checkpoints of a candidate that are judged.
#[derive(Debug, Clone, Default)]
pub(super) struct Contestants {
    /// The candidate at each checkpoint picked, in training order (empty: the job kept no
    /// checkpoints, the candidate itself is judged).
    pub(super) judged: Vec<Champion>,
    /// Those checkpoints, in the same order.
    pub(super) checkpoints: Vec<Checkpoint>,
    /// How many the job reported.
    pub(super) reported: usize,
}

impl Job {
    /// How many checkpoints of a candidate an evaluation judges (`autotune plan`): EPOCHS of
    /// them (the rehearsal's three when unset; on Vertex AI the most it saves, ten), bounded
    /// by EVAL_CHECKPOINTS.
    pub(super) fn checkpoints_judged(&self, eval: &Evaluation) -> u32 {
        let epochs = self
            .config
            .request
            .epochs
            .or((self.tuner.kind() == crate::tuner::TunerKind::DryRun)
                .then_some(crate::evaluate::contestants::REHEARSAL_EPOCHS));
        eval.checkpoints.expected(epochs)
    }

    /// The checkpoints of `candidate` that EVAL_CHECKPOINTS picks, each as a contestant.
    pub(super) fn checkpoint_contestants(
        &self,
        run: &CandidateRun<'_>,
        candidate: &Champion,
        eval: &Evaluation,
    ) -> Contestants {
        let all = self.contestants.checkpoints(run);
        if all.is_empty() {
            return Contestants::default();
        }
        let at = self.contestants.at_checkpoints(candidate, &all);
        let picked = eval.checkpoints.pick(&all);
        let (judged, checkpoints) = all
            .iter()
            .zip(at)
            .filter(|(c, _)| picked.contains(c))
            .map(|(c, who)| (who, c.clone()))
            .unzip();
        Contestants {
            judged,
            checkpoints,
            reported: all.len(),
        }
    }

    /// The candidate against the champion, or each of its checkpoints; the judgement and who
    /// was judged (the winning checkpoint).
    pub(super) async fn compare_contestants(
        &self,
        run_id: &str,
        candidate: Champion,
        contestants: &Contestants,
        champion: &Champion,
        rows: &[Row],
        eval: &Evaluation,
    ) -> Result<(Judged, Champion), String> {
        if contestants.judged.is_empty() {
            self.compare(run_id, &candidate, champion, rows, eval)
                .await
                .map(|j| (j, candidate))
        } else {
            self.compare_checkpoints(run_id, contestants, champion, rows, eval)
                .await
        }
    }

    /// Each checkpoint against the champion, the Holm-corrected choice; the judgement of the
    /// winner (none winning: of the best-scoring checkpoint) and who it is.
    pub(super) async fn compare_checkpoints(
        &self,
        run_id: &str,
        contestants: &Contestants,
        champion: &Champion,
        rows: &[Row],
        eval: &Evaluation,
    ) -> Result<(Judged, Champion), String> {
        let folder = storage::join(
            &storage::join(&self.config.jsonl_folder, run_id),
            RESPONSES_FOLDER,
        );
        let mut asked: Vec<Asked> = Vec::with_capacity(contestants.judged.len());
        for (who, c) in contestants.judged.iter().zip(&contestants.checkpoints) {
            tracing::info!(%run_id, checkpoint = %c.describe(), model = %who.model, endpoint = who.endpoint.as_deref().unwrap_or("none"), "judging a checkpoint against the champion");
            let own = storage::join(&folder, &format!("checkpoint-{}", c.checkpoint_id));
            let a = self
                .ask(run_id, who, champion, rows, eval, [&own, &folder])
                .await
                .map_err(|e| format!("{}: {e}", c.describe()))?;
            asked.push(a);
        }
        let metric = asked[0].metric;
        let paired: Vec<_> = asked.iter().map(|a| a.paired(rows)).collect();
        let entries: Vec<(&Checkpoint, &[crate::evaluate::bless::Paired<'_>])> = contestants
            .checkpoints
            .iter()
            .zip(&paired)
            .map(|(c, p)| (c, p.as_slice()))
            .collect();
        let choice = choose(metric, &entries, &eval.thresholds, BOOTSTRAP_SEED);
        for score in &choice.scores {
            tracing::info!(%run_id, verdict = %score.verdict, "{}", score.line());
        }
        // The record's scores are the winner's, or the best checkpoint's when none won.
        let main = choice.winner.unwrap_or_else(|| {
            (0..choice.scores.len())
                .max_by(|&a, &b| {
                    choice.scores[a]
                        .score
                        .total_cmp(&choice.scores[b].score)
                        .then(a.cmp(&b))
                })
                .unwrap_or(0)
        });
        match choice.winner {
            Some(w) => {
                tracing::info!(%run_id, checkpoint = %contestants.checkpoints[w].describe(), judged = choice.scores.len(), "the best checkpoint wins");
            }
            None => {
                tracing::info!(%run_id, judged = choice.scores.len(), "no checkpoint is blessed");
            }
        }
        let google = if eval.google_metrics {
            self.contestants.google_metrics(&paired[main]).await
        } else {
            None
        };
        // Every checkpoint's answers; the champion's once (the later checkpoints read them
        // back).
        let candidates = asked
            .iter()
            .fold(Totals::default(), |t, a| t + a.answers.candidate);
        let totals = EvalSpend::new(candidates, asked[0].answers.champion);
        let summary = CheckpointsSummary {
            selection: eval.checkpoints.to_string(),
            reported: contestants.reported as u64,
            correction: "holm".to_owned(),
            judged: choice.scores.clone(),
            winner: choice
                .winner
                .map(|w| contestants.checkpoints[w].checkpoint_id.clone()),
        };
        let judged = Judged {
            blessing: choice.blessings[main].clone(),
            totals,
            google,
            serving: asked[main].serving.clone(),
            sampled: asked[main].sampled,
            checkpoints: Some(summary),
        };
        Ok((judged, contestants.judged[main].clone()))
    }

    /// Why a blessed candidate becomes the champion, in the pointer's words.
    pub(super) fn blessed_because(run_id: &str, candidate: &Champion, judged: &Judged) -> String {
        format!(
            "blessed by run {run_id}{}: {}",
            candidate
                .checkpoint
                .as_ref()
                .map(|c| format!(" at its checkpoint {c}"))
                .unwrap_or_default(),
            judged.blessing.summary()
        )
    }

    /// Makes a promoted champion's checkpoint its model version's default (`models.patch`):
    /// what the record's `promotion.default_checkpoint` says; `None` when it names no
    /// checkpoint of a Vertex model. A failure is logged and the next promotion of it (or a
    /// rollback to it) sets it again; continuous tuning names the checkpoint anyway.
    pub(super) async fn default_checkpoint(&self, champion: &Champion) -> Option<String> {
        let checkpoint = champion.checkpoint.as_deref()?;
        let version = champion.tuned_vertex_model()?;
        Some(
            match self
                .registry
                .set_default_checkpoint(version, checkpoint)
                .await
            {
                Ok(()) => format!("set to {checkpoint}"),
                Err(e) => {
                    tracing::warn!(error = %e, model = %version, checkpoint, "the default checkpoint could not be set");
                    format!("not set: {e}")
                }
            },
        )
    }
}
