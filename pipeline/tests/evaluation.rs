//! Only a better model ships, in process: the memory store as the bucket, the scripted tuner
//! of [`crate::run`], and scripted contestants (deterministic answers with a set error rate per
//! model). The frozen evaluation set, blessing and not blessing, promotion by
//! compare-and-swap, the alias repaired after a crash, resuming an interrupted evaluation
//! without paying twice, rollbacks, continuous tuning from the champion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use autotune::champion::{self, Champion};
use autotune::evaluate::Row;
use autotune::evaluate::bless::Thresholds;
use autotune::evaluate::contestants::{CandidateRun, Contestants};
use autotune::evaluate::model::{Generation, Model, ModelError, Reply};
use autotune::evaluate::rehearsal::Rehearsal;
use autotune::registry::{Registry, RegistryError};
use autotune::run::{Config, EvalModel, Evaluation, Job};
use autotune::status::RunStatus;
use autotune::storage::{self, PutMode, Store};
use autotune::tuner::TuningMode;
use bytes::Bytes;
use serde_json::Value;

use crate::run::{Follow, Scripted, bucket, config, record_of, run, samples};

/// Contestants whose answers are right except on a set share of rows per model.
#[derive(Default)]
struct Judges {
    /// The error rate of each run's candidate, by run order (the last repeats).
    candidate_errors: Mutex<Vec<f64>>,
    /// Error rates by model name.
    rates: Mutex<HashMap<String, f64>>,
    /// Calls answered, in all.
    calls: Arc<AtomicU64>,
    /// After this many calls every call hangs (a crash in the middle of the evaluation).
    hang_after: Option<u64>,
    /// Told when the first call is made (to race another promotion against the run).
    on_first_call: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

struct Counted {
    inner: Rehearsal,
    calls: Arc<AtomicU64>,
    hang_after: Option<u64>,
    on_first_call: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    first: Mutex<bool>,
}

#[async_trait]
impl Model for Counted {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn generate(&self, row: &Row, config: &Generation) -> Result<Reply, ModelError> {
        let n = self.calls.load(Ordering::SeqCst);
        if self.hang_after.is_some_and(|h| n >= h) {
            std::future::pending::<()>().await;
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hook = {
            let mut first = self.first.lock().unwrap();
            if *first {
                *first = false;
                self.on_first_call.lock().unwrap().take()
            } else {
                None
            }
        };
        if let Some(hook) = hook {
            hook();
        }
        self.inner.generate(row, config).await
    }
}

impl Judges {
    fn new(candidate_errors: &[f64]) -> Arc<Self> {
        Arc::new(Self {
            candidate_errors: Mutex::new(candidate_errors.to_vec()),
            rates: Mutex::new(HashMap::from([("base".to_owned(), 0.3)])),
            ..Self::default()
        })
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Contestants for Judges {
    fn base(&self, source_model: &str) -> Champion {
        Champion::base(source_model, "base".to_owned())
    }

    fn candidate(&self, run: &CandidateRun<'_>) -> Option<Champion> {
        let (run_id, source_model, details) = (run.run_id, run.source_model, run.details);
        let model = details["tuned_model"].as_str()?.to_owned();
        let mut errors = self.candidate_errors.lock().unwrap();
        let rate = if errors.len() > 1 {
            errors.remove(0)
        } else {
            errors[0]
        };
        self.rates.lock().unwrap().insert(model.clone(), rate);
        Some(Champion {
            model,
            endpoint: details["endpoint"].as_str().map(str::to_owned),
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
        })
    }

    fn open(&self, who: &Champion, _candidate: bool) -> Result<Arc<dyn Model>, ModelError> {
        let rate = self.rates.lock().unwrap()[&who.model];
        Ok(Arc::new(Counted {
            inner: Rehearsal::new(&who.model, rate),
            calls: self.calls.clone(),
            hang_after: self.hang_after,
            on_first_call: Mutex::new(self.on_first_call.lock().unwrap().take()),
            first: Mutex::new(true),
        }))
    }
}

/// A registry that remembers where the alias is, and can fail its next moves.
#[derive(Default)]
struct Aliases {
    at: Mutex<Option<String>>,
    fail_next: AtomicU64,
    /// Fails the next withdrawals (a rollback to the base model dying before the alias moved).
    fail_withdraw: AtomicU64,
    moves: AtomicU64,
    /// The next move hangs, after telling `hung` (the process dies right after the pointer
    /// moved, before the alias did).
    hang_next: std::sync::atomic::AtomicBool,
    hung: tokio::sync::Notify,
}

#[async_trait]
impl Registry for Aliases {
    async fn champion(&self, _model: &str) -> Result<Option<String>, RegistryError> {
        Ok(self.at.lock().unwrap().clone())
    }

    async fn promote(&self, new: &str, _previous: Option<&str>) -> Result<(), RegistryError> {
        if self.hang_next.swap(false, Ordering::SeqCst) {
            self.hung.notify_one();
            std::future::pending::<()>().await;
        }
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            return Err(RegistryError::Api {
                action: "move the champion alias to",
                model: new.to_owned(),
                status: Some(503),
                message: "the process died here".to_owned(),
            });
        }
        self.moves.fetch_add(1, Ordering::SeqCst);
        *self.at.lock().unwrap() = Some(new.to_owned());
        Ok(())
    }

    async fn withdraw(&self, previous: &str) -> Result<(), RegistryError> {
        if self.fail_withdraw.load(Ordering::SeqCst) > 0 {
            self.fail_withdraw.fetch_sub(1, Ordering::SeqCst);
            return Err(RegistryError::Api {
                action: "take the champion alias off",
                model: previous.to_owned(),
                status: Some(503),
                message: "the process died here".to_owned(),
            });
        }
        *self.at.lock().unwrap() = None;
        Ok(())
    }
}

fn evaluation() -> Evaluation {
    Evaluation {
        ratio: 0.25,
        max: 1000,
        new_set: false,
        model: EvalModel::Rehearsal,
        metric: None,
        thresholds: Thresholds {
            min_rows: 20,
            floor: 0.0,
            min_delta: 0.0,
            confidence: 0.95,
            guard_epsilon: 0.02,
        },
        concurrency: 4,
        google_metrics: false,
        max_output_tokens: 256,
        checkpoints: autotune::evaluate::checkpoints::Selection::All,
    }
}

fn eval_config() -> Config {
    Config {
        evaluation: Some(evaluation()),
        ..config()
    }
}

/// A bucket of text pairs, the scripted tuner, contestants, the alias registry, and the job on
/// them with evaluation on: what most scenarios start from.
struct Scene {
    store: Arc<dyn Store>,
    tuner: Arc<Scripted>,
    judges: Arc<Judges>,
    aliases: Arc<Aliases>,
    j: Job,
}

/// [`Scene`] with `pairs` text pairs and candidates erring at `errors` (by run).
async fn scene(pairs: usize, errors: &[f64]) -> Scene {
    let store = bucket();
    samples(&*store, 0, pairs, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let (judges, aliases) = (Judges::new(errors), Arc::new(Aliases::default()));
    let j = job_with(&store, &tuner, &judges, &aliases, eval_config());
    Scene {
        store,
        tuner,
        judges,
        aliases,
        j,
    }
}

fn job_with(
    store: &Arc<dyn Store>,
    tuner: &Arc<Scripted>,
    judges: &Arc<Judges>,
    aliases: &Arc<Aliases>,
    config: Config,
) -> Job {
    let mut j = Job::new(config, store.clone(), tuner.clone());
    j.contestants = judges.clone();
    j.registry = aliases.clone();
    j
}

async fn pointer(store: &dyn Store) -> Option<Champion> {
    champion::read(store, "trained_model")
        .await
        .unwrap()
        .map(|c| c.champion)
}

async fn lines(store: &dyn Store, uri: Option<&str>) -> Vec<String> {
    let Some(uri) = uri else { return Vec::new() };
    let key = uri.split_once("://").unwrap().1.split_once('/').unwrap().1;
    let body = storage::get_bytes(store, key, 1 << 24).await.unwrap();
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_evaluation_set_is_frozen_and_never_trained_even_renamed() {
    let Scene { store, j, .. } = scene(120, &[0.05]).await;
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r1 = record_of(&*store, &o).await;
    let set = autotune::evaluate::set::current(&*store, "trained_model")
        .await
        .unwrap()
        .expect("the first evaluating run froze a set");
    let n = set.rows.len() as u64;
    assert!((15..=45).contains(&n), "about a quarter of 120: {n}");
    assert_eq!(r1["eval_set_id"], set.info.id.as_str());
    assert_eq!(r1["new_eval_set"], true);
    assert_eq!(r1["counts"]["eval"], n);
    assert_eq!(
        r1["counts"]["train"].as_u64().unwrap() + r1["counts"]["validation"].as_u64().unwrap() + n,
        120
    );
    // The reference as it appears in a dataset line: a JSON string (quotes escaped).
    let in_files = |lines: &[String], row: &Row| {
        let needle = serde_json::to_string(&row.reference).unwrap();
        lines.iter().any(|l| l.contains(&needle))
    };
    let train = lines(&*store, r1["train_dataset_uri"].as_str()).await;
    let val = lines(&*store, r1["validation_dataset_uri"].as_str()).await;
    for row in &set.rows {
        assert!(
            !in_files(&train, row) && !in_files(&val, row),
            "{} was trained or validated",
            row.key
        );
    }

    // Rename an evaluation sample and add new data: the set is the same, the renamed sample
    // stays out of both files.
    let moved = &set.rows[0];
    let i: usize = moved.key.trim_start_matches('s').parse().unwrap();
    for ext in ["txt", "json"] {
        let from = format!("raw_training_data/s{i:03}.{ext}");
        let body = storage::get_bytes(&*store, &from, 1 << 20).await.unwrap();
        store.delete(&from).await.unwrap();
        store
            .put(
                &format!("raw_training_data/renamed{i:03}.{ext}"),
                body,
                PutMode::Overwrite,
            )
            .await
            .unwrap();
    }
    samples(&*store, 500, 20, &[]).await;
    let o2 = run(&j).await;
    assert_eq!(o2.status, RunStatus::Success, "{}", o2.reason);
    let r2 = record_of(&*store, &o2).await;
    assert_eq!(r2["eval_set_id"], set.info.id.as_str(), "the same set");
    assert!(r2.get("new_eval_set").is_none(), "{r2}");
    let train = lines(&*store, r2["train_dataset_uri"].as_str()).await;
    let val = lines(&*store, r2["validation_dataset_uri"].as_str()).await;
    for row in &set.rows {
        assert!(
            !in_files(&train, row) && !in_files(&val, row),
            "{} leaked after the rename",
            row.key
        );
    }
    assert_eq!(
        r2["counts"]["eval"], n,
        "the renamed sample still counts as evaluation"
    );
}

#[tokio::test]
async fn a_better_candidate_is_blessed_and_promoted_a_worse_one_is_not() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    // Run 1 much better than the base (30% wrong); run 2 much worse than run 1.
    let (judges, aliases) = (Judges::new(&[0.02, 0.6]), Arc::new(Aliases::default()));
    let j = job_with(&store, &tuner, &judges, &aliases, eval_config());
    let o = run(&j).await;
    let r1 = record_of(&*store, &o).await;
    assert_eq!(
        r1["evaluation"]["verdict"], "BLESSED",
        "{}",
        r1["evaluation"]
    );
    assert_eq!(r1["promotion"]["promoted"], true, "{}", r1["promotion"]);
    let first = pointer(&*store).await.expect("promoted");
    assert_eq!(first.run_id.as_deref(), o.run_id.as_deref());
    assert_eq!(first.previous.as_ref().unwrap().model, "base");
    assert_eq!(
        aliases.at.lock().unwrap().as_deref(),
        Some(first.model.as_str())
    );
    let blessing_uri = r1["evaluation"]["blessing_uri"].as_str().unwrap();
    let blessing: Value =
        serde_json::from_str(&lines(&*store, Some(blessing_uri)).await.join("\n")).unwrap();
    assert_eq!(blessing["verdict"], "BLESSED");
    assert_eq!(blessing["thresholds"]["min_rows"], 20);
    let rows = r1["evaluation"]["rows"].as_u64().unwrap();
    assert_eq!(judges.calls(), 2 * rows, "each row once per model");

    samples(&*store, 500, 20, &[]).await;
    let o2 = run(&j).await;
    let r2 = record_of(&*store, &o2).await;
    assert_eq!(
        o2.status,
        RunStatus::Success,
        "tuning succeeded: {}",
        o2.reason
    );
    assert_eq!(
        r2["evaluation"]["verdict"], "NOT_BLESSED",
        "{}",
        r2["evaluation"]
    );
    assert_eq!(
        r2["evaluation"]["champion"]["model"],
        first.model.as_str(),
        "judged against the champion"
    );
    assert_eq!(r2["promotion"]["promoted"], false);
    assert_eq!(
        pointer(&*store).await.unwrap().model,
        first.model,
        "the champion stays"
    );
    let history = autotune::summary::history(&j.history(10).await.unwrap());
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].blessed, Some(false));
    assert_eq!(history[1].promoted, Some(true));
}

#[tokio::test]
async fn an_equal_or_noisily_better_candidate_is_not_blessed() {
    for (candidate, base) in [(0.3, 0.3), (0.26, 0.3)] {
        let store = bucket();
        samples(&*store, 0, 160, &[]).await;
        let tuner = Scripted::new(Follow::Succeed);
        let (judges, aliases) = (Judges::new(&[candidate]), Arc::new(Aliases::default()));
        judges.rates.lock().unwrap().insert("base".into(), base);
        let o = run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
        let r = record_of(&*store, &o).await;
        assert_eq!(
            r["evaluation"]["verdict"], "NOT_BLESSED",
            "{candidate} vs {base}: {}",
            r["evaluation"]
        );
        assert!(pointer(&*store).await.is_none(), "nothing promoted");
        assert_eq!(r["promotion"]["promoted"], false);
    }
}

#[tokio::test]
async fn too_few_rows_are_not_blessed_and_say_so() {
    let store = bucket();
    samples(&*store, 0, 40, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let (judges, aliases) = (Judges::new(&[0.0]), Arc::new(Aliases::default()));
    let o = run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
    let r = record_of(&*store, &o).await;
    assert_eq!(r["evaluation"]["verdict"], "NOT_BLESSED");
    let reasons = r["evaluation"]["reasons"].to_string();
    assert!(reasons.contains("EVAL_MIN_ROWS"), "{reasons}");
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_evaluation_resumes_without_paying_twice() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let aliases = Arc::new(Aliases::default());
    let crashing = Arc::new(Judges {
        hang_after: Some(15),
        ..Arc::into_inner(Judges::new(&[0.02])).unwrap()
    });
    let j = job_with(&store, &tuner, &crashing, &aliases, eval_config());
    let calls = crashing.calls.clone();
    let shutdown = async move {
        while calls.load(Ordering::SeqCst) < 15 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Let the stored chunks land before the signal.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        "SIGTERM"
    };
    let o = j.run(shutdown, false).await;
    assert_eq!(o.status, RunStatus::Interrupted, "{}", o.reason);
    let paid = crashing.calls();
    assert_eq!(paid, 15);

    // The next run adopts the finished job and evaluates, reading back what was stored.
    let judges = Judges::new(&[0.02]);
    judges
        .rates
        .lock()
        .unwrap()
        .extend(crashing.rates.lock().unwrap().clone());
    let j2 = job_with(&store, &tuner, &judges, &aliases, eval_config());
    let o2 = run(&j2).await;
    assert_eq!(o2.status, RunStatus::Success, "{}", o2.reason);
    let r = record_of(&*store, &o2).await;
    let rows = r["evaluation"]["rows"].as_u64().unwrap();
    let resumed = r["evaluation"]["cost"]["calls_resumed"].as_u64().unwrap();
    assert!(resumed > 0, "{}", r["evaluation"]);
    assert_eq!(judges.calls() + resumed, 2 * rows, "no row paid twice");
    assert!(resumed <= paid);
    assert_eq!(r["promotion"]["promoted"], true);
    assert_eq!(tuner.submits(), 1, "one tuning job");
}

#[tokio::test]
async fn a_crash_between_pointer_and_alias_is_repaired_by_the_next_run() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let judges = Judges::new(&[0.02, 0.9]);
    let aliases = Arc::new(Aliases::default());
    aliases.fail_next.store(1, Ordering::SeqCst);
    let j = job_with(&store, &tuner, &judges, &aliases, eval_config());
    let o = run(&j).await;
    let r = record_of(&*store, &o).await;
    assert_eq!(r["promotion"]["promoted"], true);
    assert!(
        r["promotion"]["alias"].as_str().unwrap().contains("behind"),
        "{}",
        r["promotion"]
    );
    assert_eq!(
        *aliases.at.lock().unwrap(),
        None,
        "the alias is behind the pointer"
    );
    let champion = pointer(&*store).await.unwrap();

    samples(&*store, 500, 20, &[]).await;
    let o2 = run(&j).await;
    assert_eq!(o2.status, RunStatus::Success, "{}", o2.reason);
    assert_eq!(
        aliases.at.lock().unwrap().as_deref(),
        Some(champion.model.as_str()),
        "repaired"
    );
    assert_eq!(
        pointer(&*store).await.unwrap().model,
        champion.model,
        "run 2 was not blessed"
    );
}

/// Issue 20 item 7: interrupted right after the champion pointer moved (the alias not yet):
/// the run adopting the job recognises its own candidate as the champion, and its record says
/// promoted, as the pointer does, instead of judging the candidate against itself.
#[tokio::test]
async fn a_run_interrupted_right_after_the_pointer_moved_is_recorded_as_promoted() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let judges = Judges::new(&[0.02]);
    let aliases = Arc::new(Aliases::default());
    aliases.hang_next.store(true, Ordering::SeqCst);
    let j = job_with(&store, &tuner, &judges, &aliases, eval_config());
    let signal = {
        let aliases = aliases.clone();
        async move {
            aliases.hung.notified().await;
            "SIGTERM"
        }
    };
    let o = j.run(signal, false).await;
    assert_eq!(o.status, RunStatus::Interrupted, "{}", o.reason);
    let champion = pointer(&*store).await.unwrap();
    assert_eq!(champion.run_id, o.run_id, "the pointer moved");
    let interrupted = record_of(&*store, &o).await;
    assert_eq!(
        interrupted["promotion"]["promoted"], true,
        "the interrupted record agrees with the pointer: {}",
        interrupted["promotion"]
    );

