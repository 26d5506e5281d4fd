//! The champion: the model a blessed run promoted, and the source of truth of what serves.
//!
//! `MODEL_META_FOLDER/champion.json` names the champion (model, endpoint, run, scores, when,
//! why) and the champion before it, so a rollback can go back step by step. It is only ever
//! written by compare-and-swap on its generation: of two runs promoting at once, one wins and
//! the other learns who did. Before the first promotion there is no pointer and the champion
//! is the base model ([`Champion::base`]).
//!
//! The Vertex model alias `champion` mirrors the pointer (`registry`); a run that finds the
//! alias behind the pointer moves it, so a crash between the two writes heals on the next run.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::{self, PutMode, Store, StoreError};

/// The pointer's name in MODEL_META_FOLDER.
pub const POINTER: &str = "champion.json";
/// Champions kept behind the current one, for rollbacks.
const KEEP: usize = 20;

/// A tuned model as the tuner reported it in the run record's `model_details`: the model
/// version, the endpoint that serves it, and the checkpoint when the tuner named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunedModel {
    /// The model resource (`projects/…/models/…@version`), or a stand-in's name.
    pub name: String,
    /// The endpoint that serves it (`projects/…/endpoints/…`), when the tuner reported one.
    pub endpoint: Option<String>,
    /// The checkpoint the model is taken from, when the tuner named one.
    pub checkpoint: Option<String>,
}

impl TunedModel {
    /// The tuned model a tuner's report (`model_details`: `tuned_model`, `endpoint`,
    /// `checkpoint_id`) names; `None` when it names none (a dry run, a failed job). The one
    /// place that reads the report's model by its keys.
    pub fn of(details: &Value) -> Option<Self> {
        let text = |key: &str| details.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            name: text("tuned_model")?,
            endpoint: text("endpoint"),
            checkpoint: text("checkpoint_id"),
        })
    }
}

/// A model that serves, or served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Champion {
    /// A Vertex model version (`projects/…/models/M@V`), a base model's publisher path
    /// (`projects/…/publishers/google/models/…`), or a rehearsal stand-in (`rehearsal:…`).
    pub model: String,
    /// The endpoint that serves it (a tuned model's `projects/…/endpoints/E`, as its tuning
    /// job named it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The checkpoint of the tuned model that won, as EVAL_CHECKPOINTS judged: `endpoint` is its
    /// endpoint, the model version's default checkpoint is set to it, and continuous tuning
    /// starts from it (`preTunedModel.checkpointId`). `None` for a job without intermediate
    /// checkpoints, and for the base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The name it answered under when it was judged, where that differs from how it was
    /// named or more than one name was tried (a tuned Gemini 3 endpoint is served on its
    /// jurisdiction's multi-region endpoint): later calls go there directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
    /// The run that tuned it; `None` for the base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The base model it was tuned from (itself, for the base model).
    #[serde(default)]
    pub base_model: String,
    /// Its scores on the evaluation set when it was promoted.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metrics: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_set_id: Option<String>,
    /// When it became the champion.
    pub since: DateTime<Utc>,
    /// Why: blessed by its run, or rolled back to.
    pub reason: String,
    /// The champion before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Champion>>,
    /// The tuned Vertex model a rollback moved away from: it must not keep the alias (a
    /// rollback that died before the alias moved is repaired from this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<String>,
    /// The champion a plain rollback moved away from (without its history): `rollback --to`
    /// its run undoes the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Box<Champion>>,
}

impl Champion {
    /// The base model, champion until a first candidate is blessed.
    pub fn base(model: &str, publisher_path: String) -> Self {
        Self {
            model: publisher_path,
            endpoint: None,
            checkpoint: None,
            run_id: None,
            base_model: model.to_owned(),
            metrics: Value::Null,
            eval_set_id: None,
            since: Utc::now(),
            reason: format!("the base model {model}: no tuned model was blessed yet"),
            previous: None,
            rolled_back_from: None,
            undo: None,
            serving: None,
        }
    }

    /// Where to call it: the name it answered under, else its endpoint.
    pub fn callable(&self) -> Option<&str> {
        self.serving.as_deref().or(self.endpoint.as_deref())
    }

    /// A tuned Vertex model version, which continuous tuning can start from.
    pub fn tuned_vertex_model(&self) -> Option<&str> {
        (self.run_id.is_some()
            && self.model.starts_with("projects/")
            && self.model.contains("/models/"))
        .then_some(self.model.as_str())
    }

    /// Who it is, in a sentence's words.
    pub fn describe(&self) -> String {
        match (&self.run_id, &self.checkpoint) {
            (Some(run), Some(c)) => format!("{} checkpoint {c} (run {run})", self.model),
            (Some(run), None) => format!("{} (run {run})", self.model),
            (None, _) => format!("{} (base model)", self.model),
        }
    }

