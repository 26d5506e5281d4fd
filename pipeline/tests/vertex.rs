//! The Vertex AI tuner against a loopback fake of Vertex AI, its OAuth token endpoint and the
//! metadata server (`tests/support/fake_vertex.rs`). Tokens are JWTs self-signed by a generated
//! service-account key (google-cloud-auth), or come from the fake metadata server. Polls, back-off and the watchdog run
//! on a paused tokio clock: the fake lives on its own thread and the real clock, and the tuner
//! runs no timer while a request is in flight, so the paused clock only jumps across sleeps.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use autotune::client::{Credentials, TokenError, TokenProvider};
use autotune::locations::Hosts;
use autotune::status::RunStatus;
use autotune::tuner::vertex::{self, Vertex};
use autotune::tuner::{Tuner, TunerError, job};
use serde_json::{Value, json};
use support::fake_vertex::{self as fake, FakeVertex, Fault, LOCATION, ListFilter, PROJECT};

/// The tuner's configuration and the request template, as the settings build them by default.
#[derive(Clone)]
struct Conf {
    vertex: vertex::Config,
    template: job::Template,
}

impl Conf {
    fn new(endpoint: &str) -> Self {
        let vertex = vertex::Config {
            project: PROJECT.to_owned(),
            location: LOCATION.to_owned(),
            hosts: Hosts::custom(endpoint),
            quota_regions: vec![LOCATION.to_owned()],
            source_model: "gemini-2.5-flash".to_owned(),
            poll_interval: Duration::from_secs(60),
            max_tuning_duration: Duration::from_secs(24 * 3600),
            http: autotune::client::Options::default(),
        };
        let template = job::Template {
            jobs_url: job::Template::jobs_url(&vertex.hosts, PROJECT, LOCATION),
            location: LOCATION.to_owned(),
            source_model: vertex.source_model.clone(),
            epochs: None,
            adapter_size: None,
            learning_rate_multiplier: None,
            display_name: "autotune-{run_id}".to_owned(),
            service_account: None,
            export_last_checkpoint_only: true,
        };
        Self { vertex, template }
    }

    fn model(mut self, model: &str) -> Self {
        model.clone_into(&mut self.vertex.source_model);
        model.clone_into(&mut self.template.source_model);
        self
    }
}

fn settings(fake: &FakeVertex) -> Conf {
    Conf::new(&fake.url)
}

/// Credentials from a service-account key file: self-signed JWTs. On the real clock only:
/// google-cloud-auth refreshes its cached tokens on a timer, which a paused clock jumps to.
fn key_credentials(key: &std::path::Path) -> Credentials {
    Credentials::from_json(serde_json::from_slice(&std::fs::read(key).unwrap()).unwrap())
}

/// A token the fake issued, handed over as is: no timer runs, so the paused clock only jumps
/// across the tuner's own sleeps.
#[derive(Debug)]
struct FakeToken(String);

#[async_trait::async_trait]
impl TokenProvider for FakeToken {
    async fn token(&self, _scopes: &[&str]) -> Result<String, TokenError> {
        Ok(self.0.clone())
    }
}

fn fake_token(fake: &FakeVertex) -> Arc<dyn TokenProvider> {
    Arc::new(FakeToken(fake.issue_token()))
}

struct Setup {
    fake: FakeVertex,
    settings: Conf,
    vertex: Vertex,
    _dir: tempfile::TempDir,
}

/// A fake, and a tuner with a token the fake issued.
fn setup(change: impl FnOnce(Conf) -> Conf) -> Setup {
    let fake = FakeVertex::start();
    let dir = tempfile::tempdir().unwrap();
    let settings = change(settings(&fake));
    let vertex = Vertex::new(settings.vertex.clone())
        .unwrap()
        .with_token_provider(fake_token(&fake))
        .with_http_timeout(None)
        .unwrap();
    Setup {
        fake,
        settings,
        vertex,
        _dir: dir,
    }
}

fn request(s: &Conf, run_key: &str) -> job::Request {
    job::Request::build(
        &s.template,
        "20261124-100000-abcdef",
        run_key,
        "gs://bucket/training_datasets/20261124-100000-abcdef/sft_train.jsonl",
        Some("gs://bucket/training_datasets/20261124-100000-abcdef/sft_val.jsonl"),
    )
}