    let again = Judges::new(&[0.02]);
    again
        .rates
        .lock()
        .unwrap()
        .extend(judges.rates.lock().unwrap().clone());
    let adopted = run(&job_with(&store, &tuner, &again, &aliases, eval_config())).await;
    assert_eq!(adopted.status, RunStatus::Success, "{}", adopted.reason);
    assert_eq!(adopted.run_id, o.run_id, "the same run, finalised");
    let r = record_of(&*store, &adopted).await;
    assert_eq!(r["evaluation"]["verdict"], "BLESSED", "{}", r["evaluation"]);
    assert_eq!(r["promotion"]["promoted"], true, "{}", r["promotion"]);
    assert!(
        adopted
            .reason
            .ends_with("candidate BLESSED, promoted to champion")
            || adopted.reason.contains(", promoted to champion"),
        "{}",
        adopted.reason
    );
    assert_eq!(
        again.calls(),
        0,
        "the candidate is not judged against itself"
    );
    let now = pointer(&*store).await.unwrap();
    assert_eq!(now.model, champion.model, "the pointer is unchanged");
    assert_ne!(
        now.previous.as_ref().map(|p| p.model.clone()),
        Some(champion.model.clone()),
        "the candidate is not its own predecessor"
    );
    assert_eq!(
        aliases.at.lock().unwrap().as_deref(),
        Some(champion.model.as_str()),
        "the alias followed the pointer"
    );
    assert_eq!(tuner.submits(), 1);
}

#[tokio::test]
async fn a_promotion_raced_by_another_writer_loses_and_says_why() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let judges = Judges::new(&[0.02]);
    let aliases = Arc::new(Aliases::default());
    // Another run promotes its model while this one evaluates.
    let other = store.clone();
    *judges.on_first_call.lock().unwrap() = Some(Box::new(move || {
        let c = Champion {
            run_id: Some("other-run".into()),
            ..Champion::base("g", "projects/p/locations/us-central1/models/9@1".into())
        };
        let body = serde_json::to_vec(&c).unwrap();
        futures::executor::block_on(other.put(
            &champion::pointer_key("trained_model"),
            Bytes::from(body),
            PutMode::Create,
        ))
        .unwrap();
    }));
    let o = run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
    let r = record_of(&*store, &o).await;
    assert_eq!(r["evaluation"]["verdict"], "BLESSED");
    assert_eq!(r["promotion"]["promoted"], false, "{}", r["promotion"]);
    let reason = r["promotion"]["reason"].as_str().unwrap();
    assert!(reason.contains("other-run"), "{reason}");
    assert_eq!(
        pointer(&*store).await.unwrap().run_id.as_deref(),
        Some("other-run"),
        "the winner stays"
    );
}

