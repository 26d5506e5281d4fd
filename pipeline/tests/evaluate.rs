//! Paired inference (issue 12, item 2), Google's metrics (`EVAL_GOOGLE_METRICS`) and the
//! rehearsal stand-in (item 8), against the loopback fake of Vertex AI
//! (`tests/support/fake_vertex/inference.rs`), which checks every request and answer body
//! against aiplatform.v1.json. Back-off and the candidate's not-found window run on a paused
//! clock: the fake lives on its own thread and the real clock, and the client runs no timer
//! while a request is in flight.

use crate::support;
use crate::support::hooked::{Act, Hooked, Op};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use autotune::client::{Credentials, TokenError, TokenProvider};
use autotune::evaluate::model::{Generation, Model, ModelError, Thinking};
use autotune::evaluate::rehearsal::{Rehearsal, WRONG_ANSWER};
use autotune::evaluate::vertex::{Config, Vertex};
use autotune::evaluate::{Answer, InferError, Role, Row, paired};
use autotune::storage::{list_all, memory::MemoryStore};
use serde_json::{Value, json};
use support::fake_vertex::{self as fake, FakeReply, FakeVertex, LOCATION, PROJECT};

#[derive(Debug)]
struct FakeToken(String);

#[async_trait::async_trait]
impl TokenProvider for FakeToken {
    async fn token(&self, _scopes: &[&str]) -> Result<String, TokenError> {
        Ok(self.0.clone())
    }
}

const CANDIDATE: &str = "1122334455";
const BASE: &str = "gemini-2.5-flash";

/// The Vertex backends against `fake`: a token the fake issued, no per-call timer (paused
/// clock), inference back-off and the default not-found window.
fn vertex(fake: &FakeVertex, timers: bool) -> Vertex {
    let mut config = Config::new(
        PROJECT,
        LOCATION,
        autotune::locations::Hosts::custom(&fake.url),
    );
    if !timers {
        config.http = config.http.without_timers();
    }
    Vertex::new(
        config,
        Credentials::given(Arc::new(FakeToken(fake.issue_token()))),
    )
    .unwrap()
}

/// Rows `question {i}` → `answer {i}`, with a system instruction and an earlier turn.
fn rows(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            id: format!("{i:064x}"),
            key: format!("raw_training_data/s{i:04}.txt"),
            system_instruction: Some(
                json!({"role": "user", "parts": [{"text": "Answer with the label only."}]}),
            ),
            contents: vec![
                json!({"role": "user", "parts": [{"text": "hello"}]}),
                json!({"role": "model", "parts": [{"text": "hi"}]}),
                json!({"role": "user", "parts": [{"text": format!("question {i}")}]}),
            ],
            reference: format!("answer {i}"),
        })
        .collect()
}

fn number(prompt: &str) -> usize {
    prompt
        .strip_prefix("question ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected prompt {prompt:?}"))
}

/// Answers the reference on `percent` of every hundred rows, a wrong answer on the others.
fn right_on(percent: usize) -> impl Fn(&str) -> FakeReply + Send + Sync + 'static {
    move |prompt| {
        let i = number(prompt);
        if i % 100 < percent {
            FakeReply::Text(format!("answer {i}"))
        } else {
            FakeReply::Text(format!("wrong {i}"))
        }
    }
}

fn store() -> MemoryStore {
    MemoryStore::named(&uuid::Uuid::new_v4().to_string())
}

fn config() -> Generation {
    Generation::new(BASE, "20261124-100000-abcdef", 256)
}

fn hidden() -> indicatif::ProgressBar {
    indicatif::ProgressBar::hidden()
}

fn assert_clean(fake: &FakeVertex) {
    assert_eq!(
        fake.violations(),
        Vec::<String>::new(),
        "bodies must match aiplatform.v1.json"
    );
}