    /// The champions before this one, newest first.
    pub fn history(&self) -> impl Iterator<Item = &Champion> {
        std::iter::successors(self.previous.as_deref(), |c| c.previous.as_deref())
    }

    /// Keeps at most [`KEEP`] champions behind this one.
    fn truncate(&mut self) {
        let mut at = self.previous.as_deref_mut();
        let mut depth = 1;
        while let Some(c) = at {
            if depth >= KEEP {
                c.previous = None;
                break;
            }
            depth += 1;
            at = c.previous.as_deref_mut();
        }
    }

    /// This champion, replacing `current` (kept as the previous one).
    #[must_use]
    pub fn after(mut self, current: Champion) -> Self {
        self.previous = Some(Box::new(current));
        self.truncate();
        self
    }
}

/// The pointer as read, with the generation a swap must match.
#[derive(Debug, Clone)]
pub struct Current {
    pub champion: Champion,
    pub generation: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ChampionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{object}: not a champion pointer: {reason}")]
    Corrupt { object: String, reason: String },
    /// Another writer moved the pointer since it was read.
    #[error("the champion changed meanwhile: it is now {now}")]
    Lost { now: String },
    #[error("{0}")]
    NoRollback(String),
}

pub fn pointer_key(meta_folder: &str) -> String {
    storage::join(meta_folder, POINTER)
}

/// What a run says of a pointer it cannot use: every promotion stops until it is repaired.
pub fn unusable(e: &ChampionError) -> String {
    match e {
        ChampionError::Corrupt { .. } => format!(
            "{e}; every promotion stops until it is repaired: restore a readable version of it, \
             or delete it (the base model is then the champion until a candidate is blessed)"
        ),
        _ => format!("{e}; every promotion stops until the champion pointer can be read"),
    }
}

/// The pointer, if a run promoted a model.
pub async fn read(store: &dyn Store, meta_folder: &str) -> Result<Option<Current>, ChampionError> {
    let key = pointer_key(meta_folder);
    let Some((body, generation)) = storage::get_versioned(store, &key, 4 * 1024 * 1024).await?
    else {
        return Ok(None);
    };
    let champion = serde_json::from_slice(&body).map_err(|e| ChampionError::Corrupt {
        object: store.uri(&key),
        reason: e.to_string(),
    })?;
    Ok(Some(Current {
        champion,
        generation,
    }))
}

/// Moves the pointer to `new` if it is still at `expected` (`None`: there is no pointer yet).
pub async fn swap(
    store: &dyn Store,
    meta_folder: &str,
    new: &Champion,
    expected: Option<&str>,
) -> Result<Current, ChampionError> {
    let key = pointer_key(meta_folder);
    let body = serde_json::to_vec_pretty(new).expect("a champion serialises");
    let mode = expected.map_or(PutMode::Create, |g| PutMode::Update(g.to_owned()));
    match store.put(&key, Bytes::from(body), mode).await {
        Ok(meta) => Ok(Current {
            champion: new.clone(),
            generation: meta.generation,
        }),
        Err(StoreError::AlreadyExists { .. } | StoreError::Precondition { .. }) => {
            let now = match read(store, meta_folder).await {
                Ok(Some(c)) => c.champion.describe(),
                Ok(None) => "gone".to_owned(),
                // Not another writer's promotion: a pointer no run can read stops them all.
                Err(e @ ChampionError::Corrupt { .. }) => return Err(e),
                Err(e) => format!("unreadable ({e})"),
            };
            Err(ChampionError::Lost { now })
        }
        Err(e) => Err(e.into()),
    }
}