/// What `Job::tune` does: re-attach or create.
async fn find_or_submit(v: &Vertex, r: &job::Request) -> String {
    match v.find(&r.run_key).await.unwrap() {
        Some(name) => name,
        None => v.submit(r).await.unwrap(),
    }
}

fn assert_clean(fake: &FakeVertex) {
    assert_eq!(
        fake.violations(),
        Vec::<String>::new(),
        "bodies must match aiplatform.v1.json"
    );
    assert_eq!(fake.jwt_problems(), Vec::<String>::new());
    let unauthorised: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.status == 401)
        .collect();
    assert!(
        unauthorised.is_empty(),
        "every call carries a token the fake issued: {unauthorised:?}"
    );
}

fn failed(e: TunerError) -> (String, Value) {
    match e {
        TunerError::Failed {
            message,
            model_details,
        } => (message, model_details),
        TunerError::Unavailable(m) => panic!("expected Failed, got Unavailable({m})"),
    }
}

#[tokio::test(start_paused = true)]
async fn submits_and_follows_a_job_to_success() {
    let t = setup(|mut c| {
        c.template.epochs = Some(3);
        c.template.adapter_size = Some(4);
        c.template.service_account = Some("tuner@test-project.iam.gserviceaccount.com".to_owned());
        c
    });
    let r = request(&t.settings, "0123456789abcdef0123456789abcdef");
    assert_eq!(
        r.url,
        format!(
            "{}/v1/projects/{PROJECT}/locations/{LOCATION}/tuningJobs",
            t.fake.url
        ),
        "VERTEX_API_ENDPOINT makes the URL"
    );
    let started = tokio::time::Instant::now();
    let name = t.vertex.submit(&r).await.unwrap();
    assert!(
        name.starts_with(&format!(
            "projects/{PROJECT}/locations/{LOCATION}/tuningJobs/"
        )),
        "{name}"
    );
    let tuned = t.vertex.follow(&name).await.unwrap();
    // Three reads (PENDING, RUNNING, SUCCEEDED), two waits of POLL_INTERVAL, on the paused clock.
    assert_eq!(started.elapsed(), Duration::from_secs(120));
    assert_eq!(tuned.status, RunStatus::Success);
    let d = &tuned.model_details;
    assert_eq!(d["tuning_job"], name.as_str());
    assert_eq!(d["state"], "JOB_STATE_SUCCEEDED");
    assert_eq!(
        d["tuned_model"],
        format!("projects/{PROJECT}/locations/{LOCATION}/models/987654321@1").as_str()
    );
    assert_eq!(
        d["endpoint"],
        format!("projects/{PROJECT}/locations/{LOCATION}/endpoints/1122334455").as_str()
    );
    assert_eq!(
        d["tuning_data_stats"],
        json!({"tuningDatasetExampleCount": 500, "totalBillableTokenCount": 123_456, "totalTruncatedExampleCount": 2})
    );
    assert!(d.get("error").is_none(), "{d}");

    let creates: Vec<_> = t
        .fake
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.path.ends_with("/tuningJobs"))
        .collect();
    assert_eq!(creates.len(), 1);
    let body = creates[0].body.clone().unwrap();
    assert_eq!(body["baseModel"], "gemini-2.5-flash");
    assert_eq!(
        body["serviceAccount"],
        "tuner@test-project.iam.gserviceaccount.com"
    );
    assert_eq!(
        body["supervisedTuningSpec"]["hyperParameters"]["epochCount"],
        "3"
    );
    assert_eq!(
        body["labels"]["autotune_run_key"],
        "0123456789abcdef0123456789abcdef"
    );
    assert!(body.get("preTunedModel").is_none());
    assert_eq!(t.fake.count("GET", &name), 3);
    assert!(
        t.fake.tokens_issued() >= 1,
        "the token came from the key's token_uri"
    );
    assert_clean(&t.fake);
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_keeps_googles_error_word_for_word() {
    let t = setup(|c| c);
    t.fake.set_history(fake::fails(&fake::data_error()));
    let name = t
        .vertex
        .submit(&request(&t.settings, "k-failed"))
        .await
        .unwrap();
    let tuned = t.vertex.follow(&name).await.unwrap();
    assert_eq!(tuned.status, RunStatus::Failed);
    assert_eq!(tuned.model_details["state"], "JOB_STATE_FAILED");
    assert_eq!(
        tuned.model_details["error"],
        fake::data_error(),
        "code, message and details as Google sent them"
    );
    assert!(tuned.model_details.get("tuned_model").is_none());
    assert_clean(&t.fake);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_job_is_a_failure() {
    let t = setup(|c| c);
    t.fake.set_history(fake::cancelled());
    let name = t
        .vertex
        .submit(&request(&t.settings, "k-cancelled"))
        .await
        .unwrap();
    let tuned = t.vertex.follow(&name).await.unwrap();
    assert_eq!(tuned.status, RunStatus::Failed);
    assert_eq!(tuned.model_details["state"], "JOB_STATE_CANCELLED");
    assert_eq!(
        tuned.model_details["error"],
        json!({"code": 1, "message": "CANCELLED"})
    );
    assert!(tuned.model_details.get("timed_out").is_none());
}

#[tokio::test(start_paused = true)]
async fn bursts_of_429_and_503_are_retried_with_backoff() {
    let t = setup(|mut c| {
        c.vertex.poll_interval = Duration::from_secs(30);
        c
    });
    let busy = |code: u16, status: &str| {
        Fault::Refuse(code, fake::google_error(code, status, "try later"))
    };
    t.fake.fail_creates([
        busy(429, "RESOURCE_EXHAUSTED"),
        busy(503, "UNAVAILABLE"),
        busy(429, "RESOURCE_EXHAUSTED"),
    ]);
    t.fake.fail_lists([503, 429]);
    let started = tokio::time::Instant::now();
    let name = t
        .vertex
        .submit(&request(&t.settings, "k-busy"))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "five back-off waits of at least 1 s: {waited:?}"
    );
    assert_eq!(
        t.fake.created(),
        1,
        "429 and 503 create nothing, and the retry creates once"
    );
    assert_eq!(t.fake.count("POST", "/tuningJobs"), 4);

    t.fake.fail_gets([503, 503, 429, 500, 502, 504, 429]);
    let tuned = t.vertex.follow(&name).await.unwrap();
    assert_eq!(tuned.status, RunStatus::Success);
    assert_eq!(t.fake.count("GET", &name), 7 + 3);
    assert_clean(&t.fake);
}