/// A garbage `champion.json` would silently stop every promotion while runs exit 0: a run
/// that finds one fails before it pays for tuning (evaluation on or off), naming the object and
/// the reason, and its record says why; the pointer is left for the operator to repair.
#[tokio::test]
async fn an_unreadable_champion_pointer_fails_the_run_before_tuning_and_says_why() {
    for config in [eval_config(), crate::run::config()] {
        let store = bucket();
        samples(&*store, 0, 160, &[]).await;
        let key = champion::pointer_key("trained_model");
        store
            .put(
                &key,
                Bytes::from_static(b"{\"model\": 42, garbage"),
                PutMode::Create,
            )
            .await
            .unwrap();
        let tuner = Scripted::new(Follow::Succeed);
        let (judges, aliases) = (Judges::new(&[0.02]), Arc::new(Aliases::default()));
        let j = job_with(&store, &tuner, &judges, &aliases, config);
        // `plan` tells what `run` would do: fail, for the same reason.
        let p = j.plan().await;
        assert_eq!(p.status, RunStatus::Failed, "{}", p.reason);
        assert!(p.reason.contains("not a champion pointer"), "{}", p.reason);
        let o = run(&j).await;
        assert_eq!(o.status, RunStatus::Failed, "{}", o.reason);
        assert_eq!(o.status.exit_code(), 1);
        for said in ["champion.json", "not a champion pointer", "every promotion"] {
            assert!(o.reason.contains(said), "{said}: {}", o.reason);
        }
        assert_eq!(
            tuner.submits(),
            0,
            "nothing is tuned that could not be promoted"
        );
        let r = record_of(&*store, &o).await;
        assert_eq!(r["status"], "failed");
        assert!(
            r["error"].as_str().unwrap().contains("champion.json"),
            "the record says why: {r}"
        );
        let left = storage::get_bytes(&*store, &key, 1 << 10).await.unwrap();
        assert_eq!(
            &left[..],
            b"{\"model\": 42, garbage",
            "left for the operator"
        );
    }
}

