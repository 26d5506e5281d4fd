//! The promote stage: a blessed candidate becomes the champion by compare-and-swap of the
//! pointer, then the Vertex alias follows; `autotune rollback` and `autotune champion`; and the
//! notices every step sends.

use serde_json::{Value, json};

use crate::champion::{self, Champion, ChampionError, Current};
use crate::notify::{Event, Notice};
use crate::record::{Promotion, RunRecord};

use super::Job;

/// How long `autotune rollback` waits for its notice (and any before it) to be delivered.
const ROLLBACK_NOTICE: std::time::Duration = std::time::Duration::from_secs(60);

/// The pointer a promotion expects to replace.
pub(super) enum Seen {
    /// As the evaluation read it (`None`: there was no pointer).
    Was(Box<Option<Current>>),
    /// Not read yet (evaluation is off): whatever it is now.
    ReadNow,
}

/// What `autotune rollback` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolledBack {
    /// The champion now.
    pub champion: Champion,
    /// What happened to the Vertex alias: `moved`, not a Vertex model, or behind the pointer
    /// and why (the next run repairs it).
    pub alias: String,
}

/// What `autotune champion` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChampionInfo {
    /// The pointer, or the base model before any promotion.
    pub champion: Champion,
    /// `MODEL_META_FOLDER/champion.json`, when a run promoted a model.
    pub pointer: Option<String>,
    /// What the Vertex alias `champion` resolves to, when the registry can tell.
    pub alias: Option<String>,
    /// The resource name it is called under (a tuned Gemini 3 model's multi-region
    /// endpoint, a base model's publisher path).
    pub serving: Option<String>,
    /// How to call it.
    pub call: Option<String>,
}

impl Job {
    /// Moves the pointer to `winner` if it is still where the evaluation read it, then mirrors
    /// it to the alias. Returns the record's `promotion`; `Err` says why the pointer cannot be
    /// used at all (unreadable, or the bucket failed): the run fails on it, since no later
    /// promotion can happen either. Idempotent: a pointer that already names this run's
    /// candidate (an earlier attempt moved it and was stopped) is recognised, not moved again;
    /// and the moment the pointer moves, `judgement` says so, so that a run stopped before the
    /// alias follows records what the pointer says.
    pub(super) async fn promote(
        &self,
        winner: Champion,
        seen: Seen,
        judgement: &mut super::evaluate::Judgement,
    ) -> Result<Promotion, String> {
        let folder = &self.config.model_meta_folder;
        let expected = match seen {
            Seen::Was(e) => *e,
            Seen::ReadNow => champion::read(&*self.store, folder)
                .await
                .map_err(|e| champion::unusable(&e))?,
        };
        if let Some(promotion) = self.already_champion(expected.as_ref(), &winner).await {
            return Ok(promotion);
        }
        let run_id = winner.run_id.clone().unwrap_or_default();
        let before = expected.as_ref().map_or_else(
            || self.contestants.base(&winner.base_model),
            |c| c.champion.clone(),
        );
        let new = Champion {
            since: chrono::Utc::now(),
            reason: if winner.reason.is_empty() {
                format!("run {run_id} succeeded (evaluation is off)")
            } else {
                winner.reason.clone()
            },
            ..winner
        }
        .after(before.clone());
        match champion::swap(
            &*self.store,
            folder,
            &new,
            expected.as_ref().map(|c| c.generation.as_str()),
        )
        .await
        {
            Ok(_) => {}
            Err(ChampionError::Lost { now }) => {
                let reason = format!(
                    "another writer moved the champion meanwhile (it is now {now}); this candidate was judged against {}",
                    before.describe()
                );
                tracing::warn!(%run_id, "not promoted: {reason}");
                return Ok(Promotion::refused(reason));
            }
            Err(e) => return Err(champion::unusable(&e)),
        }
        tracing::info!(%run_id, champion = %new.model, previous = %before.model, "promoted: the candidate is the champion");
        // The pointer moved: that is the promotion, whatever stops the run from here on.
        judgement.promotion = Some(Promotion::promoted(
            &new.model,
            &before.model,
            "not moved yet: the next run moves it",
        ));
        let alias = self.mirror(&new, Some(&before)).await;
        let default_checkpoint = self.default_checkpoint(&new).await;
        self.announce_promotion(&new, &before.model, &alias);
        Ok(Promotion {
            default_checkpoint,
            ..Promotion::promoted(&new.model, &before.model, alias)
        })
    }

