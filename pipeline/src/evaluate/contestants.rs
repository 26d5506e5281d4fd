//! Who answers an evaluation: the seam between a champion pointer entry (or a fresh
//! candidate) and a [`Model`] to ask. Vertex AI opens tuned endpoints and base models through
//! their publisher path; the rehearsal of the dry-run tuner opens stand-ins whose names carry
//! their error rate, so that the pointer says plainly what they are.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::bless::Paired;
use super::checkpoints::Checkpoint;
use super::model::{Model, ModelError};
use super::rehearsal::Rehearsal;
use super::vertex::Vertex;
use crate::champion::{Champion, TunedModel};
use crate::validate::ModelTable;

/// What a successful run tells of its candidate.
#[derive(Debug, Clone, Copy)]
pub struct CandidateRun<'a> {
    pub run_id: &'a str,
    pub source_model: &'a str,
    /// What the tuner reported (`tuned_model`, `endpoint`), as it reported it.
    pub details: &'a Value,
    /// The tuned model in that report, if any.
    pub tuned: Option<&'a TunedModel>,
    pub train_examples: u64,
    /// The digest of what was tuned: a rehearsal stand-in's identity, so that the same data
    /// rehearses the same way.
    pub dataset_digest: &'a str,
}

/// Opens the models of an evaluation.
#[async_trait]
pub trait Contestants: Send + Sync {
    /// The base model as a champion (before any candidate is blessed).
    fn base(&self, source_model: &str) -> Champion;
    /// A successful run's tuned model, from what the tuner reported and how many examples it
    /// trained on; `None` when the tuner reported no model.
    fn candidate(&self, run: &CandidateRun<'_>) -> Option<Champion>;
    /// The checkpoints of a successful run's tuned model, in training order, each a
    /// contestant (`evaluate::checkpoints`); empty when the job kept none (the candidate
    /// itself is judged). What the tuning job reported, by default.
    fn checkpoints(&self, run: &CandidateRun<'_>) -> Vec<Checkpoint> {
        Checkpoint::of_details(run.details)
    }
    /// The candidate at each of its checkpoints `all` (as [`Contestants::checkpoints`] gave
    /// them), in their order: called on the checkpoint's endpoint, and named by it.
    fn at_checkpoints(&self, candidate: &Champion, all: &[Checkpoint]) -> Vec<Champion> {
        all.iter()
            .map(|c| Champion {
                endpoint: c.endpoint.clone().or_else(|| candidate.endpoint.clone()),
                checkpoint: Some(c.checkpoint_id.clone()),
                serving: None,
                ..candidate.clone()
            })
            .collect()
    }
    /// The model that answers for `who`; a candidate's endpoint may answer 404 for a while
    /// after its job succeeded.
    fn open(&self, who: &Champion, candidate: bool) -> Result<Arc<dyn Model>, ModelError>;
    /// Google's own exact match and ROUGE-L of both models' answers (EVAL_GOOGLE_METRICS), as
    /// a cross-check of ours; `None` where Google cannot be asked.
    async fn google_metrics(&self, _rows: &[Paired<'_>]) -> Option<Value> {
        None
    }
}

fn tuned(run_id: &str, source_model: &str, model: String, endpoint: Option<String>) -> Champion {
    Champion {
        model,
        endpoint,
        checkpoint: None,
        run_id: Some(run_id.to_owned()),
        base_model: source_model.to_owned(),
        metrics: Value::Null,
        eval_set_id: None,
        since: chrono::Utc::now(),
        reason: String::new(),
        previous: None,
        rolled_back_from: None,
        undo: None,
        serving: None,
    }
}

/// Tuned endpoints and base models on Vertex AI, each called where Google serves it (the
/// model table's `base_serving` and `tuned_serving`).
#[derive(Debug, Clone)]
pub struct VertexContestants {
    pub vertex: Vertex,
    /// Where each model family is served.
    pub table: ModelTable,
    pub project: String,
    /// LOCATION, where tuning jobs run.
    pub location: String,
}

impl VertexContestants {
    /// The publisher path of `model` where its base model answers for a caller in LOCATION.
    fn publisher_path(&self, model: &str) -> String {
        let location = self
            .table
            .resolve(model)
            .limits
            .base_location(&self.location);
        format!(
            "projects/{}/locations/{location}/publishers/google/models/{model}",
            self.project
        )
    }
}

#[async_trait]
impl Contestants for VertexContestants {
    fn base(&self, source_model: &str) -> Champion {
        Champion::base(source_model, self.publisher_path(source_model))
    }

    fn candidate(&self, run: &CandidateRun<'_>) -> Option<Champion> {
        let model = run.tuned?;
        Some(tuned(
            run.run_id,
            run.source_model,
            model.name.clone(),
            model.endpoint.clone(),
        ))
    }

    fn open(&self, who: &Champion, candidate: bool) -> Result<Arc<dyn Model>, ModelError> {
        if let Some(endpoint) = &who.endpoint {
            // Where it answered before, or where a tuned model of its base is served.
            let candidates = match &who.serving {
                Some(serving) => vec![serving.clone()],
                None => self
                    .table
                    .resolve(&who.base_model)
                    .limits
                    .tuned_candidates(endpoint),
            };
            let mut m = self.vertex.tuned(endpoint, &candidates)?;
            if candidate {
                m = m.with_not_found_window(Some(self.vertex.not_found_window()));
            }
            return Ok(Arc::new(m));
        }
        // A base model: where it answers today, whatever location the pointer recorded.
        let id = who
            .model
            .rsplit_once("/publishers/google/models/")
            .map_or(who.model.as_str(), |(_, id)| id);
        let location = self.table.resolve(id).limits.base_location(&self.location);
        Ok(Arc::new(self.vertex.publisher_model_in(id, &location)?))
    }

    async fn google_metrics(&self, rows: &[Paired<'_>]) -> Option<Value> {
        let metrics = self.vertex.google_metrics();
        let side = |candidate: bool| -> Vec<(String, String)> {
            rows.iter()
                .map(|r| {
                    let a = if candidate { r.candidate } else { r.champion };
                    (
                        a.text().unwrap_or_default().to_owned(),
                        r.reference.to_owned(),
                    )
                })
                .collect()
        };
        let mut out = json!({});
        for (role, pairs) in [("candidate", side(true)), ("champion", side(false))] {
            out[role] = match metrics.means(&pairs).await {
                Ok(m) => {
                    json!({"exact_match": m.exact_match, "rouge_l": m.rouge_l, "instances": m.instances, "calls": m.calls})
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Google's evaluateInstances cross-check failed");
                    json!({"error": e.to_string()})
                }
            };
        }
        Some(out)
    }
}

/// The rehearsal stand-ins of the dry-run tuner: the base model errs on 40% of the rows; a
/// tuned stand-in errs less the more examples it trained on (40% × 20 / (20 + examples)), and
/// on a subset of the rows a worse one errs on ([`Rehearsal::nested`]).
/// Their names say so: `rehearsal/tuned-<dataset digest>/error-0.133`.
///
/// A job that keeps intermediate checkpoints (EVAL_CHECKPOINTS other than `last`) rehearses
/// one stand-in checkpoint per epoch (EPOCHS; 3 when unset, at most 10) with a planted
/// overfitting curve ([`planted`]): the middle checkpoint is the best (half the last's error
/// rate), the first the worst, the last errs as the single stand-in would. Their names carry
/// the checkpoint: `rehearsal/tuned-<digest>/checkpoint-2/error-0.100`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RehearsalContestants;

/// The base model's error rate in a rehearsal.
pub const REHEARSAL_BASE_ERROR: f64 = 0.4;

/// The epochs a rehearsal assumes when EPOCHS is unset (Vertex then chooses).
pub const REHEARSAL_EPOCHS: u32 = 3;

/// The planted error rate of rehearsal checkpoint `k` (1-based) of `n`, relative to the last's:
/// 1 for the last, ½ for the middle one (`⌈n/2⌉`, the best), rising to 1.5 at the first.
pub fn planted(k: u32, n: u32) -> f64 {
    if n <= 1 || k >= n {
        return 1.0;
    }
    let m = n.div_ceil(2);
    let (k, m, n) = (f64::from(k), f64::from(m), f64::from(n));
    if k < m {
        0.5 + (m - k) / (m - 1.0)
    } else {
        0.5 + 0.5 * (k - m) / (n - m)
    }
}

impl RehearsalContestants {
    fn name(who: &str, error: f64) -> String {
        format!("rehearsal/{who}/error-{error:.3}")
    }

    /// The error rate a stand-in's name carries.
    fn error_of(model: &str) -> Option<f64> {
        model
            .strip_prefix("rehearsal/")?
            .rsplit_once("/error-")?
            .1
            .parse()
            .ok()
    }
}

#[async_trait]
impl Contestants for RehearsalContestants {
    fn base(&self, source_model: &str) -> Champion {
        Champion::base(
            source_model,
            Self::name(&format!("base-{source_model}"), REHEARSAL_BASE_ERROR),
        )
    }

    fn candidate(&self, run: &CandidateRun<'_>) -> Option<Champion> {
        let error = REHEARSAL_BASE_ERROR * 20.0 / (20.0 + run.train_examples as f64);
        let data = run.dataset_digest.get(..12).unwrap_or(run.dataset_digest);
        Some(tuned(
            run.run_id,
            run.source_model,
            Self::name(&format!("tuned-{data}"), error),
            None,
        ))
    }

    fn checkpoints(&self, run: &CandidateRun<'_>) -> Vec<Checkpoint> {
        let spec = &run.details["request"]["body"]["supervisedTuningSpec"];
        if spec["exportLastCheckpointOnly"].as_bool() != Some(false) {
            return Vec::new();
        }
        let epochs = spec["hyperParameters"]["epochCount"]
            .as_str()
            .and_then(|e| e.parse::<u32>().ok())
            .unwrap_or(REHEARSAL_EPOCHS)
            .clamp(1, super::checkpoints::MAX_CHECKPOINTS);
        (1..=epochs)
            .map(|k| Checkpoint {
                checkpoint_id: k.to_string(),
                epoch: Some(u64::from(k)),
                step: None,
                endpoint: None,
            })
            .collect()
    }

    fn at_checkpoints(&self, candidate: &Champion, all: &[Checkpoint]) -> Vec<Champion> {
        let n = u32::try_from(all.len()).unwrap_or(u32::MAX);
        let last = Self::error_of(&candidate.model).unwrap_or(REHEARSAL_BASE_ERROR);
        let who = candidate
            .model
            .strip_prefix("rehearsal/")
            .and_then(|m| m.rsplit_once("/error-"))
            .map_or("tuned", |(who, _)| who);
        (1..=n)
            .zip(all)
            .map(|(k, c)| Champion {
                model: Self::name(
                    &format!("{who}/checkpoint-{}", c.checkpoint_id),
                    last * planted(k, n),
                ),
                checkpoint: Some(c.checkpoint_id.clone()),
                ..candidate.clone()
            })
            .collect()
    }

    fn open(&self, who: &Champion, _candidate: bool) -> Result<Arc<dyn Model>, ModelError> {
        let error = Self::error_of(&who.model).ok_or_else(|| ModelError::Unavailable {
            model: who.model.clone(),
            message: "not a rehearsal stand-in: EVAL_MODEL=rehearsal judges only the dry-run tuner's stand-ins".to_owned(),
        })?;
        Ok(Arc::new(Rehearsal::nested(&who.model, error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rehearsal_names_carry_their_error_rate_and_more_data_errs_less() {
        let r = RehearsalContestants;
        let base = r.base("gemini-3.5-flash");
        assert_eq!(base.model, "rehearsal/base-gemini-3.5-flash/error-0.400");
        let run = |run_id, train_examples, dataset_digest| CandidateRun {
            run_id,
            source_model: "g",
            details: &Value::Null,
            tuned: None,
            train_examples,
            dataset_digest,
        };
        let small = r.candidate(&run("r1", 20, "0123456789abcdef")).unwrap();
        let large = r.candidate(&run("r2", 2_000, "ff")).unwrap();
        assert_eq!(small.model, "rehearsal/tuned-0123456789ab/error-0.200");
        assert_eq!(small.run_id.as_deref(), Some("r1"));
        assert_eq!(RehearsalContestants::error_of(&large.model), Some(0.004));
        assert!(r.open(&large, true).is_ok());
        let vertex_model = Champion {
            model: "projects/p/locations/l/models/1@1".into(),
            ..small
        };
        assert!(
            r.open(&vertex_model, false).is_err(),
            "never judges a real model"
        );
    }

    #[test]
    fn rehearsal_checkpoints_plant_an_earlier_best() {
        assert!((planted(3, 3) - 1.0).abs() < 1e-12);
        assert!((planted(2, 3) - 0.5).abs() < 1e-12);
        assert!((planted(1, 3) - 1.5).abs() < 1e-12);
        assert!(
            (planted(1, 2) - 0.5).abs() < 1e-12,
            "of two, the first is the better"
        );
        let ten: Vec<f64> = (1..=10).map(|k| planted(k, 10)).collect();
        assert!((ten[0] - 1.5).abs() < 1e-12 && (ten[4] - 0.5).abs() < 1e-12);
        assert!(ten.windows(2).take(4).all(|w| w[0] > w[1]), "{ten:?}");
        assert!(ten.windows(2).skip(4).all(|w| w[0] < w[1]), "{ten:?}");
        assert!((planted(1, 1) - 1.0).abs() < 1e-12);
        let r = RehearsalContestants;
        let details = |export_last: bool, epochs: Option<&str>| {
            let mut hp = serde_json::Map::new();
            if let Some(e) = epochs {
                hp.insert("epochCount".into(), json!(e));
            }
            json!({"request": {"body": {"supervisedTuningSpec": {
                "exportLastCheckpointOnly": export_last,
                "hyperParameters": hp,
            }}}})
        };
        let run = |d| CandidateRun {
            run_id: "r1",
            source_model: "g",
            details: d,
            tuned: None,
            train_examples: 20,
            dataset_digest: "0123456789abcdef",
        };
        let last_only = details(true, Some("5"));
        assert!(r.checkpoints(&run(&last_only)).is_empty());
        let five = details(false, Some("5"));
        assert_eq!(r.checkpoints(&run(&five)).len(), 5);
        let unset = details(false, None);
        let all = r.checkpoints(&run(&unset));
        assert_eq!(all.len(), 3, "three epochs assumed");
        let candidate = r.candidate(&run(&unset)).unwrap();
        let at = r.at_checkpoints(&candidate, &all);
        let names: Vec<&str> = at.iter().map(|c| c.model.as_str()).collect();
        assert_eq!(
            names,
            [
                "rehearsal/tuned-0123456789ab/checkpoint-1/error-0.300",
                "rehearsal/tuned-0123456789ab/checkpoint-2/error-0.100",
                "rehearsal/tuned-0123456789ab/checkpoint-3/error-0.200",
            ]
        );
        assert_eq!(at[1].checkpoint.as_deref(), Some("2"));
        assert!(r.open(&at[1], true).is_ok());
    }
}