/// The pointer turns to garbage while the candidate is judged: the run does not end as a quiet
/// success; it fails, and its record says the candidate was not promoted and why.
#[tokio::test]
async fn a_pointer_that_turns_unreadable_during_the_run_fails_it_loudly() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let judges = Judges::new(&[0.02]);
    let aliases = Arc::new(Aliases::default());
    let other = store.clone();
    *judges.on_first_call.lock().unwrap() = Some(Box::new(move || {
        futures::executor::block_on(other.put(
            &champion::pointer_key("trained_model"),
            Bytes::from_static(b"not json"),
            PutMode::Overwrite,
        ))
        .unwrap();
    }));
    let o = run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
    assert_eq!(tuner.submits(), 1);
    assert_eq!(o.status, RunStatus::Failed, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    assert_eq!(r["promotion"]["promoted"], false, "{}", r["promotion"]);
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("champion.json"), "{error}");
    assert!(error.contains("not a champion pointer"), "{error}");
}

#[tokio::test]
async fn rollback_moves_pointer_and_alias_back_and_continuous_tuning_starts_from_the_champion() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    // Run 1 blessed, run 2 blessed (better still), run 3 not blessed.
    let judges = Judges::new(&[0.25, 0.0, 0.9]);
    judges.rates.lock().unwrap().insert("base".into(), 0.7);
    let aliases = Arc::new(Aliases::default());
    let cfg = Config {
        tuning_mode: TuningMode::Continuous,
        ..eval_config()
    };
    let j = job_with(&store, &tuner, &judges, &aliases, cfg);
    let o1 = run(&j).await;
    let r1 = record_of(&*store, &o1).await;
    assert_eq!(r1["promotion"]["promoted"], true, "{}", r1["evaluation"]);
    let m1 = pointer(&*store).await.unwrap().model;
    samples(&*store, 500, 20, &[]).await;
    let o2 = run(&j).await;
    let r2 = record_of(&*store, &o2).await;
    assert_eq!(r2["promotion"]["promoted"], true, "{}", r2["evaluation"]);
    let m2 = pointer(&*store).await.unwrap().model;
    samples(&*store, 600, 20, &[]).await;
    let o3 = run(&j).await;
    let r3 = record_of(&*store, &o3).await;
    assert_eq!(r3["evaluation"]["verdict"], "NOT_BLESSED");
    let m3 = r3["model_details"]["tuned_model"]
        .as_str()
        .unwrap()
        .to_owned();
    // Run 4 continues from the champion (run 2's model), never from run 3's rejected one.
    samples(&*store, 700, 20, &[]).await;
    let o4 = run(&j).await;
    let r4 = record_of(&*store, &o4).await;
    assert_eq!(
        r4["model_details"]["parent_model"],
        m2.as_str(),
        "{}",
        r4["model_details"]
    );
    assert_ne!(r4["model_details"]["parent_model"], m3.as_str());

    // Roll back to run 1's model, then undo it: pointer and alias move each time.
    assert_eq!(
        pointer(&*store).await.unwrap().model,
        m2,
        "run 4 was not blessed"
    );
    let back = j.rollback(o1.run_id.as_deref()).await.unwrap().champion;
    assert_eq!(back.model, m1);
    assert_eq!(pointer(&*store).await.unwrap().model, m1);
    assert_eq!(aliases.at.lock().unwrap().as_deref(), Some(m1.as_str()));
    assert!(back.reason.contains("rolled back from"), "{}", back.reason);
    let undo = j.rollback(None).await.unwrap().champion;
    assert_eq!(undo.model, m2);
    assert_eq!(aliases.at.lock().unwrap().as_deref(), Some(m2.as_str()));
    let info = j.champion().await.unwrap();
    assert_eq!(info.champion.model, m2);
    assert!(j.rollback(Some("no-such-run")).await.is_err());
    // Back past the first tuned model: the base model, and the alias withdrawn.
    j.rollback(None).await.unwrap();
    let base = j.rollback(None).await.unwrap().champion;
    assert_eq!(base.run_id, None, "{}", base.model);
    assert_eq!(*aliases.at.lock().unwrap(), None);
}