    /// The record's `promotion` when the pointer already names `candidate` as the champion,
    /// promoted by its own run (an earlier attempt of this run, stopped after the pointer
    /// moved): the alias is made to follow and the promotion is announced again (receivers
    /// dedupe), instead of judging the candidate against itself or moving the pointer twice.
    pub(super) async fn already_champion(
        &self,
        current: Option<&Current>,
        candidate: &Champion,
    ) -> Option<Promotion> {
        let current = &current?.champion;
        if current.model != candidate.model
            || current.run_id.is_none()
            || current.run_id != candidate.run_id
        {
            return None;
        }
        let run_id = current.run_id.clone().unwrap_or_default();
        let previous = current
            .previous
            .as_deref()
            .map_or_else(|| self.contestants.base(&current.base_model), Clone::clone);
        tracing::info!(%run_id, champion = %current.model, "the champion pointer already names this run's candidate: promoted before the run was stopped");
        let alias = self.mirror(current, Some(&previous)).await;
        let default_checkpoint = self.default_checkpoint(current).await;
        self.announce_promotion(current, &previous.model, &alias);
        Some(Promotion {
            default_checkpoint,
            recognised: Some(format!(
                "{} already named run {run_id}'s candidate: promoted before the run was stopped",
                champion::pointer_key(&self.config.model_meta_folder)
            )),
            ..Promotion::promoted(&current.model, &previous.model, alias)
        })
    }

    /// The `promoted` notice.
    fn announce_promotion(&self, new: &Champion, previous: &str, alias: &str) {
        let details = json!({
            "champion": new.model,
            "endpoint": new.endpoint,
            "checkpoint": new.checkpoint,
            "previous": previous,
            "alias": alias,
        });
        self.notice(
            Notice::new(
                Event::Promoted,
                new.run_id.clone().unwrap_or_default(),
                crate::status::RunStatus::Success,
            )
            .with_details(details),
        );
    }

    /// The pointer, for a run about to tune: one that cannot be read fails the run before
    /// anything is paid for, since its candidate could never be promoted.
    pub(super) async fn check_pointer(&self) -> Result<(), super::RunError> {
        champion::read(&*self.store, &self.config.model_meta_folder)
            .await
            .map(|_| ())
            .map_err(|e| super::RunError::Champion(champion::unusable(&e)))
    }

    /// A tuned run whose candidate cannot be promoted because the pointer cannot be used: the
    /// run fails (exit 1) and its record says why, instead of ending as a quiet success.
    pub(super) fn pointer_failed(
        &self,
        record: &RunRecord,
        judgement: &mut super::evaluate::Judgement,
        why: &str,
    ) {
        tracing::error!("the candidate cannot be promoted: {why}");
        judgement.failed = Some(format!("the candidate cannot be promoted: {why}"));
        judgement.promotion = Some(Promotion::refused(why));
        self.notify(
            Event::Failed,
            &judgement.applied_to(record),
            json!({"error": why}),
        );
    }

    /// Points the Vertex alias at `new` (and takes it from `before`); says what happened. A
    /// failure leaves the pointer ahead of the alias: the next run repairs it.
    async fn mirror(&self, new: &Champion, before: Option<&Champion>) -> String {
        let previous = before.and_then(Champion::tuned_vertex_model);
        let result = match new.tuned_vertex_model() {
            Some(model) => self.registry.promote(model, previous).await,
            None => match previous {
                Some(p) => self.registry.withdraw(p).await,
                None => return "not a Vertex model: no alias".to_owned(),
            },
        };
        match result {
            Ok(()) => "moved".to_owned(),
            Err(e) => {
                tracing::warn!(error = %e, "the Vertex alias could not follow the champion pointer; the next run repairs it");
                format!("behind the pointer: {e}")
            }
        }
    }