/// The champion a rollback makes: the previous one, or the one of run `to` among those kept.
/// The current champion becomes the previous one of a rollback `--to`, so it can be undone.
pub fn rolled_back(current: &Champion, to: Option<&str>) -> Result<Champion, ChampionError> {
    let reason = |c: &Champion| {
        format!(
            "rolled back from {} by autotune rollback (it was champion because: {})",
            current.describe(),
            c.reason
        )
    };
    match to {
        None => {
            let Some(previous) = current.previous.as_deref() else {
                return Err(ChampionError::NoRollback(format!(
                    "{} is the first champion: there is nothing to roll back to",
                    current.describe()
                )));
            };
            Ok(Champion {
                reason: reason(previous),
                since: Utc::now(),
                rolled_back_from: current.tuned_vertex_model().map(str::to_owned),
                undo: Some(Box::new(Champion {
                    previous: None,
                    undo: None,
                    ..current.clone()
                })),
                ..previous.clone()
            })
        }
        Some(run) => {
            // The earlier champions, and the one a plain rollback moved away from.
            let candidates = || current.history().chain(current.undo.as_deref());
            let Some(target) = candidates().find(|c| c.run_id.as_deref() == Some(run)) else {
                let kept: Vec<String> = candidates().map(Champion::describe).collect();
                return Err(ChampionError::NoRollback(format!(
                    "run {run} is not among the earlier champions ({})",
                    if kept.is_empty() {
                        "none".to_owned()
                    } else {
                        kept.join(", ")
                    }
                )));
            };
            let back = Champion {
                reason: reason(target),
                since: Utc::now(),
                previous: None,
                undo: None,
                rolled_back_from: current.tuned_vertex_model().map(str::to_owned),
                ..target.clone()
            };
            Ok(back.after(Champion {
                undo: None,
                ..current.clone()
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn tuned(run: &str) -> Champion {
        Champion {
            model: format!("projects/p/locations/l/models/1@{run}"),
            endpoint: Some(format!("projects/p/locations/l/endpoints/{run}")),
            checkpoint: None,
            run_id: Some(run.to_owned()),
            base_model: "gemini".to_owned(),
            metrics: serde_json::json!({"exact_match": 0.9}),
            eval_set_id: Some("s".into()),
            since: Utc::now(),
            reason: format!("blessed by run {run}"),
            previous: None,
            rolled_back_from: None,
            undo: None,
            serving: None,
        }
    }

    #[tokio::test]
    async fn the_pointer_moves_only_from_the_generation_read() {
        let store = MemoryStore::named("champion-test");
        assert!(read(&store, "meta").await.unwrap().is_none());
        let base = Champion::base("gemini", "publishers/google/models/gemini".into());
        let first = tuned("r1").after(base);
        let c1 = swap(&store, "meta", &first, None).await.unwrap();
        // A second writer that also saw no pointer loses, and learns who won.
        let lost = swap(&store, "meta", &tuned("r9"), None).await.unwrap_err();
        assert!(lost.to_string().contains("(run r1)"), "{lost}");
        let second = tuned("r2").after(c1.champion.clone());
        let c2 = swap(&store, "meta", &second, Some(&c1.generation))
            .await
            .unwrap();
        assert!(matches!(
            swap(&store, "meta", &tuned("r3"), Some(&c1.generation)).await,
            Err(ChampionError::Lost { .. })
        ));
        let now = read(&store, "meta").await.unwrap().unwrap();
        assert_eq!(now.generation, c2.generation);
        assert_eq!(now.champion, second);
        let runs: Vec<_> = now.champion.history().map(|c| c.run_id.clone()).collect();
        assert_eq!(runs, vec![Some("r1".to_owned()), None]);
    }

    /// Issue 20: the README says a rollback can be undone with `--to`; a plain one dropped
    /// the champion it moved away from, so it could not be.
    #[test]
    fn a_plain_rollback_can_be_undone_with_to() {
        let base = Champion::base("gemini", "publishers/google/models/gemini".into());
        let three = tuned("r3").after(tuned("r2").after(tuned("r1").after(base)));
        let back = rolled_back(&three, None).unwrap();
        assert_eq!(back.run_id.as_deref(), Some("r2"));
        let undo = rolled_back(&back, Some("r3")).unwrap();
        assert_eq!(undo.model, three.model);
        assert_eq!(
            undo.previous.as_ref().unwrap().run_id.as_deref(),
            Some("r2"),
            "and the undo can be undone in turn"
        );
        // Plain rollbacks still step back through the history.
        let again = rolled_back(&back, None).unwrap();
        assert_eq!(again.run_id.as_deref(), Some("r1"));
    }

    #[test]
    fn rollbacks_step_back_or_jump_and_can_be_undone() {
        let base = Champion::base("gemini", "publishers/google/models/gemini".into());
        let three = tuned("r3").after(tuned("r2").after(tuned("r1").after(base)));
        let back = rolled_back(&three, None).unwrap();
        assert_eq!(back.run_id.as_deref(), Some("r2"));
        assert_eq!(
            back.previous.as_ref().unwrap().run_id.as_deref(),
            Some("r1")
        );
        assert!(back.reason.contains("rolled back from"), "{}", back.reason);
        let jump = rolled_back(&three, Some("r1")).unwrap();
        assert_eq!(jump.run_id.as_deref(), Some("r1"));
        assert_eq!(
            jump.previous.as_ref().unwrap().run_id.as_deref(),
            Some("r3")
        );
        let undo = rolled_back(&jump, Some("r3")).unwrap();
        assert_eq!(undo.model, three.model);
        let err = rolled_back(&three, Some("r7")).unwrap_err().to_string();
        assert!(err.contains("r7") && err.contains("(run r2)"), "{err}");
        let to_base = rolled_back(&rolled_back(&back, None).unwrap(), None).unwrap();
        assert_eq!(to_base.run_id, None);
        assert!(
            rolled_back(&to_base, None).is_err(),
            "nothing before the base"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut c = Champion::base("g", "b".into());
        for i in 0..50 {
            c = tuned(&format!("r{i}")).after(c);
        }
        assert_eq!(c.history().count(), KEEP);
    }
}