#[tokio::test]
async fn a_new_evaluation_set_is_picked_only_from_content_never_trained() {
    let Scene {
        store,
        tuner,
        judges,
        aliases,
        j,
    } = scene(120, &[0.02]).await;
    run(&j).await;
    let first = current_set(&*store).await;
    samples(&*store, 500, 120, &[]).await;
    let cfg = Config {
        evaluation: Some(Evaluation {
            new_set: true,
            ..evaluation()
        }),
        ..config()
    };
    let o = run(&job_with(&store, &tuner, &judges, &aliases, cfg)).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    let second = current_set(&*store).await;
    assert_ne!(second.info.id, first.info.id);
    assert_eq!(
        second.info.replaced.as_deref(),
        Some(first.info.id.as_str())
    );
    assert_eq!(r["new_eval_set"], true, "recorded");
    assert_eq!(r["eval_set_id"], second.info.id.as_str());
    assert!(!second.rows.is_empty());
    assert_eq!(
        r["counts"]["eval"],
        second.rows.len() as u64,
        "the new set's rows; the old set's were held out"
    );
    for row in &second.rows {
        let i: usize = row.key.trim_start_matches('s').parse().unwrap();
        assert!(i >= 500, "{} was read by an earlier run", row.key);
    }
}

#[tokio::test]
async fn a_run_announces_each_step_of_the_loop() {
    use autotune::notify::{Config as NotifyConfig, Notifier};
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let receiver = crate::support::loopback::Loopback::start(move |r| {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let signed = autotune::notify::verify(
            b"s3cret",
            &r.body,
            r.header("x-autotune-signature").unwrap_or_default(),
        );
        seen.lock()
            .unwrap()
            .push((body["event"].as_str().unwrap().to_owned(), signed));
        crate::support::loopback::Reply::json(204, serde_json::json!({}))
    });
    let Scene { mut j, .. } = scene(160, &[0.02]).await;
    j.notifier = Arc::new(
        Notifier::new(NotifyConfig {
            webhook: Some(format!("{}/hook", receiver.url).parse().unwrap()),
            webhook_secret: Some("s3cret".into()),
            ..NotifyConfig::default()
        })
        .unwrap(),
    );
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    j.rollback(None).await.unwrap();
    let got = events.lock().unwrap().clone();
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "tuning_submitted",
            "tuning_succeeded",
            "blessed",
            "promoted",
            "rolled_back"
        ]
    );
    assert!(
        got.iter().all(|(_, signed)| *signed),
        "every delivery is signed"
    );
}

#[tokio::test]
async fn a_new_evaluation_set_that_picks_nothing_keeps_the_old_set_out_of_training() {
    // `--new-eval-set` routes the build by picking; when nothing new is picked (here: a much
    // smaller EVAL_RATIO) the set in use stays in use, so its rows must not have been written
    // to this run's files: the candidate is judged on them.
    let Scene {
        store,
        tuner,
        judges,
        aliases,
        j,
    } = scene(120, &[0.02]).await;
    run(&j).await;
    let first = current_set(&*store).await;
    samples(&*store, 500, 20, &[]).await;
    let cfg = Config {
        evaluation: Some(Evaluation {
            new_set: true,
            ratio: 1e-12,
            ..evaluation()
        }),
        ..config()
    };
    let o = run(&job_with(&store, &tuner, &judges, &aliases, cfg)).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    let used = current_set(&*store).await;
    assert_eq!(used.info.id, first.info.id, "nothing new was picked");
    assert_eq!(
        r["counts"]["eval"],
        used.rows.len() as u64,
        "{}",
        r["counts"]
    );
    if let Some(id) = r["eval_set_id"].as_str() {
        assert_eq!(id, used.info.id);
    }
    let train = lines(&*store, r["train_dataset_uri"].as_str()).await;
    let val = lines(&*store, r["validation_dataset_uri"].as_str()).await;
    for row in &used.rows {
        // The reference as it appears in a dataset line: a JSON string.
        let needle = serde_json::to_string(&row.reference).unwrap();
        assert!(
            !train.iter().chain(&val).any(|l| l.contains(&needle)),
            "{} of the set in use was trained or validated by run {}",
            row.key,
            r["run_id"]
        );
    }
}

#[tokio::test]
async fn a_rollback_to_the_base_model_that_could_not_withdraw_the_alias_is_repaired_by_the_next_run()
 {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    // Run 1 blessed, run 2 not.
    let judges = Judges::new(&[0.02, 0.9]);
    let aliases = Arc::new(Aliases::default());
    let j = job_with(&store, &tuner, &judges, &aliases, eval_config());
    let o1 = run(&j).await;
    let r1 = record_of(&*store, &o1).await;
    assert_eq!(r1["promotion"]["promoted"], true, "{}", r1["evaluation"]);
    let m1 = pointer(&*store).await.unwrap().model;
    assert_eq!(aliases.at.lock().unwrap().as_deref(), Some(m1.as_str()));
    // Roll back to the base model; the alias cannot be taken off m1 (the process dies there).
    aliases.fail_withdraw.store(1, Ordering::SeqCst);
    let rolled = j.rollback(None).await.unwrap();
    assert!(
        rolled.alias.contains("behind"),
        "the rollback says so: {}",
        rolled.alias
    );
    let base = rolled.champion;
    assert_eq!(base.run_id, None);
    assert_eq!(
        aliases.at.lock().unwrap().as_deref(),
        Some(m1.as_str()),
        "the alias is behind the pointer"
    );
    // The next run finds the alias behind the pointer and repairs it: the rolled-back model
    // no longer answers to `champion`.
    samples(&*store, 500, 20, &[]).await;
    let o2 = run(&j).await;
    assert_eq!(o2.status, RunStatus::Success, "{}", o2.reason);
    assert_eq!(
        pointer(&*store).await.unwrap().run_id,
        None,
        "run 2 was not blessed"
    );
    assert_eq!(
        *aliases.at.lock().unwrap(),
        None,
        "the rolled-back model still carries the champion alias"
    );
}

#[tokio::test]
async fn an_alias_behind_the_pointer_is_repaired_by_a_run_with_nothing_new() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let judges = Judges::new(&[0.02]);
    let aliases = Arc::new(Aliases::default());
    aliases.fail_next.store(1, Ordering::SeqCst);
    let j = job_with(&store, &tuner, &judges, &aliases, eval_config());
    let o = run(&j).await;
    let r = record_of(&*store, &o).await;
    assert_eq!(r["promotion"]["promoted"], true);
    assert_eq!(*aliases.at.lock().unwrap(), None, "behind the pointer");
    let champion = pointer(&*store).await.unwrap();
    // No new data: the next (scheduled or triggered) run waits at the gates.
    let o2 = run(&j).await;
    assert_ne!(o2.status, RunStatus::Success, "{}", o2.reason);
    assert_eq!(
        aliases.at.lock().unwrap().as_deref(),
        Some(champion.model.as_str()),
        "a run that finds the alias behind the pointer repairs it, tuning or not"
    );
}