    /// A run that finds the alias behind the pointer (a crash between the two writes, or a
    /// hand-moved alias) moves it: the pointer is the source of truth. Behind means the
    /// champion's Model does not carry the alias, or the Model of the previous champion (or
    /// of the one a rollback moved away from) still does.
    pub(super) async fn repair_alias(&self, current: &Champion) -> bool {
        let model = current.tuned_vertex_model();
        let mut behind = false;
        if let Some(model) = model {
            match self.registry.champion(model).await {
                Ok(Some(at)) if at == model => {}
                Ok(at) => {
                    tracing::warn!(pointer = %model, alias = at.as_deref().unwrap_or("nowhere"), "the Vertex alias is behind the champion pointer; repairing it");
                    behind = true;
                }
                Err(e) => tracing::warn!(error = %e, "could not read the Vertex alias"),
            }
        }
        let stale = [
            current
                .previous
                .as_deref()
                .and_then(Champion::tuned_vertex_model),
            current.rolled_back_from.as_deref(),
        ];
        let mut left_on = None;
        for old in stale.into_iter().flatten().filter(|m| Some(*m) != model) {
            match self.registry.champion(old).await {
                Ok(Some(at)) if Some(at.as_str()) != model => {
                    tracing::warn!(pointer = %current.model, alias = %at, "a former champion still carries the Vertex alias; repairing it");
                    left_on = Some(old);
                    break;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not read the Vertex alias"),
            }
        }
        if !behind && left_on.is_none() {
            return false;
        }
        let result = match (model, left_on) {
            (Some(m), old) => {
                let previous = old.or_else(|| {
                    current
                        .previous
                        .as_deref()
                        .and_then(Champion::tuned_vertex_model)
                });
                self.registry.promote(m, previous).await
            }
            (None, Some(old)) => self.registry.withdraw(old).await,
            (None, None) => return false,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "the Vertex alias could not follow the champion pointer; the next run repairs it");
        }
        true
    }

    /// Every run that takes the lease, or waits at the gates, checks the alias against the
    /// pointer (a read of each), so that a crash between the two writes heals even when no
    /// candidate is judged for a while. Without the lease a promotion or a rollback may move
    /// the pointer meanwhile: after a repair the pointer is read again, and a pointer that
    /// moved is followed (the alias ends where the pointer is, whoever writes last).
    pub(super) async fn repair_champion_alias(&self) {
        if self.config.evaluation.is_none() || self.tuner.kind() != crate::tuner::TunerKind::Vertex
        {
            return;
        }
        let mut seen: Option<String> = None;
        for _ in 0..3 {
            match champion::read(&*self.store, &self.config.model_meta_folder).await {
                Ok(Some(c)) => {
                    if seen.as_deref() == Some(c.generation.as_str()) {
                        return;
                    }
                    if !self.repair_alias(&c.champion).await {
                        return;
                    }
                    seen = Some(c.generation);
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the champion pointer");
                    return;
                }
            }
        }
    }

    /// `autotune rollback [--to RUN_ID]`: the pointer back to the previous champion (or to
    /// run `to`'s), then the alias.
    pub async fn rollback(&self, to: Option<&str>) -> Result<RolledBack, ChampionError> {
        let folder = &self.config.model_meta_folder;
        let Some(current) = champion::read(&*self.store, folder).await? else {
            return Err(ChampionError::NoRollback(
                "no model was promoted yet: the base model is the champion".to_owned(),
            ));
        };
        let back = champion::rolled_back(&current.champion, to)?;
        champion::swap(&*self.store, folder, &back, Some(&current.generation)).await?;
        tracing::info!(champion = %back.describe(), from = %current.champion.describe(), "rolled back");
        let alias = self.mirror(&back, Some(&current.champion)).await;
        self.default_checkpoint(&back).await;
        let run_id = current.champion.run_id.clone().unwrap_or_default();
        self.notice(
            Notice::new(Event::RolledBack, run_id, crate::status::RunStatus::Success).with_details(
                json!({
                    "champion": back.model,
                    "from": current.champion.model,
                    "alias": alias,
                }),
            ),
        );
        // A command, not a run: it ends when its notices are delivered (within their
        // deadline).
        self.notifier.flush(ROLLBACK_NOTICE).await;
        Ok(RolledBack {
            champion: back,
            alias,
        })
    }