#[tokio::test(start_paused = true)]
async fn field_violations_appear_word_for_word() {
    let t = setup(|c| c);
    let error = json!({
        "code": 400,
        "message": "Request contains an invalid argument.",
        "status": "INVALID_ARGUMENT",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {"field": "tuning_job.supervised_tuning_spec.training_dataset_uri",
                 "description": "training_dataset_uri should be a GCS object of type JSONL."},
                {"field": "tuning_job.supervised_tuning_spec.hyper_parameters.adapter_size",
                 "description": "The adapter size is not supported for this base model."}
            ]
        }]
    });
    t.fake.fail_creates([Fault::Refuse(400, error.clone())]);
    let (message, details) = failed(
        t.vertex
            .submit(&request(&t.settings, "k-400"))
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("Request contains an invalid argument."),
        "{message}"
    );
    assert!(
        message.contains("tuning_job.supervised_tuning_spec.training_dataset_uri: training_dataset_uri should be a GCS object of type JSONL."),
        "{message}"
    );
    assert!(
        message.contains("The adapter size is not supported for this base model."),
        "{message}"
    );
    assert!(
        !message.contains("SOURCE_MODEL"),
        "an adapter-size problem is not an unknown model: {message}"
    );
    assert_eq!(details["error"], error);
    assert_eq!(details["http_status"], 400);
    assert_eq!(
        t.fake.count("POST", "/tuningJobs"),
        1,
        "a 400 is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_model_names_source_model() {
    let t = setup(|c| c.model("gemini-1.5-pro-001"));
    let (message, details) = failed(
        t.vertex
            .submit(&request(&t.settings, "k-404"))
            .await
            .unwrap_err(),
    );
    assert!(message.contains("SOURCE_MODEL"), "{message}");
    assert!(message.contains("gemini-1.5-pro-001"), "{message}");
    assert_eq!(details["error"]["status"], "NOT_FOUND");
    assert_eq!(t.fake.created(), 0);

    let t = setup(|c| c.model("gemini-1.0-pro-002"));
    let (message, details) = failed(
        t.vertex
            .submit(&request(&t.settings, "k-400m"))
            .await
            .unwrap_err(),
    );
    assert!(message.contains("SOURCE_MODEL"), "{message}");
    assert!(
        message.contains("Base model gemini-1.0-pro-002 is not supported for tuning."),
        "{message}"
    );
    assert_eq!(details["http_status"], 400);
}