#[tokio::test]
async fn a_run_that_judges_nothing_still_repairs_the_alias() {
    let store = bucket();
    samples(&*store, 0, 160, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let judges = Judges::new(&[0.02]);
    let aliases = Arc::new(Aliases::default());
    aliases.fail_next.store(1, Ordering::SeqCst);
    let j = job_with(&store, &tuner, &judges, &aliases, eval_config());
    run(&j).await;
    let champion = pointer(&*store).await.unwrap();
    assert_eq!(*aliases.at.lock().unwrap(), None, "the alias is behind");
    // The same bytes uploaded again: the run takes the lease, builds, finds nothing new to
    // tune, and judges nothing; it repairs the alias all the same.
    samples(&*store, 0, 10, &[]).await;
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Unchanged, "{}", o.reason);
    assert_eq!(
        aliases.at.lock().unwrap().as_deref(),
        Some(champion.model.as_str())
    );
}

#[tokio::test]
async fn a_set_smaller_than_the_minimum_grows_from_new_content_only() {
    let Scene { store, j, .. } = scene(40, &[0.02]).await;
    let o1 = run(&j).await;
    let r1 = record_of(&*store, &o1).await;
    let small = current_set(&*store).await;
    assert!(small.rows.len() < 20, "{} rows", small.rows.len());
    assert_eq!(r1["evaluation"]["verdict"], "NOT_BLESSED");
    let trained: Vec<String> = lines(&*store, r1["train_dataset_uri"].as_str()).await;

    samples(&*store, 500, 80, &[]).await;
    let o2 = run(&j).await;
    let r2 = record_of(&*store, &o2).await;
    let grown = current_set(&*store).await;
    assert!(grown.info.grown, "{:?}", grown.info);
    assert_eq!(grown.info.replaced.as_deref(), Some(small.info.id.as_str()));
    assert!(grown.rows.len() > small.rows.len());
    for row in &small.rows {
        assert!(grown.rows.contains(row), "the old rows stay: {}", row.key);
    }
    for row in grown.rows.iter().filter(|r| !small.rows.contains(r)) {
        let i: usize = row.key.trim_start_matches('s').parse().unwrap();
        assert!(i >= 500, "{} was trained by run 1", row.key);
        let reference = serde_json::to_string(&row.reference).unwrap();
        assert!(
            !trained.iter().any(|l| l.contains(&reference)),
            "{}",
            row.key
        );
    }
    assert_eq!(r2["eval_set_id"], grown.info.id.as_str());
    assert_eq!(r2["counts"]["eval"], grown.rows.len(), "{}", r2["counts"]);
    assert_eq!(r2["evaluation"]["rows"], grown.rows.len());
}