    /// `autotune champion`: the champion, where the alias points, and how to call it.
    pub async fn champion(&self) -> Result<ChampionInfo, ChampionError> {
        let folder = &self.config.model_meta_folder;
        let current = champion::read(&*self.store, folder).await?;
        let champion = current.as_ref().map_or_else(
            || self.contestants.base(&self.config.request.source_model),
            |c| c.champion.clone(),
        );
        let alias = match champion.tuned_vertex_model() {
            Some(m) => self.registry.champion(m).await.ok().flatten(),
            None => None,
        };
        let serving = self.serving_of(&champion);
        let call = serving
            .as_deref()
            .and_then(|name| call_line(&self.config.hosts, name));
        Ok(ChampionInfo {
            pointer: current.map(|_| self.store.uri(&champion::pointer_key(folder))),
            champion,
            alias,
            serving,
            call,
        })
    }

    /// Where the champion answers: the name it answered under when judged; else a tuned
    /// model's endpoint where tuned models of its base are served (the first name an
    /// evaluation would try); else a base model's publisher path.
    fn serving_of(&self, champion: &Champion) -> Option<String> {
        if let Some(serving) = &champion.serving {
            return Some(serving.clone());
        }
        if let Some(endpoint) = &champion.endpoint {
            return self
                .config
                .table
                .resolve(&champion.base_model)
                .limits
                .tuned_candidates(endpoint)
                .into_iter()
                .next();
        }
        // A base model: where it answers today, whatever location the pointer recorded.
        (champion.model.starts_with("projects/") && champion.model.contains("/publishers/"))
            .then(|| self.contestants.base(&champion.base_model).model)
            .filter(|m| m.starts_with("projects/"))
    }
    /// Logs a notice about a run and queues its delivery: the run never waits for a receiver
    /// (see [`crate::notify::Notifier::post`]).
    pub(super) fn notify(&self, event: Event, record: &RunRecord, details: Value) {
        self.notice(Notice::new(event, record.run_id.clone(), record.status).with_details(details));
    }

    fn notice(&self, notice: Notice) {
        self.notifier.post(notice);
    }
}

/// A `curl` line that calls `name` on the host of its location, every word shell-quoted
/// (the pointer is a file anyone with bucket access can edit).
fn call_line(hosts: &crate::locations::Hosts, name: &str) -> Option<String> {
    let url = hosts.url(&format!("{name}:generateContent"));
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}"#;
    let quoted = shlex::try_join([
        "curl",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        url.as_str(),
        "-d",
        body,
    ])
    .ok()?;
    // The token comes from gcloud when the line runs: the one expansion, in double quotes.
    Some(quoted.replacen(
        "curl -X POST",
        "curl -X POST -H \"Authorization: Bearer $(gcloud auth print-access-token)\"",
        1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locations::Hosts;

    #[test]
    fn the_call_line_calls_the_serving_host_and_quotes_every_word() {
        let line = call_line(&Hosts::google(), "projects/p/locations/us/endpoints/7").unwrap();
        assert!(
            line.starts_with(
                "curl -X POST -H \"Authorization: Bearer $(gcloud auth print-access-token)\" "
            ),
            "{line}"
        );
        assert!(
            line.contains("https://aiplatform.us.rep.googleapis.com/v1/projects/p/locations/us/endpoints/7:generateContent"),
            "{line}"
        );
        let hostile = call_line(
            &Hosts::google(),
            "projects/p/locations/us/endpoints/7'; rm -rf ~; echo '",
        )
        .unwrap();
        let words = shlex::split(&hostile).unwrap();
        assert_eq!(words.len(), 10, "{hostile}: {words:?}");
        assert!(
            words[7].ends_with("rm -rf ~; echo ':generateContent"),
            "one word: {words:?}"
        );
    }
}