#[tokio::test(start_paused = true)]
async fn a_lost_create_answer_is_looked_up_before_any_retry() {
    let t = setup(|c| c);
    t.fake.fail_creates([Fault::CreateThen(500)]);
    let name = t
        .vertex
        .submit(&request(&t.settings, "k-lost"))
        .await
        .unwrap();
    assert_eq!(
        t.fake.created(),
        1,
        "the job the 500 hid is adopted, not created again"
    );
    assert_eq!(t.fake.count("POST", "/tuningJobs"), 1);
    let job = t.fake.job(&name).unwrap();
    assert_eq!(job["labels"]["autotune_run_key"], "k-lost");
}

/// On the real clock: a timeout needs a request in flight while time passes.
#[tokio::test]
async fn a_create_that_times_out_is_looked_up_before_any_retry() {
    let t = setup(|c| c);
    let vertex = t
        .vertex
        .with_http_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    t.fake
        .fail_creates([Fault::CreateAndHang(Duration::from_secs(30))]);
    let name = vertex
        .submit(&request(&t.settings, "k-timeout"))
        .await
        .unwrap();
    assert_eq!(t.fake.created(), 1);
    assert_eq!(
        t.fake.count("POST", "/tuningJobs"),
        1,
        "no second create after the timeout"
    );
    assert!(t.fake.job(&name).is_some());
}

#[tokio::test(start_paused = true)]
async fn refused_connections_are_retried_then_reported() {
    let fake = FakeVertex::start();
    // A port with nothing listening: connections are refused, so no job can exist.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let s = Conf::new(&endpoint);
    let vertex = Vertex::new(s.vertex)
        .unwrap()
        .with_token_provider(fake_token(&fake))
        .with_http_timeout(None)
        .unwrap();
    let (message, _) = failed(vertex.find("k-refused").await.unwrap_err());
    assert!(message.contains(&endpoint), "{message}");
}

/// The wall clock of the watchdog test, shared by the fake and the tuner.
fn created() -> chrono::DateTime<chrono::Utc> {
    "2026-11-24T10:00:00Z".parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_cancels_a_job_past_max_tuning_duration() {
    let t = setup(|mut c| {
        c.vertex.max_tuning_duration = Duration::from_secs(3 * 3600);
        c
    });
    t.fake.set_history(fake::runs_forever());
    // One wall clock for the fake's createTime and the tuner's "now": the job's age is then
    // exactly zero when it is first read, whatever the real time between create and get.
    t.fake.set_created_at(created());
    let vertex = t.vertex.with_clock(created);
    let t = Setup { vertex, ..t };
    let name = t
        .vertex
        .submit(&request(&t.settings, "k-slow"))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let wall = std::time::Instant::now();
    let tuned = t.vertex.follow(&name).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3 * 3600),
        "cancelled when the limit passed"
    );
    assert!(
        wall.elapsed() < Duration::from_secs(30),
        "no real sleeping: {:?}",
        wall.elapsed()
    );
    assert_eq!(tuned.status, RunStatus::Failed);
    let d = &tuned.model_details;
    assert_eq!(d["timed_out"], true);
    assert_eq!(d["cancelled"], true);
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MAX_TUNING_DURATION (3h)"),
        "{d}"
    );
    assert_eq!(t.fake.count("POST", &format!("{name}:cancel")), 1);
    assert_eq!(d["state"], "JOB_STATE_CANCELLED");
    assert_eq!(
        t.fake.count("GET", &name),
        3 * 60 + 1 + 1,
        "a read every minute, and one after cancelling"
    );
    assert_clean(&t.fake);
}