/// The index entries of a run: (file, key).
async fn index_of(store: &dyn Store, record: &Value) -> Vec<(String, String)> {
    lines(store, record["index_uri"].as_str())
        .await
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["file"].as_str().unwrap().to_owned(),
                v["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn current_set(store: &dyn Store) -> autotune::evaluate::set::Frozen {
    autotune::evaluate::set::current(store, "trained_model")
        .await
        .unwrap()
        .expect("a set is in use")
}

/// Issue 20 item 1: fixing the label of evaluation samples (the most ordinary thing a
/// labelling team does) moved them to training while the set still judged with the old rows.
#[tokio::test]
async fn correcting_labels_of_evaluation_samples_revises_the_set_instead_of_training_them() {
    let Scene { store, j, .. } = scene(120, &[0.02]).await;
    let o1 = run(&j).await;
    assert_eq!(o1.status, RunStatus::Success, "{}", o1.reason);
    let first = current_set(&*store).await;
    assert!(first.rows.len() >= 12, "{} rows", first.rows.len());
    let fixed: Vec<String> = first.rows.iter().take(12).map(|r| r.key.clone()).collect();
    for key in &fixed {
        let label = format!("{{\"answer\":\"corrected {key}\"}}");
        store
            .put(
                &format!("raw_training_data/{key}.json"),
                Bytes::from(label),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
    }
    samples(&*store, 500, 20, &[]).await;
    let o2 = run(&j).await;
    assert_eq!(o2.status, RunStatus::Success, "{}", o2.reason);
    let r2 = record_of(&*store, &o2).await;
    for (file, key) in index_of(&*store, &r2).await {
        assert!(
            !fixed.contains(&key),
            "evaluation sample {key} went to {file} after its label was corrected"
        );
    }
    let revised = current_set(&*store).await;
    assert_ne!(revised.info.id, first.info.id, "a new set version");
    assert_eq!(
        revised.info.replaced.as_deref(),
        Some(first.info.id.as_str())
    );
    assert_eq!(revised.rows.len(), first.rows.len(), "the same samples");
    for key in &fixed {
        let row = revised.rows.iter().find(|r| &r.key == key).unwrap();
        assert_eq!(
            row.reference,
            format!("{{\"answer\":\"corrected {key}\"}}"),
            "the corrected reference judges"
        );
    }
    assert_eq!(r2["eval_set_id"], revised.info.id.as_str(), "{r2}");
    assert_eq!(r2["eval_set_revised"], 12, "recorded: {r2}");
    assert_eq!(r2["counts"]["eval"], first.rows.len() as u64);
    assert_eq!(r2["evaluation"]["rows"], first.rows.len() as u64);

    // The old content under a new name, and a second correction: neither trains.
    let old = &first.rows[0];
    let i: usize = old.key.trim_start_matches('s').parse().unwrap();
    store
        .put(
            "raw_training_data/copy_of_old.txt",
            Bytes::from(format!("question {i}")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    store
        .put(
            "raw_training_data/copy_of_old.json",
            Bytes::from(format!("{{\"answer\":\"a{i}\"}}")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    store
        .put(
            &format!("raw_training_data/{}.json", fixed[1]),
            Bytes::from("{\"answer\":\"corrected twice\"}"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    samples(&*store, 600, 20, &[]).await;
    let o3 = run(&j).await;
    assert_eq!(o3.status, RunStatus::Success, "{}", o3.reason);
    let r3 = record_of(&*store, &o3).await;
    for (file, key) in index_of(&*store, &r3).await {
        assert!(
            key != "copy_of_old" && key != fixed[1],
            "{key} (once in the evaluation set) went to {file}"
        );
    }
}

/// Issue 20 item 2: one run with evaluation off trained on the frozen set, and later runs
/// judged on the contaminated set without a word.
#[tokio::test]
async fn a_run_with_evaluation_off_keeps_the_frozen_set_out_of_training() {
    let store = bucket();
    samples(&*store, 0, 120, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let (judges, aliases) = (Judges::new(&[0.02]), Arc::new(Aliases::default()));
    run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
    let set = current_set(&*store).await;
    samples(&*store, 500, 20, &[]).await;
    let off = job_with(&store, &tuner, &judges, &aliases, config());
    let o = run(&off).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    let members: Vec<&str> = set.rows.iter().map(|r| r.key.as_str()).collect();
    let leaked: Vec<(String, String)> = index_of(&*store, &r)
        .await
        .into_iter()
        .filter(|(_, k)| members.contains(&k.as_str()))
        .collect();
    assert!(leaked.is_empty(), "with evaluation off: {leaked:?}");
    assert_eq!(
        r["counts"]["eval"],
        set.rows.len() as u64,
        "{}",
        r["counts"]
    );
    assert_eq!(
        current_set(&*store).await.info.id,
        set.info.id,
        "the same set"
    );
}

/// Issue 20 item 3: content that trained, was deleted for one run and restored was picked
/// into a new evaluation set: the manifest forgot what deleted samples were.
#[tokio::test]
async fn content_deleted_for_a_run_and_restored_is_never_picked_for_a_new_set() {
    let store = bucket();
    samples(&*store, 0, 120, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let (judges, aliases) = (Judges::new(&[0.02]), Arc::new(Aliases::default()));
    // Evaluation off: everything trains or validates.
    let off = job_with(&store, &tuner, &judges, &aliases, config());
    let o1 = run(&off).await;
    assert_eq!(o1.status, RunStatus::Success);
    let trained: Vec<String> = index_of(&*store, &record_of(&*store, &o1).await)
        .await
        .into_iter()
        .filter(|(file, _)| file == "sft_train.jsonl")
        .map(|(_, key)| key)
        .collect();
    let mut kept = Vec::new();
    for i in 0..60 {
        for ext in ["txt", "json"] {
            let key = format!("raw_training_data/s{i:03}.{ext}");
            kept.push((
                key.clone(),
                storage::get_bytes(&*store, &key, 1 << 20).await.unwrap(),
            ));
            store.delete(&key).await.unwrap();
        }
    }
    samples(&*store, 500, 20, &[]).await;
    assert_eq!(run(&off).await.status, RunStatus::Success);
    for (key, body) in kept {
        store.put(&key, body, PutMode::Overwrite).await.unwrap();
    }
    samples(&*store, 600, 40, &[]).await;
    let o = run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let set = current_set(&*store).await;
    assert!(!set.rows.is_empty());
    for row in &set.rows {
        assert!(
            !trained.contains(&row.key),
            "{} trained before it was deleted and restored",
            row.key
        );
    }
}

/// Issue 20 item 4: a damaged or missing set failed every run with no hint of the fix.
#[tokio::test]
async fn a_damaged_or_missing_evaluation_set_is_replaced_and_the_record_says_so() {
    let Scene { store, j, .. } = scene(120, &[0.02]).await;
    run(&j).await;
    let first = current_set(&*store).await;
    // A set file cut short by hand.
    store
        .put(
            &first.info.object,
            Bytes::from("{\"id\":\"tr"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    samples(&*store, 500, 20, &[]).await;
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    let repaired = r["eval_set_repaired"].as_str().unwrap_or_default();
    assert!(
        repaired.contains(&first.info.object) && repaired.contains("new set"),
        "the record names the damaged object and what was done: {r}"
    );
    let second = current_set(&*store).await;
    assert_eq!(r["eval_set_id"], second.info.id.as_str());
    assert!(r["evaluation"]["rows"].as_u64().unwrap() > 0, "{r}");

    // The set file deleted: replaced again.
    store.delete(&second.info.object).await.unwrap();
    samples(&*store, 600, 20, &[]).await;
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    assert!(
        r["eval_set_repaired"]
            .as_str()
            .is_some_and(|m| m.contains(&second.info.object)),
        "{r}"
    );
    current_set(&*store).await;

    // The pointer itself garbage.
    store
        .put(
            "trained_model/eval/current.json",
            Bytes::from("not json"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    samples(&*store, 700, 20, &[]).await;
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    assert!(
        r["eval_set_repaired"]
            .as_str()
            .is_some_and(|m| m.contains("current.json")),
        "{r}"
    );
    current_set(&*store).await;
}

/// Issue 20 item 2, for buckets an older version left behind: a set whose rows trained (a run
/// with evaluation off before this fix) is not reused silently; a new set is picked from
/// content never trained, and the record says so.
#[tokio::test]
async fn a_set_that_trained_in_an_earlier_run_is_replaced_loudly() {
    let store = bucket();
    samples(&*store, 0, 120, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let (judges, aliases) = (Judges::new(&[0.02]), Arc::new(Aliases::default()));
    let on = job_with(&store, &tuner, &judges, &aliases, eval_config());
    run(&on).await;
    let first = current_set(&*store).await;
    // What an older version did with evaluation off: the set unknown to the build.
    let pointer = "trained_model/eval/current.json";
    let body = storage::get_bytes(&*store, pointer, 1 << 20).await.unwrap();
    store.delete(pointer).await.unwrap();
    samples(&*store, 500, 20, &[]).await;
    let o = run(&job_with(&store, &tuner, &judges, &aliases, config())).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let trained: Vec<String> = index_of(&*store, &record_of(&*store, &o).await)
        .await
        .into_iter()
        .filter(|(file, _)| file == "sft_train.jsonl")
        .map(|(_, key)| key)
        .collect();
    store.put(pointer, body, PutMode::Overwrite).await.unwrap();

    samples(&*store, 600, 40, &[]).await;
    let o = run(&on).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    let said = r["eval_set_repaired"].as_str().unwrap_or_default();
    assert!(
        said.contains(&first.info.id) && said.contains("trained") && said.contains("new set"),
        "{r}"
    );
    let second = current_set(&*store).await;
    assert_ne!(second.info.id, first.info.id);
    assert_eq!(r["eval_set_id"], second.info.id.as_str());
    for row in &second.rows {
        assert!(!trained.contains(&row.key), "{} trained before", row.key);
    }
}

/// Issue 20 item 4: `--new-eval-set` did not help against a set that could not be read.
#[tokio::test]
async fn a_new_evaluation_set_replaces_an_unreadable_one() {
    let store = bucket();
    samples(&*store, 0, 120, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let (judges, aliases) = (Judges::new(&[0.02]), Arc::new(Aliases::default()));
    run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
    let first = current_set(&*store).await;
    store
        .put(
            &first.info.object,
            Bytes::from("\u{0}garbage"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    samples(&*store, 500, 40, &[]).await;
    let cfg = Config {
        evaluation: Some(Evaluation {
            new_set: true,
            ..evaluation()
        }),
        ..config()
    };
    let o = run(&job_with(&store, &tuner, &judges, &aliases, cfg)).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    let second = current_set(&*store).await;
    assert_eq!(r["eval_set_id"], second.info.id.as_str(), "{r}");
    assert_eq!(r["new_eval_set"], true);
    assert!(r["eval_set_repaired"].is_string(), "{r}");
    assert!(r["evaluation"]["rows"].as_u64().unwrap() > 0, "{r}");
}

/// Issue 20: `blessing.json` could not be written (a full disk) and the run only logged a
/// warning: the record said `blessing_uri: null` without a reason. The record's evaluation
/// names the object and the reason, and keeps the verdict and its numbers.
#[tokio::test]
async fn a_blessing_that_cannot_be_written_is_named_in_the_record() {
    use crate::support::hooked::{self, Act, Hooked, Op};
    let hooked = Hooked::new();
    let store: Arc<dyn Store> = hooked.clone();
    samples(&*store, 0, 160, &[]).await;
    hooked.set(|op, key, _| {
        if op == Op::Put && key.ends_with("/blessing.json") {
            Act::Fail(hooked::disk_full(key))
        } else {
            Act::Pass
        }
    });
    let tuner = Scripted::new(Follow::Succeed);
    let judges = Judges::new(&[0.02]);
    let aliases = Arc::new(Aliases::default());
    let o = run(&job_with(&store, &tuner, &judges, &aliases, eval_config())).await;
    let r = record_of(&*store, &o).await;
    let evaluation = &r["evaluation"];
    assert_eq!(evaluation["verdict"], "BLESSED", "{evaluation}");
    assert!(evaluation["blessing_uri"].is_null(), "{evaluation}");
    let error = evaluation["blessing_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("blessing.json") && error.contains("No space left on device"),
        "{evaluation}"
    );
    assert!(
        evaluation["delta"].is_number(),
        "the numbers stay: {evaluation}"
    );
}

/// Issue 20 item 14: evaluation rows were held outside MAX_BYTES_IN_FLIGHT (a set of up to
/// 64 MiB whatever the budget). The set is picked and written within half of the budget, and
/// the samples picked but left out for size still train or validate (none is lost).
#[tokio::test]
async fn the_evaluation_set_is_held_within_half_of_max_bytes_in_flight() {
    let store = bucket();
    for i in 0..160 {
        // Long documents, each its own words (not near-copies of each other).
        let long = (0..500)
            .map(|w| format!("w{i}x{}", w % 97))
            .collect::<Vec<_>>()
            .join(" ");
        crate::run::put(
            &*store,
            &format!("raw_training_data/s{i:03}.txt"),
            format!("question {i}: {long}"),
        )
        .await;
        crate::run::put(
            &*store,
            &format!("raw_training_data/s{i:03}.json"),
            format!("{{\"answer\":\"a{i}\"}}"),
        )
        .await;
    }
    let budget: u64 = 64 * 1024;
    let c = Config {
        max_bytes_in_flight: budget,
        ..eval_config()
    };
    let tuner = Scripted::new(Follow::Succeed);
    let o = run(&Job::new(c, store.clone(), tuner.clone())).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let set = current_set(&*store).await;
    let size = storage::get_bytes(&*store, &set.info.object, 1 << 30)
        .await
        .unwrap()
        .len() as u64;
    assert!(size <= budget / 2, "{size} bytes of rows");
    assert!(set.info.rows >= 5, "{} rows", set.info.rows);
    assert_eq!(
        o.counts.train + o.counts.validation + o.counts.eval + o.counts.eval_held_out,
        160,
        "{:?}",
        o.counts
    );
}

/// Issue 24 item 2: the frozen set was kept out of training by content digest only, so the
/// same text with other whitespace, case or punctuation under a new name trained and the
/// blessing then measured memory, not skill. A near-copy is held out, in every run, naming
/// the row it copies.
#[tokio::test]
async fn a_near_copy_of_an_evaluation_row_is_held_out_naming_the_row() {
    let Scene { store, j, .. } = scene(120, &[0.05, 0.05]).await;
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let set = current_set(&*store).await;
    let row = &set.rows[0];
    let i: usize = row.key.trim_start_matches('s').parse().unwrap();
    // The row's sample, retyped: "question 7" as "Question  7." under another name.
    let put = |key: String, body: String| {
        let store = store.clone();
        async move {
            store
                .put(&key, Bytes::from(body), PutMode::Overwrite)
                .await
                .unwrap();
        }
    };
    put(
        "raw_training_data/retyped.txt".into(),
        format!("Question  {i}."),
    )
    .await;
    put(
        "raw_training_data/retyped.json".into(),
        format!("{{\"answer\": \"a{i}\"}}"),
    )
    .await;
    samples(&*store, 500, 20, &[]).await;
    let o2 = run(&j).await;
    assert_eq!(o2.status, RunStatus::Success, "{}", o2.reason);
    let r2 = record_of(&*store, &o2).await;
    assert_eq!(r2["eval_set_id"], set.info.id.as_str(), "the same set");
    assert!(
        index_of(&*store, &r2)
            .await
            .iter()
            .all(|(_, key)| key != "retyped"),
        "the near-copy of {} trained or validated",
        row.key
    );
    assert_eq!(r2["counts"]["eval_leaks"], 1, "{}", r2["counts"]);
    let rejected = lines(&*store, r2["rejected_uri"].as_str()).await;
    let leak: Value = rejected
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["category"] == "eval_leak")
        .expect("the near-copy is reported");
    assert_eq!(leak["key"], "retyped");
    assert!(
        leak["reason"].as_str().unwrap().contains(&row.key),
        "names the row: {leak}"
    );
}

/// Issue 24 item 2, in the run that picks a set: a near-copy that comes after its row in the
/// build is held out; one that came before (and was written) takes the row out of the new set.
/// Either way no row of the set has a near-copy in the files.
#[tokio::test]
async fn the_run_that_picks_a_set_trains_no_near_copy_of_its_rows() {
    let Scene { store, j, .. } = scene(120, &[0.05]).await;
    for i in 0..120 {
        // Even samples are retyped under a name listed before theirs, odd ones after.
        let name = if i % 2 == 0 {
            format!("aa{i:03}")
        } else {
            format!("zz{i:03}")
        };
        for (ext, body) in [
            ("txt", format!("QUESTION {i}!")),
            ("json", format!("{{ \"answer\": \"a{i}\" }}")),
        ] {
            store
                .put(
                    &format!("raw_training_data/{name}.{ext}"),
                    Bytes::from(body),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
        }
    }
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    let r = record_of(&*store, &o).await;
    let set = current_set(&*store).await;
    assert!(!set.rows.is_empty());
    let written: Vec<String> = index_of(&*store, &r)
        .await
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let number = |key: &str| -> usize {
        key.trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .parse()
            .unwrap()
    };
    for row in &set.rows {
        let n = number(&row.key);
        assert!(
            written.iter().all(|k| number(k) != n),
            "row {} of the new set has a near-copy in the files: {:?}",
            row.key,
            written
                .iter()
                .filter(|k| number(k) == n)
                .collect::<Vec<_>>()
        );
    }
    let counts = &r["counts"];
    assert!(counts["eval_leaks"].as_u64().unwrap_or(0) > 0, "{counts}");
    assert!(
        counts["eval_rows_with_copies_trained"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{counts}"
    );
}