fn bodies_for(fake: &FakeVertex, model: &str) -> Vec<Value> {
    let path = format!("/v1/{model}:generateContent");
    fake.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .filter_map(|r| r.body)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn both_backends_send_the_same_request_the_discovery_document_accepts() {
    let fake = FakeVertex::start();
    let candidate_name = fake::endpoint(CANDIDATE);
    let champion_name = fake::publisher_model(BASE);
    fake.serve_model(&candidate_name, right_on(100));
    fake.serve_model(&champion_name, right_on(5));
    let v = vertex(&fake, false);
    let candidate = v.candidate(&candidate_name).unwrap();
    let champion = v.publisher_model(BASE).unwrap();
    assert_eq!(champion.name(), champion_name);
    let rows = rows(10);
    let answers = paired(
        &store(),
        "runs/r1/eval",
        &rows,
        &candidate,
        &champion,
        &config(),
        4,
        &hidden(),
    )
    .await
    .unwrap();
    assert_clean(&fake);

    assert_eq!(answers.rows.len(), 10);
    for (row, pair) in rows.iter().zip(&answers.rows) {
        assert_eq!(pair.key, row.key);
        assert_eq!(pair.candidate.answer.text(), Some(row.reference.as_str()));
        assert!(pair.candidate.prompt_tokens > 0 && pair.candidate.answer_tokens == 2);
    }
    let right = answers
        .rows
        .iter()
        .filter(|p| p.champion.answer.text() == Some(p.candidate.answer.text().unwrap()))
        .count();
    assert_eq!(right, 5, "the champion answers rows 0 to 4 right");
    assert_eq!(answers.candidate.calls_made, 10);
    assert_eq!(answers.champion.calls_made, 10);
    assert_eq!(answers.total().calls_resumed, 0);

    let c = bodies_for(&fake, &candidate_name);
    let b = bodies_for(&fake, &champion_name);
    assert_eq!((c.len(), b.len()), (10, 10));
    let by_prompt = |bodies: &[Value]| {
        let mut v: Vec<Value> = bodies.to_vec();
        v.sort_by_key(|b| b["contents"][2]["parts"][0]["text"].to_string());
        v
    };
    for (c, b) in by_prompt(&c).iter().zip(by_prompt(&b)) {
        assert_eq!(c["systemInstruction"], b["systemInstruction"]);
        assert_eq!(c["contents"], b["contents"]);
        assert_eq!(c["generationConfig"], b["generationConfig"]);
        assert_eq!(
            c["generationConfig"],
            json!({"temperature": 0.0, "seed": Generation::SEED, "maxOutputTokens": 256,
                   "thinkingConfig": {"thinkingBudget": 0}})
        );
        assert_eq!(
            c["labels"],
            json!({"autotune_run": "20261124-100000-abcdef", "autotune_role": "candidate"})
        );
        assert_eq!(
            b["labels"],
            json!({"autotune_run": "20261124-100000-abcdef", "autotune_role": "champion"})
        );
    }
}

#[tokio::test(start_paused = true)]
async fn thinking_settings_pass_the_discovery_document() {
    let fake = FakeVertex::start();
    // A Gemini 3 base model answers on the global endpoint, not on a region.
    let name = fake::publisher_model_in("gemini-3.5-flash", "global");
    fake.serve_model(&name, right_on(100));
    let v = vertex(&fake, false);
    let model = v.publisher_model_in("gemini-3.5-flash", "global").unwrap();
    for base in [
        "gemini-3.5-flash",
        "gemini-3-pro",
        "gemini-2.5-pro",
        "gemini-2.0-flash-001",
    ] {
        let config = Generation::new(base, "r", 64).for_role("champion");
        model.generate(&rows(1)[0], &config).await.unwrap();
    }
    assert_clean(&fake);
    let sent: Vec<Value> = bodies_for(&fake, &name)
        .iter()
        .map(|b| b["generationConfig"]["thinkingConfig"].clone())
        .collect();
    assert_eq!(
        sent,
        vec![
            json!({"thinkingLevel": "MINIMAL"}),
            json!({"thinkingLevel": "LOW"}),
            json!({"thinkingBudget": 128}),
            Value::Null,
        ]
    );
    assert_eq!(Generation::new(BASE, "r", 1).thinking, Thinking::Budget(0));
}

#[tokio::test(start_paused = true)]
async fn a_429_and_503_storm_is_waited_out_with_back_off() {
    let fake = FakeVertex::start();
    let name = fake::endpoint(CANDIDATE);
    fake.serve_model(&name, right_on(100));
    fake.fail_generate(&name, [429, 429, 503, 429, 503]);
    let model = vertex(&fake, false).endpoint(&name).unwrap();
    let started = tokio::time::Instant::now();
    let reply = model.generate(&rows(1)[0], &config()).await.unwrap();
    assert_eq!(reply.answer.text(), Some("answer 0"));
    assert_eq!(
        fake.generate_calls(&name),
        6,
        "five failures, then the answer"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the retries waited (1 s doubling, with jitter): {:?}",
        started.elapsed()
    );
    assert_clean(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_400_is_not_retried_and_keeps_googles_message() {
    let fake = FakeVertex::start();
    let name = fake::endpoint(CANDIDATE);
    fake.serve_model(&name, right_on(100));
    fake.fail_generate(&name, [400]);
    let model = vertex(&fake, false).candidate(&name).unwrap();
    let e = model.generate(&rows(1)[0], &config()).await.unwrap_err();
    assert!(
        matches!(&e, ModelError::Refused { status: 400, message, .. }
            if message.contains("INVALID_ARGUMENT") && message.contains("invalid argument")),
        "{e}"
    );
    assert!(e.to_string().contains(&name), "{e}");
    assert_eq!(fake.generate_calls(&name), 1);
}

#[tokio::test(start_paused = true)]
async fn the_candidate_endpoint_is_waited_for_while_it_answers_404() {
    let fake = FakeVertex::start();
    let name = fake::endpoint(CANDIDATE);
    fake.serve_model(&name, right_on(100));
    fake.not_found_for(&name, 4);
    let v = vertex(&fake, false);
    let started = tokio::time::Instant::now();
    let reply = v
        .candidate(&name)
        .unwrap()
        .generate(&rows(1)[0], &config())
        .await
        .unwrap();
    assert_eq!(reply.answer.text(), Some("answer 0"));
    assert_eq!(fake.generate_calls(&name), 5);
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // A champion's endpoint (or a base model) that is not found is not waited for.
    fake.not_found_for(&name, 1);
    let e = v
        .endpoint(&name)
        .unwrap()
        .generate(&rows(1)[0], &config())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ModelError::NotFound { waited, .. } if waited.is_zero()),
        "{e}"
    );
    assert_eq!(fake.generate_calls(&name), 6);
    let e = v
        .publisher_model("gemini-9-unknown")
        .unwrap()
        .generate(&rows(1)[0], &config())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("gemini-9-unknown"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_candidate_endpoint_that_never_appears_fails_after_the_window_naming_the_row() {
    let fake = FakeVertex::start();
    let name = fake::endpoint(CANDIDATE);
    fake.serve_model(&name, right_on(100));
    fake.serve_model(&fake::publisher_model(BASE), right_on(100));
    fake.not_found_for(&name, usize::MAX);
    let v = vertex(&fake, false);
    let rows = rows(1);
    let started = tokio::time::Instant::now();
    let e = paired(
        &store(),
        "runs/r1/eval",
        &rows,
        &v.candidate(&name).unwrap(),
        &v.publisher_model(BASE).unwrap(),
        &config(),
        1,
        &hidden(),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    // No wait starts past the window; the last wait is at most a minute plus its jitter (up to
    // as much again), so the give-up comes within two minutes before the end.
    let earliest = Config::NOT_FOUND_WINDOW.saturating_sub(Duration::from_secs(120));
    assert!(
        elapsed <= Config::NOT_FOUND_WINDOW && elapsed >= earliest,
        "gave up at the end of the window: {elapsed:?}"
    );
    let text = e.to_string();
    match e {
        InferError::Row {
            key,
            role: Role::Candidate,
            source: ModelError::NotFound { waited, .. },
            ..
        } => {
            assert_eq!(key, rows[0].key);
            assert!(waited >= earliest, "{waited:?}");
        }
        other => panic!("expected a candidate row failure, got {other}"),
    }
    assert!(
        text.contains(&rows[0].key) && text.contains(&name) && text.contains("not found"),
        "{text}"
    );
    assert!(fake.generate_calls(&name) > 5, "retried within the window");
}

#[tokio::test(start_paused = true)]
async fn blocked_and_empty_answers_are_told_apart() {
    let fake = FakeVertex::start();
    let name = fake::endpoint(CANDIDATE);
    fake.serve_model(&name, |prompt| match number(prompt) {
        0 => FakeReply::Blocked("SAFETY"),
        1 => FakeReply::PromptBlocked("PROHIBITED_CONTENT"),
        2 => FakeReply::Blocked("RECITATION"),
        3 => FakeReply::Empty,
        i => FakeReply::Text(format!("answer {i}")),
    });
    let model = vertex(&fake, false).candidate(&name).unwrap();
    let mut got = Vec::new();
    for row in rows(5) {
        got.push(model.generate(&row, &config()).await.unwrap().answer);
    }
    assert_eq!(
        got,
        vec![
            Answer::Blocked {
                reason: "SAFETY".into()
            },
            Answer::Blocked {
                reason: "PROHIBITED_CONTENT".into()
            },
            Answer::Blocked {
                reason: "RECITATION".into()
            },
            Answer::Empty,
            Answer::Text {
                text: "answer 4".into()
            },
        ]
    );
    assert_clean(&fake);
}

fn no_duplicates(answered: &[String]) -> bool {
    answered.iter().collect::<HashSet<_>>().len() == answered.len()
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_some_inference_resumes_without_paying_twice() {
    let fake = FakeVertex::start();
    let cand = fake::endpoint(CANDIDATE);
    let champ = fake::publisher_model(BASE);
    fake.serve_model(&cand, right_on(80));
    fake.serve_model(&champ, right_on(60));
    fake.refuse_after(&cand, Some(45));
    let v = vertex(&fake, false);
    let (candidate, champion) = (
        v.candidate(&cand).unwrap(),
        v.publisher_model(BASE).unwrap(),
    );
    let store = store();
    let rows = rows(100);
    let folder = "runs/r1/eval";

    let e = paired(
        &store,
        folder,
        &rows,
        &candidate,
        &champion,
        &config(),
        8,
        &hidden(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &e,
            InferError::Row {
                role: Role::Candidate,
                source: ModelError::Refused { status: 400, .. },
                ..
            }
        ),
        "{e}"
    );
    let first = (fake.answered(&cand).len(), fake.answered(&champ).len());
    assert_eq!(first.0, 45);
    assert_eq!(
        stored_answers(&store, &format!("{folder}/candidate/")).await,
        45,
        "every answer stored as it arrived, the last ones on the error"
    );

    // The fault is gone: the second invocation asks only for what is missing.
    fake.refuse_after(&cand, None);
    let answers = paired(
        &store,
        folder,
        &rows,
        &candidate,
        &champion,
        &config(),
        8,
        &hidden(),
    )
    .await
    .unwrap();
    assert_eq!(
        fake.answered(&cand).len(),
        100,
        "each row asked of the candidate once"
    );
    assert_eq!(
        fake.answered(&champ).len(),
        100,
        "each row asked of the champion once"
    );
    assert!(no_duplicates(&fake.answered(&cand)) && no_duplicates(&fake.answered(&champ)));
    assert_eq!(answers.candidate.calls_resumed, first.0 as u64);
    assert_eq!(answers.candidate.calls_made, (100 - first.0) as u64);
    assert_eq!(answers.champion.calls_resumed, first.1 as u64);
    assert_eq!(answers.champion.calls_made, (100 - first.1) as u64);
    let right = |role: Role| {
        answers
            .rows
            .iter()
            .zip(&rows)
            .filter(|(p, r)| {
                let reply = if role == Role::Candidate {
                    &p.candidate
                } else {
                    &p.champion
                };
                reply.answer.text() == Some(r.reference.as_str())
            })
            .count()
    };
    assert_eq!((right(Role::Candidate), right(Role::Champion)), (80, 60));
    assert_eq!(
        answers.candidate.answer_tokens, 200,
        "two words an answer, resumed ones included"
    );

    // A third invocation calls nothing.
    let again = paired(
        &store,
        folder,
        &rows,
        &candidate,
        &champion,
        &config(),
        8,
        &hidden(),
    )
    .await
    .unwrap();
    assert_eq!(again.total().calls_made, 0);
    assert_eq!(again.total().calls_resumed, 200);
    assert_eq!(again.rows, answers.rows);
    assert_eq!(
        fake.answered(&cand).len() + fake.answered(&champ).len(),
        200
    );

    // Answers stored under another champion are not reused.
    let other = v.publisher_model("gemini-2.5-pro").unwrap();
    fake.serve_model(&fake::publisher_model("gemini-2.5-pro"), right_on(10));
    let third = paired(
        &store,
        folder,
        &rows,
        &candidate,
        &other,
        &config(),
        8,
        &hidden(),
    )
    .await
    .unwrap();
    assert_eq!(
        (third.candidate.calls_made, third.champion.calls_made),
        (0, 100)
    );
    assert_clean(&fake);
}

#[tokio::test]
async fn no_more_than_the_concurrency_is_in_flight() {
    let fake = FakeVertex::start();
    let cand = fake::endpoint(CANDIDATE);
    let champ = fake::publisher_model(BASE);
    for m in [&cand, &champ] {
        fake.serve_model(m, right_on(100));
        fake.set_delay(m, Duration::from_millis(50));
    }
    let v = vertex(&fake, true);
    let answers = paired(
        &store(),
        "runs/r1/eval",
        &rows(24),
        &v.candidate(&cand).unwrap(),
        &v.publisher_model(BASE).unwrap(),
        &config(),
        3,
        &hidden(),
    )
    .await
    .unwrap();
    assert_eq!(answers.total().calls_made, 48);
    let most = fake.max_in_flight();
    assert!(most <= 3, "{most} calls in flight with EVAL_CONCURRENCY=3");
    assert!(most >= 2, "calls overlap: {most}");
}

#[tokio::test]
async fn the_rehearsal_is_deterministic_with_its_error_rate() {
    let rows = rows(2000);
    let a = Rehearsal::new("candidate", 0.1);
    assert!(a.name().contains("rehearsal"), "{}", a.name());
    let wrong: Vec<bool> = rows.iter().map(|r| a.errs_on(r)).collect();
    let n = wrong.iter().filter(|w| **w).count();
    // 2000 draws at 10 %: 200 ± 3σ (σ ≈ 13.4); the hash is fixed, so this is one fixed number.
    assert!((160..=240).contains(&n), "{n} wrong of 2000");
    let again: Vec<bool> = rows
        .iter()
        .map(|r| Rehearsal::new("candidate", 0.1).errs_on(r))
        .collect();
    assert_eq!(wrong, again, "the same rows every time");
    let b = Rehearsal::new("champion", 0.1);
    let both = rows
        .iter()
        .zip(&wrong)
        .filter(|(r, w)| **w && b.errs_on(r))
        .count();
    assert!(
        both < n / 2,
        "another name errs on other rows: {both} of {n}"
    );

    let config = config();
    for (row, w) in rows.iter().zip(&wrong).take(50) {
        let reply = a.generate(row, &config).await.unwrap();
        let want = if *w {
            WRONG_ANSWER
        } else {
            row.reference.as_str()
        };
        assert_eq!(reply.answer.text(), Some(want));
        assert!(reply.prompt_tokens > 0 && reply.answer_tokens > 0);
    }
    assert!(rows.iter().all(|r| !Rehearsal::new("x", 0.0).errs_on(r)));
    assert!(rows.iter().all(|r| Rehearsal::new("x", 1.0).errs_on(r)));

    let store = store();
    let answers = paired(
        &store,
        "runs/r/eval",
        &rows[..100],
        &a,
        &b,
        &config,
        8,
        &hidden(),
    )
    .await
    .unwrap();
    assert_eq!(answers.total().calls_made, 200);
    assert_eq!(stored_answers(&store, "runs/r/eval/").await, 200);
}

/// Writes to a [`slow_writes`] bucket: in flight now, the most at once, all.
#[derive(Default)]
struct Writes {
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    puts: std::sync::atomic::AtomicUsize,
}

/// A memory bucket (the test kit's [`Hooked`]) whose writes take 30 ms (on the paused clock),
/// counting writes in flight.
fn slow_writes() -> (Arc<Hooked>, Arc<Writes>) {
    use std::sync::atomic::Ordering::SeqCst;
    let store = Hooked::new();
    let writes = Arc::new(Writes::default());
    let counted = writes.clone();
    store.set(move |op, _, _| {
        if op != Op::Put {
            return Act::Pass;
        }
        let now = counted.in_flight.fetch_add(1, SeqCst) + 1;
        counted.most.fetch_max(now, SeqCst);
        counted.puts.fetch_add(1, SeqCst);
        let counted = counted.clone();
        Act::Wait(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            // The memory bucket writes as the wait ends, without yielding.
            counted.in_flight.fetch_sub(1, SeqCst);
        }))
    });
    (store, writes)
}

#[tokio::test(start_paused = true)]
async fn answers_arriving_faster_than_one_write_are_stored_by_writes_at_once() {
    use std::sync::atomic::Ordering::SeqCst;
    // The rehearsal answers at once: 1,000 answers arrive while one 30 ms write is under way.
    let (store, writes) = slow_writes();
    let rows = rows(500);
    let (a, b) = (
        Rehearsal::new("candidate", 0.1),
        Rehearsal::new("champion", 0.1),
    );
    let (config, progress) = (config(), hidden());
    let ask = || paired(&*store, "runs/r/eval", &rows, &a, &b, &config, 8, &progress);
    let started = tokio::time::Instant::now();
    let answers = ask().await.unwrap();
    let took = started.elapsed();
    assert_eq!(answers.total().calls_made, 1000);
    assert_eq!(stored_answers(&*store, "runs/r/eval/").await, 1000);
    let (most, puts) = (writes.most.load(SeqCst), writes.puts.load(SeqCst));
    assert!(
        most > 1 && most <= autotune::evaluate::infer::WRITES_IN_FLIGHT,
        "{most} writes in flight"
    );
    // Full chunks, written several at once: far less than one write after another.
    assert!(
        puts <= 1000 / autotune::evaluate::infer::FLUSH_EVERY + 4,
        "{puts} writes"
    );
    let serial = Duration::from_millis(30) * u32::try_from(puts).unwrap();
    assert!(took * 2 < serial, "{took:?} for {puts} writes of 30 ms");
    // Resumed: everything is there, nothing is asked again.
    let again = ask().await.unwrap();
    assert_eq!(again.total().calls_made, 0);
    assert_eq!(again.total().calls_resumed, 1000);
}

/// Answers stored under `prefix`, checking that no chunk holds more than `FLUSH_EVERY`.
async fn stored_answers(store: &dyn autotune::storage::Store, prefix: &str) -> usize {
    let mut n = 0;
    for chunk in list_all(store, prefix).await.unwrap() {
        let body = autotune::storage::get_bytes(store, &chunk.key, 1 << 24)
            .await
            .unwrap();
        let lines = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        assert!(
            lines <= autotune::evaluate::infer::FLUSH_EVERY,
            "{lines} in {}",
            chunk.key
        );
        n += lines;
    }
    n
}

#[tokio::test(start_paused = true)]
async fn evaluate_instances_gives_googles_means_in_batches() {
    let fake = FakeVertex::start();
    fake.set_max_instances(3);
    let metrics = vertex(&fake, false).google_metrics().with_batch(3);
    let pairs: Vec<(String, String)> = [
        ("answer 1", "answer 1"),
        ("answer 2", "answer 2"),
        ("the cat sat", "the cat sat on the mat"),
        ("", "answer 4"),
        ("answer 5", "answer 5"),
        ("wrong", "answer 6"),
        ("answer 7", "answer 7"),
    ]
    .iter()
    .map(|(p, r)| ((*p).to_owned(), (*r).to_owned()))
    .collect();
    let means = metrics.means(&pairs).await.unwrap();
    assert_clean(&fake);
    assert_eq!(means.instances, 7);
    assert_eq!(
        means.calls, 6,
        "three batches of at most 3, two metrics each"
    );
    assert_eq!(fake.evaluate_calls(), 6);
    assert!((means.exact_match - 4.0 / 7.0).abs() < 1e-9, "{means:?}");
    let rouge: f64 = pairs.iter().map(|(p, r)| fake::rouge_l(p, r)).sum::<f64>() / 7.0;
    assert!((means.rouge_l - rouge).abs() < 1e-6, "{means:?} vs {rouge}");

    // A batch larger than the server takes is refused, not retried.
    let e = vertex(&fake, false)
        .google_metrics()
        .with_batch(4)
        .means(&pairs)
        .await
        .unwrap_err();
    assert!(matches!(&e, ModelError::Refused { status: 400, .. }), "{e}");
}

/// The wall time of paired inference over 1,000 rows against the fake, 20 ms a call, at
/// EVAL_CONCURRENCY 8 and 32 (issue 12's "done when"). Run with
/// `cargo test -p autotune --test tests evaluate::wall_time -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn wall_time_of_1000_rows_at_concurrency_8_and_32() {
    let rows = rows(1000);
    for concurrency in [8, 32] {
        let fake = FakeVertex::start();
        let cand = fake::endpoint(CANDIDATE);
        let champ = fake::publisher_model(BASE);
        for m in [&cand, &champ] {
            fake.serve_model(m, right_on(70));
            fake.set_delay(m, Duration::from_millis(20));
        }
        let v = vertex(&fake, true);
        let started = std::time::Instant::now();
        let answers = paired(
            &store(),
            "runs/bench/eval",
            &rows,
            &v.candidate(&cand).unwrap(),
            &v.publisher_model(BASE).unwrap(),
            &config(),
            concurrency,
            &hidden(),
        )
        .await
        .unwrap();
        let t = answers.total();
        println!(
            "EVAL_CONCURRENCY={concurrency}: 1000 rows in {:.2} s; calls made {} (resumed {}), \
             prompt tokens {}, answer tokens {}, max in flight {}",
            started.elapsed().as_secs_f64(),
            t.calls_made,
            t.calls_resumed,
            t.prompt_tokens,
            t.answer_tokens,
            fake.max_in_flight()
        );
        assert_eq!(t.calls_made, 2000);
        assert_clean(&fake);
    }
}

#[test]
fn model_names_are_checked_before_any_call() {
    let fake = FakeVertex::start();
    let v = vertex(&fake, false);
    for bad in [
        "endpoints/1",
        "projects/p/locations/l/models/m",
        "projects//locations/l/endpoints/e",
    ] {
        let e = v.endpoint(bad).unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
    assert!(v.publisher_model("publishers/google/models/x").is_err());
}

#[tokio::test]
async fn an_unreadable_stored_chunk_is_named() {
    use autotune::storage::{PutMode, Store};
    let store = store();
    store
        .put(
            "runs/r/eval/champion/000003.jsonl",
            bytes::Bytes::from_static(b"{\"id\":\"a\"}\n"),
            PutMode::Create,
        )
        .await
        .unwrap();
    let (a, b) = (Rehearsal::new("a", 0.0), Rehearsal::new("b", 0.0));
    let e = paired(
        &store,
        "runs/r/eval/",
        &rows(3),
        &a,
        &b,
        &config(),
        0,
        &hidden(),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, InferError::Corrupt { line: 1, .. })
            && text.contains("runs/r/eval/champion/000003.jsonl"),
        "{text}"
    );

    // Chunks are numbered after the highest one there; concurrency 0 is taken as 1.
    let store = store_with_chunk("runs/r/eval/candidate/000007.jsonl").await;
    let answers = paired(
        &store,
        "runs/r/eval",
        &rows(3),
        &a,
        &b,
        &config(),
        0,
        &hidden(),
    )
    .await
    .unwrap();
    assert_eq!(answers.total().calls_made, 6);
    let keys: Vec<String> = list_all(&store, "runs/r/eval/candidate/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert!(
        keys.contains(&"runs/r/eval/candidate/000008.jsonl".to_owned()),
        "{keys:?}"
    );
}

/// A store holding one empty chunk at `key`.
async fn store_with_chunk(key: &str) -> MemoryStore {
    use autotune::storage::{PutMode, Store};
    let store = store();
    store
        .put(key, bytes::Bytes::new(), PutMode::Create)
        .await
        .unwrap();
    store
}