#[tokio::test(start_paused = true)]
async fn continuous_mode_sends_the_previous_model_and_no_base_model() {
    let t = setup(|c| c);
    let previous = format!("projects/{PROJECT}/locations/{LOCATION}/models/987654321@1");
    let mut r = request(&t.settings, "k-full");
    let full_key = r.run_key.clone();
    r.continue_from(&previous, None);
    assert_ne!(r.run_key, full_key, "another parent is another job");
    let name = t.vertex.submit(&r).await.unwrap();
    let tuned = t.vertex.follow(&name).await.unwrap();
    assert_eq!(tuned.status, RunStatus::Success);
    assert_eq!(
        tuned.model_details["pre_tuned_model"],
        previous.as_str(),
        "lineage"
    );
    let create = t
        .fake
        .requests()
        .into_iter()
        .find(|q| q.method == "POST" && q.path.ends_with("/tuningJobs"))
        .unwrap();
    let body = create.body.unwrap();
    assert_eq!(body["preTunedModel"], json!({ "tunedModelName": previous }));
    assert!(body.get("baseModel").is_none(), "{body}");
    assert_eq!(body["labels"]["autotune_run_key"], r.run_key.as_str());
    assert_clean(&t.fake);

    // A parent Vertex does not know is named as such.
    let mut r = request(&t.settings, "k-gone");
    r.continue_from(
        "projects/test-project/locations/us-central1/models/404@1",
        None,
    );
    let (message, _) = failed(t.vertex.submit(&r).await.unwrap_err());
    assert!(message.contains("TUNING_MODE"), "{message}");
    assert!(message.contains("models/404@1"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn find_follows_pages_and_ignores_failed_jobs() {
    let t = setup(|c| c);
    t.fake.set_page_size(2);
    assert_eq!(t.vertex.find("k-find").await.unwrap(), None);
    t.fake.seed_job("k-find", "JOB_STATE_FAILED");
    t.fake.seed_job("k-find", "JOB_STATE_CANCELLED");
    assert_eq!(
        t.vertex.find("k-find").await.unwrap(),
        None,
        "failed and cancelled jobs are not adopted"
    );
    let running = t.fake.seed_job("k-find", "JOB_STATE_RUNNING");
    for i in 0..5 {
        t.fake
            .seed_job(&format!("k-other-{i}"), "JOB_STATE_RUNNING");
    }
    t.fake.seed_job("k-find", "JOB_STATE_EXPIRED");
    assert_eq!(
        t.vertex.find("k-find").await.unwrap(),
        Some(running.clone())
    );
    let lists = t.fake.count("GET", "/tuningJobs");
    assert!(lists >= 3, "pages of two: {lists}");
    // A succeeded one is preferred: its work is done.
    let done = t.fake.seed_job("k-find", "JOB_STATE_SUCCEEDED");
    assert_eq!(t.vertex.find("k-find").await.unwrap(), Some(done));
    assert_clean(&t.fake);
}

/// Issue 10 item 2: Google documents no filter fields for `tuningJobs.list`, so whatever a
/// server does with a label filter (refuse it, accept it and match nothing, ignore it), a create
/// whose answer is lost after it made the job (500) leaves exactly one job, found among pages
/// of other jobs by its label.
async fn one_job_whatever_the_server_does_with_a_filter(mode: ListFilter) {
    let t = setup(|c| c);
    t.fake.set_list_filter(mode);
    t.fake.set_page_size(2);
    for i in 0..5 {
        t.fake
            .seed_job(&format!("k-other-{i}"), "JOB_STATE_RUNNING");
    }
    t.fake.seed_job("k-dup", "JOB_STATE_FAILED");
    t.fake.fail_creates([Fault::CreateThen(500)]);
    let r = request(&t.settings, "k-dup");
    let name = find_or_submit(&t.vertex, &r).await;
    assert_eq!(t.fake.created(), 1, "{mode:?}: exactly one job");
    assert_eq!(t.fake.count("POST", "/tuningJobs"), 1, "{mode:?}");
    assert_eq!(
        t.fake.job(&name).unwrap()["labels"]["autotune_run_key"],
        "k-dup"
    );
    assert_eq!(
        t.vertex.find("k-dup").await.unwrap(),
        Some(name),
        "{mode:?}: a later run adopts it"
    );
    assert!(
        t.fake.count("GET", "/tuningJobs") >= 4,
        "{mode:?}: pages of two are followed"
    );
    assert_clean(&t.fake);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_refuses_the_label_filter_gives_one_job() {
    one_job_whatever_the_server_does_with_a_filter(ListFilter::Refuse).await;
}

#[tokio::test(start_paused = true)]
async fn a_server_whose_label_filter_matches_nothing_gives_one_job() {
    one_job_whatever_the_server_does_with_a_filter(ListFilter::MatchNothing).await;
}

#[tokio::test(start_paused = true)]
async fn a_server_that_ignores_the_label_filter_gives_one_job() {
    one_job_whatever_the_server_does_with_a_filter(ListFilter::Ignore).await;
}

#[tokio::test(start_paused = true)]
async fn twenty_concurrent_callers_make_one_job() {
    let t = setup(|c| c);
    t.fake.set_page_size(3);
    t.fake.seed_job("k-race", "JOB_STATE_FAILED");
    for i in 0..4 {
        t.fake.seed_job(&format!("k-else-{i}"), "JOB_STATE_RUNNING");
    }
    let vertex = Arc::new(t.vertex);
    let r = Arc::new(request(&t.settings, "k-race"));
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let (v, r) = (vertex.clone(), r.clone());
            tokio::spawn(async move { find_or_submit(&v, &r).await })
        })
        .collect();
    let mut names = Vec::new();
    for c in callers {
        names.push(c.await.unwrap());
    }
    names.dedup();
    assert_eq!(names.len(), 1, "everyone follows the same job: {names:?}");
    assert_eq!(t.fake.created(), 1);
    assert_eq!(t.fake.count("POST", "/tuningJobs"), 1);
    assert_clean(&t.fake);
}

/// On the real clock, with one-second polls.
#[tokio::test]
async fn tokens_from_the_metadata_server() {
    let fake = FakeVertex::start();
    let mut s = settings(&fake);
    s.vertex.poll_interval = Duration::from_secs(1);
    let vertex = Vertex::new(s.vertex.clone())
        .unwrap()
        .with_credentials(Credentials::metadata_server(&fake.host));
    let name = vertex.submit(&request(&s, "k-metadata")).await.unwrap();
    assert_eq!(
        vertex.follow(&name).await.unwrap().status,
        RunStatus::Success
    );
    assert_eq!(fake.metadata_tokens(), 1, "one token, cached across calls");
    assert_clean(&fake);
}

/// A service-account key: JWTs self-signed with it (<https://google.aip.dev/auth/4111>), no
/// token endpoint; on the real clock.
#[tokio::test]
async fn tokens_self_signed_with_a_service_account_key() {
    let fake = FakeVertex::start();
    let dir = tempfile::tempdir().unwrap();
    let key = fake.service_account_key(dir.path());
    let s = settings(&fake);
    let vertex = Vertex::new(s.vertex.clone())
        .unwrap()
        .with_credentials(key_credentials(&key));
    let name = vertex.submit(&request(&s, "k-key")).await.unwrap();
    assert!(name.contains("/tuningJobs/"), "{name}");
    assert!(fake.self_signed_jwts() >= 2, "list and create carry one");
    assert_eq!(fake.tokens_issued(), 0, "no token endpoint");
    assert_clean(&fake);
}

#[test]
fn project_id_is_required() {
    let fake = FakeVertex::start();
    let mut s = settings(&fake);
    s.vertex.project = String::new();
    let e = Vertex::new(s.vertex).unwrap_err();
    assert!(e.to_string().contains("PROJECT_ID"), "{e}");
}

/// The credentials chosen from the real environment, in a child process (env vars are
/// process-wide): `GOOGLE_APPLICATION_CREDENTIALS` with a generated key, then `GCE_METADATA_HOST`.
#[test]
fn credentials_come_from_the_environment() {
    let fake = FakeVertex::start();
    let dir = tempfile::tempdir().unwrap();
    let key = fake.service_account_key(dir.path());
    let child = |env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "vertex::child_submits_with_environment_credentials",
            "--ignored",
            "--nocapture",
        ]);
        for k in [
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GCE_METADATA_HOST",
            "PROJECT_ID",
            "TUNER",
        ] {
            c.env_remove(k);
        }
        c.env("FAKE_VERTEX_URL", &fake.url).env("HOME", dir.path());
        c.envs(env.iter().copied());
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the child test ran"
        );
    };
    child(&[("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap())]);
    assert!(fake.self_signed_jwts() >= 1 && fake.metadata_tokens() == 0);
    assert_eq!(fake.created(), 1);
    child(&[("GCE_METADATA_HOST", &fake.host)]);
    assert_eq!(fake.metadata_tokens(), 1);
    assert_eq!(fake.created(), 2);
    assert_clean(&fake);
}

#[tokio::test]
#[ignore = "run by credentials_come_from_the_environment in a child process"]
async fn child_submits_with_environment_credentials() {
    // Run alone (`--include-ignored`), it has no fake to talk to: nothing to check.
    let Ok(url) = std::env::var("FAKE_VERTEX_URL") else {
        eprintln!(
            "FAKE_VERTEX_URL is unset: this test runs as a child of credentials_come_from_the_environment"
        );
        return;
    };
    let s = Conf::new(&url);
    let vertex = Vertex::new(s.vertex.clone()).unwrap();
    let key = format!("k-env-{}", std::process::id());
    let name = vertex.submit(&request(&s, &key)).await.unwrap();
    assert!(name.contains("/tuningJobs/"), "{name}");
}

#[tokio::test(start_paused = true)]
async fn busy_lists_every_page_and_counts_only_jobs_that_hold_a_slot() {
    let t = setup(|c| c);
    t.fake.set_page_size(2);
    let running = t.fake.seed_job("k-a", "JOB_STATE_RUNNING");
    let queued = t.fake.seed_job("k-b", "JOB_STATE_QUEUED");
    t.fake.seed_job("k-c", "JOB_STATE_SUCCEEDED");
    t.fake.seed_job("k-d", "JOB_STATE_FAILED");
    let mut want = vec![running, queued];
    want.sort();
    assert_eq!(t.vertex.busy().await.unwrap(), want);
    assert!(
        t.fake.count("GET", "/tuningJobs") >= 2,
        "every page was read"
    );
    assert_clean(&t.fake);
}

#[tokio::test(start_paused = true)]
async fn check_looks_at_a_job_once() {
    // An hour after the seeded jobs' creation: within MAX_TUNING_DURATION.
    fn an_hour_later() -> chrono::DateTime<chrono::Utc> {
        "2026-11-01T10:00:00Z".parse().unwrap()
    }
    let t = setup(|c| c);
    let t = Setup {
        vertex: t.vertex.with_clock(an_hour_later),
        ..t
    };
    let running = t.fake.seed_job("k-r", "JOB_STATE_RUNNING");
    let done = t.fake.seed_job("k-d", "JOB_STATE_SUCCEEDED");
    assert!(t.vertex.check(&running).await.unwrap().is_none());
    assert_eq!(t.fake.count("GET", &running), 1, "one read, no polling");
    let tuned = t.vertex.check(&done).await.unwrap().unwrap();
    assert_eq!(tuned.status, RunStatus::Success);
    assert_clean(&t.fake);
}

#[test]
fn every_host_is_one_the_discovery_document_lists() {
    let discovery = support::discovery::Discovery::load("aiplatform.v1.json");
    let hosts = Hosts::google();
    let mut locations: Vec<String> = autotune::validate::ModelTable::built_in()
        .models()
        .iter()
        .flat_map(|m| m.tuning_regions.clone())
        .collect();
    locations.extend(["us", "eu", "global", "us-central1"].map(str::to_owned));
    locations.sort();
    locations.dedup();
    for l in &locations {
        let listed = discovery
            .endpoint_url(l)
            .unwrap_or_else(|| panic!("the discovery document lists no endpoint for {l}"));
        assert_eq!(format!("{}/", hosts.root(l)), listed, "{l}");
    }
    // And the paths the pipeline builds are methods of the document.
    for (method, path) in [
        (
            "POST",
            "/v1/projects/p/locations/us/endpoints/7:generateContent",
        ),
        (
            "POST",
            "/v1/projects/p/locations/global/publishers/google/models/gemini-3.5-flash:generateContent",
        ),
        ("GET", "/v1/projects/p/locations/us/models/7@champion"),
        (
            "POST",
            "/v1/projects/p/locations/us/models/7@2:mergeVersionAliases",
        ),
        ("GET", "/v1/projects/p/locations/europe-west4/tuningJobs"),
        (
            "POST",
            "/v1/projects/p/locations/us-central1:evaluateInstances",
        ),
    ] {
        assert_eq!(discovery.check_path(method, path), None);
    }
    assert!(
        discovery
            .check_path("POST", "/v1/projects/p/locations/us/endpoints/7:nonsense")
            .is_some()
    );
    assert!(
        discovery
            .check_path("GET", "/v1/projects/p/whatever")
            .is_some()
    );
}
