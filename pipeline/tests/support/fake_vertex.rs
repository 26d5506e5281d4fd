//! A loopback fake of Vertex AI `projects.locations.tuningJobs` (create, get, list with label
//! filters and pages, cancel) in every location, of the Model Registry's `models.get` and
//! `models.mergeVersionAliases` for the models its jobs make, of the OAuth token endpoint of a
//! service-account key, and of the metadata server's token endpoint. It accepts the tokens it
//! issued and JWTs self-signed by the generated service-account key.
//!
//! It places models as Google does today (each rule below with its page, read 2026-12-07):
//! * A Gemini 3 tuning job is created only in `us-central1` or `europe-west4`
//!   ("Supported endpoint for model tuning", supervised-tuning page, last updated 2026-09-25).
//! * A Gemini 3 base model answers only on the global and the `us`/`eu` multi-region
//!   endpoints: 404 `Publisher model … not found` on a region (GoogleCloudPlatform/
//!   vertex-ai-creative-studio PR #1591, generative-ai issue #3004; supported-capabilities
//!   page: multi-region endpoints "are designed exclusively for the Gemini 3 family"). A
//!   Gemini 2 base model answers on a region or global, not on a multi-region ("Models older
//!   than Gemini 3 are not supported on jurisdictional multi-region endpoints").
//! * A model tuned from Gemini 3 is served only on its jurisdiction's multi-region endpoint
//!   ("Supported endpoint for tuned model serving: us and eu multi-region endpoints only"):
//!   its endpoint answers 404 under `locations/us-central1`. Its job names it under the
//!   tuning region by default, or under the multi-region ([`FakeVertex::name_tuned_under`]):
//!   Google's pages do not say which.
//!
//! Checkpoints and the default checkpoint (each rule with its page, read 2026-12-08):
//! * A job that does not set `supervisedTuningSpec.exportLastCheckpointOnly` to true keeps
//!   intermediate checkpoints ("Otherwise, enable intermediate checkpoints for SFT. Default is
//!   false", aiplatform.v1.json rev 20260815); its succeeded `tunedModel.checkpoints` lists
//!   them, one about every epoch below 10 epochs, about 10 evenly spread above, the last right
//!   after the last epoch ("Use checkpoints in supervised fine-tuning for Gemini models",
//!   cloud.google.com/vertex-ai/generative-ai/docs/models/tuning-checkpoints, and its copy on
//!   docs.cloud.google.com/gemini-enterprise-agent-platform/models/tuning/checkpoints). Each
//!   is deployed to an endpoint of its own, the last one's being `tunedModel.endpoint` (the
//!   page: "The tuned model endpoint represents the endpoint of the default checkpoint");
//!   intermediate checkpoint k of endpoint `E` is served at `E` followed by the digit k
//!   ([`checkpoint_endpoint`]). With `exportLastCheckpointOnly` true the list is absent
//!   (`TunedModel.checkpoints`: "only populated for tuning jobs that enable intermediate
//!   checkpoints"). Without `epochCount` the fake saves [`FakeVertex::set_default_epochs`]
//!   checkpoints (3; Vertex chooses the epochs then, and its pages do not say how many).
//! * `models.patch` (`PATCH v1/{+name}?updateMask=…`, a `GoogleCloudAiplatformV1Model` body;
//!   `updateMask` is "Required") sets `defaultCheckpointId` of a model version; the fake
//!   refuses (400) a mask that does not name a field the body sets, and a checkpoint the
//!   version does not have (Google's pages do not give that error's words: the fake's own).
//! * `preTunedModel.checkpointId` ("The source checkpoint id. If not specified, the default
//!   checkpoint will be used") must be a checkpoint of the parent version: 400 otherwise (the
//!   words again the fake's own).
//!
//! The fake sees one host (the client's VERTEX_API_ENDPOINT); it checks the location each path
//! carries, which is what decides the host for Google. Its placement helpers ([`jurisdiction`],
//! [`location_of`], [`relocate`]) repeat what `autotune::locations` does on purpose: the fake's
//! rules come from Google's pages above, not from the code under test, so a mistake in
//! `locations.rs` fails a test instead of being copied into the fake.
//!
//! It runs on its own thread and runtime, on the real clock, so the client under test may run on
//! a paused clock. It checks every request body, and every answer it gives, against
//! `aiplatform.v1.json`; it accepts only bearer tokens it issued, and issues them only for a JWT
//! signed by the generated key with the right claims. Jobs play scripted histories, one step per
//! `get`; faults (429, 503, lost answers, refusals) are queued per method.

use super::loopback::{Bound, Server};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::discovery::Discovery;

mod inference;
pub(crate) use inference::{FakeReply, endpoint, publisher_model, publisher_model_in, rouge_l};

pub(crate) const PROJECT: &str = "test-project";
pub(crate) const LOCATION: &str = "us-central1";
pub(crate) const CLIENT_EMAIL: &str = "autotune-test@test-project.iam.gserviceaccount.com";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Models the fake tunes; others are unknown (404), `gemini-1.0-pro-002` is known but not tunable.
const TUNABLE: &[&str] = &[
    "gemini-3.5-flash",
    "gemini-3.1-flash-lite",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash-001",
];
const NOT_TUNABLE: &[&str] = &["gemini-1.0-pro-002"];

/// Where Gemini 3 models are tuned (supervised-tuning page, last updated 2026-09-25).
const GEMINI_3_TUNING_REGIONS: &[&str] = &["us-central1", "europe-west4"];

/// Whether `model` (an ID or a resource name) is of the Gemini 3 family or later.
fn gemini_3(model: &str) -> bool {
    let id = model.rsplit('/').next().unwrap_or(model);
    id.strip_prefix("gemini-")
        .and_then(|v| v.split(['.', '-']).next())
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major >= 3)
}

/// The jurisdiction whose multi-region endpoint covers a region.
fn jurisdiction(location: &str) -> Option<&'static str> {
    if location == "us" || location.starts_with("us-") {
        Some("us")
    } else if location == "eu" || location.starts_with("europe-") {
        Some("eu")
    } else {
        None
    }
}

/// The location a resource name carries.
pub(crate) fn location_of(name: &str) -> &str {
    let mut parts = name.split('/');
    while let Some(p) = parts.next() {
        if p == "locations" {
            return parts.next().unwrap_or_default();
        }
    }
    ""
}

/// A resource name with its location replaced.
pub(crate) fn relocate(name: &str, location: &str) -> String {
    let at = location_of(name);
    name.replacen(
        &format!("/locations/{at}/"),
        &format!("/locations/{location}/"),
        1,
    )
}

/// What a scripted create does instead of the normal answer.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Answer with this status and Google error body; nothing is created.
    Refuse(u16, Value),
    /// Create the job, then answer with this status (an answer lost after the fact).
    CreateThen(u16),
    /// Create the job, then hold the answer this long (the client times out).
    CreateAndHang(Duration),
}

/// How `list` treats a `filter` (Google documents no filter fields for `tuningJobs.list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListFilter {
    /// `labels.KEY="VALUE"` selects the jobs with that label.
    Honour,
    /// Any filter is refused with 400 INVALID_ARGUMENT.
    Refuse,
    /// Any filter is accepted and matches nothing.
    MatchNothing,
    /// Any filter is accepted and ignored: every job is listed.
    Ignore,
}

/// One step of a job's history: its state and what appears with it.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub state: &'static str,
    pub extra: Value,
}

pub(crate) fn step(state: &'static str) -> Step {
    Step {
        state,
        extra: json!({}),
    }
}

/// PENDING, RUNNING, then SUCCEEDED with a tuned model, endpoint and data stats.
pub(crate) fn succeeds() -> Vec<Step> {
    vec![
        step("JOB_STATE_PENDING"),
        step("JOB_STATE_RUNNING"),
        Step {
            state: "JOB_STATE_SUCCEEDED",
            extra: json!({
                "startTime": "2026-11-24T10:01:00Z",
                "endTime": "2026-11-24T10:41:00Z",
                "tunedModel": {
                    "model": format!("projects/{PROJECT}/locations/{LOCATION}/models/987654321@1"),
                    "endpoint": format!("projects/{PROJECT}/locations/{LOCATION}/endpoints/1122334455")
                },
                "tuningDataStats": {"supervisedTuningDataStats": {
                    "tuningDatasetExampleCount": "500",
                    "totalBillableTokenCount": "123456",
                    "totalTruncatedExampleCount": "2",
                    "tuningStepCount": "30",
                    "truncatedExampleIndices": ["4", "17"]
                }}
            }),
        },
    ]
}

/// The error of a job that failed on its data, as Vertex reports it.
pub(crate) fn data_error() -> Value {
    json!({
        "code": 3,
        "message": "The training data has 12 rows with invalid format. Row 3: Missing field \"contents\".",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{
                "field": "tuning_job.supervised_tuning_spec.training_dataset_uri",
                "description": "Row 3 of gs://b/train.jsonl: \"contents\" is required."
            }]
        }]
    })
}

/// PENDING, RUNNING, then FAILED with `error`.
pub(crate) fn fails(error: &Value) -> Vec<Step> {
    vec![
        step("JOB_STATE_PENDING"),
        step("JOB_STATE_RUNNING"),
        Step {
            state: "JOB_STATE_FAILED",
            extra: json!({ "error": error.clone(), "endTime": "2026-11-24T10:05:00Z" }),
        },
    ]
}

/// PENDING, RUNNING, then CANCELLED (someone cancelled it in the console).
pub(crate) fn cancelled() -> Vec<Step> {
    vec![
        step("JOB_STATE_PENDING"),
        step("JOB_STATE_RUNNING"),
        Step {
            state: "JOB_STATE_CANCELLED",
            extra: json!({ "error": {"code": 1, "message": "CANCELLED"} }),
        },
    ]
}

/// PENDING, then RUNNING for ever.
pub(crate) fn runs_forever() -> Vec<Step> {
    vec![step("JOB_STATE_PENDING"), step("JOB_STATE_RUNNING")]
}

/// The endpoint of intermediate checkpoint `k` of a tuned model whose (last checkpoint's)
/// endpoint is `endpoint`: the same name with the digit `k` appended.
pub(crate) fn checkpoint_endpoint(endpoint: &str, k: u64) -> String {
    format!("{endpoint}{k}")
}

/// A succeeded job's `tunedModel.checkpoints`, as Vertex lists them for a job that keeps
/// intermediate checkpoints (see the module docs); nothing for one that exports the last only,
/// or whose history already scripts them.
fn add_checkpoints(job: &mut Value, default_epochs: u64) {
    let spec = &job["supervisedTuningSpec"];
    if spec["exportLastCheckpointOnly"] == true || job["tunedModel"].get("checkpoints").is_some() {
        return;
    }
    let Some(endpoint) = job["tunedModel"]["endpoint"].as_str().map(str::to_owned) else {
        return;
    };
    let epochs = spec["hyperParameters"]["epochCount"]
        .as_str()
        .and_then(|e| e.parse::<u64>().ok())
        .unwrap_or(default_epochs)
        .max(1);
    let saved = epochs.min(10);
    let steps_per_epoch = 10;
    let list: Vec<Value> = (1..=saved)
        .map(|k| {
            let epoch = (k * epochs).div_ceil(saved);
            json!({
                "checkpointId": k.to_string(),
                "epoch": epoch.to_string(),
                "step": (epoch * steps_per_epoch).to_string(),
                "endpoint": if k == saved { endpoint.clone() } else { checkpoint_endpoint(&endpoint, k) },
            })
        })
        .collect();
    job["tunedModel"]["checkpoints"] = Value::Array(list);
}

/// A Google error body's `error` object.
pub(crate) fn google_error(code: u16, status: &str, message: &str) -> Value {
    json!({ "code": code, "message": message, "status": status })
}

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
    pub status: u16,
}

struct Job {
    value: Value,
    history: VecDeque<Step>,
}

struct State {
    discovery: Discovery,
    url: String,
    jobs: Vec<Job>,
    next_id: u64,
    seeded: usize,
    requests: Vec<Recorded>,
    violations: Vec<String>,
    create_faults: VecDeque<Fault>,
    get_faults: VecDeque<u16>,
    list_faults: VecDeque<u16>,
    history: Vec<Step>,
    /// The `createTime` of jobs created from now on; the real clock when unset.
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    page_size: usize,
    list_filter: ListFilter,
    tokens: Vec<String>,
    public_key: Option<Vec<u8>>,
    jwt_problems: Vec<String>,
    metadata_tokens: usize,
    self_signed: usize,
    /// `generateContent` and `evaluateInstances` (`fake_vertex/inference.rs`).
    inference: inference::Inference,
    /// The Models the jobs made, and their version aliases.
    aliases: super::fake_registry::Aliases,
    /// Where succeeded jobs name their tuned model and endpoint: `None` under the job's
    /// location, `Some("us")` under the multi-region.
    tuned_under: Option<&'static str>,
    /// Checkpoints a job without `epochCount` saves.
    default_epochs: u64,
}

pub(crate) struct FakeVertex {
    pub url: String,
    pub host: String,
    state: Arc<Mutex<State>>,
    _server: Server,
}

impl FakeVertex {
    pub(crate) fn start() -> Self {
        let bound = Bound::new();
        let addr = bound.addr;
        let url = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State {
            discovery: Discovery::load("aiplatform.v1.json"),
            url: url.clone(),
            jobs: Vec::new(),
            next_id: 1_000_000_000_000_000_000,
            seeded: 0,
            requests: Vec::new(),
            violations: Vec::new(),
            create_faults: VecDeque::new(),
            get_faults: VecDeque::new(),
            list_faults: VecDeque::new(),
            history: succeeds(),
            created_at: None,
            page_size: 100,
            list_filter: ListFilter::Honour,
            tokens: Vec::new(),
            public_key: None,
            jwt_problems: Vec::new(),
            metadata_tokens: 0,
            self_signed: 0,
            inference: inference::Inference::default(),
            aliases: super::fake_registry::Aliases::default(),
            tuned_under: None,
            default_epochs: 3,
        }));
        let shared = state.clone();
        let server = bound.serve(move |req| handle(shared.clone(), req));
        Self {
            host: addr.to_string(),
            url,
            state,
            _server: server,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Jobs created from now on say they were created at `t` (a test of the watchdog then
    /// gives the tuner the same clock).
    pub(crate) fn set_created_at(&self, t: chrono::DateTime<chrono::Utc>) {
        self.state().created_at = Some(t);
    }

    /// The history every job created from now on plays.
    pub(crate) fn set_history(&self, history: Vec<Step>) {
        self.state().history = history;
    }

    pub(crate) fn fail_creates(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state().create_faults.extend(faults);
    }

    /// Statuses answered to the next `get`s instead of the job (a Google error body each).
    pub(crate) fn fail_gets(&self, statuses: impl IntoIterator<Item = u16>) {
        self.state().get_faults.extend(statuses);
    }

    pub(crate) fn fail_lists(&self, statuses: impl IntoIterator<Item = u16>) {
        self.state().list_faults.extend(statuses);
    }

    /// Succeeded jobs name their tuned model and endpoint under `location` (`us`, `eu`)
    /// instead of the job's own location.
    pub(crate) fn name_tuned_under(&self, location: &'static str) {
        self.state().tuned_under = Some(location);
    }

    /// Jobs without `epochCount` save `n` checkpoints from now on.
    pub(crate) fn set_default_epochs(&self, n: u64) {
        self.state().default_epochs = n.max(1);
    }

    /// The default checkpoint of the model version `model@version`, as `models.patch` left it.
    pub(crate) fn default_checkpoint(&self, version: &str) -> Option<String> {
        self.state().aliases.default_checkpoint(version)
    }

    /// Every `model@version` that carries the Model Registry alias `alias`.
    pub(crate) fn alias_holders(&self, alias: &str) -> Vec<String> {
        self.state().aliases.holders(alias)
    }

    /// Largest page `list` returns, to make clients follow page tokens.
    pub(crate) fn set_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    /// How `list` treats filters from now on.
    pub(crate) fn set_list_filter(&self, mode: ListFilter) {
        self.state().list_filter = mode;
    }

    /// Adds a job made by someone else (another run key, or an earlier attempt) in `state`.
    pub(crate) fn seed_job(&self, run_key: &str, state: &'static str) -> String {
        self.seed_job_in(LOCATION, run_key, state)
    }

    /// [`FakeVertex::seed_job`] in another location.
    pub(crate) fn seed_job_in(&self, location: &str, run_key: &str, state: &'static str) -> String {
        let mut s = self.state();
        let id = s.next_id;
        s.next_id += 1;
        let name = format!("projects/{PROJECT}/locations/{location}/tuningJobs/{id}");
        let mut value = json!({
            "name": name,
            "baseModel": "gemini-2.5-flash",
            "state": state,
            "createTime": format!("2026-11-{:02}T09:00:00Z", 1 + s.jobs.len() % 28),
            "labels": {"pipeline": "autotune", "autotune_run_key": run_key},
            "supervisedTuningSpec": {"trainingDatasetUri": "gs://b/old/train.jsonl"}
        });
        if state == "JOB_STATE_FAILED" {
            value["error"] = json!({"code": 13, "message": "Internal error occurred."});
        }
        s.jobs.push(Job {
            value,
            history: VecDeque::new(),
        });
        s.seeded += 1;
        name
    }

    /// Replaces what the job `name` plays from its next `get` on, e.g. to let a job that
    /// [`runs_forever`] finish when the test says so.
    pub(crate) fn play(&self, name: &str, history: Vec<Step>) {
        let mut s = self.state();
        let job = s
            .jobs
            .iter_mut()
            .find(|j| j.value["name"] == name)
            .unwrap_or_else(|| panic!("the fake has no job {name}"));
        job.history = history.into();
    }

    /// The bodies of the `create` requests answered with a job (200), in order, in any
    /// location.
    pub(crate) fn create_bodies(&self) -> Vec<Value> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == "POST" && jobs_parent(&r.path).is_some() && r.status == 200)
            .filter_map(|r| r.body.clone())
            .collect()
    }

    /// Jobs created through the API (seeded ones not counted).
    pub(crate) fn created(&self) -> usize {
        let s = self.state();
        s.jobs.len() - s.seeded
    }

    pub(crate) fn job(&self, name: &str) -> Option<Value> {
        self.state()
            .jobs
            .iter()
            .find(|j| j.value["name"] == name)
            .map(|j| j.value.clone())
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Requests with this method whose path ends with `suffix`.
    pub(crate) fn count(&self, method: &str, suffix: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .count()
    }

    /// Schema violations of request bodies and of the fake's own answers.
    pub(crate) fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Problems with JWTs presented to the token endpoint.
    pub(crate) fn jwt_problems(&self) -> Vec<String> {
        self.state().jwt_problems.clone()
    }

    pub(crate) fn tokens_issued(&self) -> usize {
        self.state().tokens.len()
    }

    /// A token as if issued by the token endpoint, for clients given it directly.
    pub(crate) fn issue_token(&self) -> String {
        self.state().issue()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Calls authorised by a self-signed JWT of the generated key.
    pub(crate) fn self_signed_jwts(&self) -> usize {
        self.state().self_signed
    }

    pub(crate) fn metadata_tokens(&self) -> usize {
        self.state().metadata_tokens
    }

    /// Writes a freshly generated service-account key whose `token_uri` is this fake, and
    /// remembers its public key to check the JWTs signed with it.
    pub(crate) fn service_account_key(&self, dir: &Path) -> PathBuf {
        let pem = dir.join("key.pem");
        let der = dir.join("key.pub.der");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl is needed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let pem_s = pem.to_str().unwrap();
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            pem_s,
        ]);
        run(&[
            "rsa",
            "-in",
            pem_s,
            "-RSAPublicKey_out",
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ]);
        let key = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": std::fs::read_to_string(&pem).unwrap(),
            "client_email": CLIENT_EMAIL,
            "client_id": "123456789",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.url),
        });
        self.state().public_key = Some(std::fs::read(&der).unwrap());
        let path = dir.join("service-account.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&key).unwrap()).unwrap();
        path
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, body: &Value) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A Google error response: `{"error": {code, message, status, details?}}`.
fn error_answer(code: u16, status: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({ "error": google_error(code, status, message) }),
    )
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn fault_answer(code: u16) -> (u16, Value) {
    let message = match code {
        429 => "Quota exceeded for aiplatform.googleapis.com/resource_management_requests.",
        503 => "The service is currently unavailable.",
        _ => "Internal error encountered.",
    };
    error_answer(code, status_name(code), message)
}

enum Then {
    Now,
    Hang(Duration),
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    if path != "/token" && !path.starts_with("/computeMetadata/") {
        let mut s = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = s.discovery.check_path(&method, &path) {
            s.violations.push(v);
        }
    }
    if inference::handles(&method, &path) {
        return Ok(inference::handle(state, &method, &path, &query, &headers, &body).await);
    }
    let (status, value, then) = {
        let mut s = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (status, value, then) = s.route(&method, &path, &query, &headers, &body);
        let json_body = serde_json::from_slice(&body).ok();
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: json_body,
            status,
        });
        (status, value, then)
    };
    if let Then::Hang(d) = then {
        tokio::time::sleep(d).await;
    }
    Ok(answer(status, &value))
}

/// The location of a `/v1/projects/{PROJECT}/locations/{L}/tuningJobs` path.
fn jobs_parent(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(&format!("/v1/projects/{PROJECT}/locations/"))?;
    let location = rest.strip_suffix("/tuningJobs")?;
    (!location.is_empty() && !location.contains('/')).then_some(location)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (decode(k) == name).then(|| decode(v))
    })
}

/// `application/x-www-form-urlencoded` and query decoding.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                if let Ok(b) = u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl State {
    fn route(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> (u16, Value, Then) {
        if path == "/token" && method == "POST" {
            let (c, v) = self.token(body);
            return (c, v, Then::Now);
        }
        if path.starts_with("/computeMetadata/v1/") {
            let (c, v) = self.metadata(path, query, headers);
            return (c, v, Then::Now);
        }
        if !self.authorised(headers) {
            let problem = self.jwt_problems.last().cloned().unwrap_or_default();
            let (c, v) = error_answer(
                401,
                "UNAUTHENTICATED",
                &format!(
                    "Request had invalid authentication credentials. Expected OAuth 2 access token. {problem}"
                ),
            );
            return (c, v, Then::Now);
        }
        if super::fake_registry::Aliases::handles(path) {
            let reply = if method == "PATCH" {
                self.aliases.patch(
                    &self.discovery,
                    &mut self.violations,
                    path,
                    &query_param(query, "updateMask").unwrap_or_default(),
                    body,
                )
            } else {
                self.aliases
                    .route(&self.discovery, &mut self.violations, method, path, body)
            };
            return (reply.status, reply.body, Then::Now);
        }
        let parent = jobs_parent(path);
        let (code, value, then) = if let (Some(location), "POST") = (parent, method) {
            self.create(location, body)
        } else if let (Some(location), "GET") = (parent, method) {
            let (c, v) = self.list(location, query);
            (c, v, Then::Now)
        } else if let Some(name) = path
            .strip_prefix("/v1/")
            .and_then(|p| p.strip_suffix(":cancel"))
        {
            let (c, v) = self.cancel(name, body);
            (c, v, Then::Now)
        } else if let (Some(name), "GET") = (path.strip_prefix("/v1/"), method) {
            let (c, v) = self.get(name);
            (c, v, Then::Now)
        } else {
            let (c, v) = error_answer(
                404,
                "NOT_FOUND",
                &format!("The requested URL {path} was not found."),
            );
            (c, v, Then::Now)
        };
        // The fake's own answers must be what Google's would be.
        let schema = if code != 200 {
            None
        } else if parent.is_some() && method == "GET" {
            Some("GoogleCloudAiplatformV1ListTuningJobsResponse")
        } else if path.ends_with(":cancel") {
            Some("GoogleProtobufEmpty")
        } else {
            Some("GoogleCloudAiplatformV1TuningJob")
        };
        if let Some(schema) = schema {
            for v in self.discovery.check(schema, &value) {
                self.violations
                    .push(format!("fake answer to {method} {path}: {v}"));
            }
        }
        (code, value, then)
    }

    /// A token this fake issued, or a self-signed JWT of the generated key (what Google's
    /// libraries send for a service-account key: <https://google.aip.dev/auth/4111>).
    fn authorised(&mut self, headers: &hyper::HeaderMap) -> bool {
        let Some(token) = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        else {
            return false;
        };
        if self.tokens.iter().any(|x| x == token) {
            return true;
        }
        if token.split('.').count() != 3 {
            return false;
        }
        match self.check_jwt(token, None) {
            Ok(()) => {
                self.self_signed += 1;
                true
            }
            Err(problem) => {
                self.jwt_problems
                    .push(format!("self-signed JWT: {problem}"));
                false
            }
        }
    }

    fn issue(&mut self) -> Value {
        let token = format!("ya29.fake-{}", self.tokens.len() + 1);
        self.tokens.push(token.clone());
        json!({ "access_token": token, "expires_in": 3599, "token_type": "Bearer" })
    }

    /// The OAuth token endpoint: a JWT-bearer grant signed by the generated key.
    fn token(&mut self, body: &[u8]) -> (u16, Value) {
        let form = String::from_utf8_lossy(body).into_owned();
        let grant = query_param(&form, "grant_type").unwrap_or_default();
        let assertion = query_param(&form, "assertion").unwrap_or_default();
        let checked = if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer" {
            self.check_jwt(&assertion, Some(&format!("{}/token", self.url)))
        } else {
            Err(format!("grant_type {grant:?}"))
        };
        match checked {
            Ok(()) => (200, self.issue()),
            Err(problem) => {
                self.jwt_problems.push(problem.clone());
                (
                    400,
                    json!({ "error": "invalid_grant", "error_description": problem }),
                )
            }
        }
    }

    /// Checks a JWT signed by the generated key: for the token endpoint (`aud` is its URL) or
    /// self-signed for an API (no `aud`, `sub` is the account, a `scope`).
    fn check_jwt(&self, assertion: &str, aud: Option<&str>) -> Result<(), String> {
        let parts: Vec<&str> = assertion.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err("assertion is not a JWT".to_owned());
        };
        // Some libraries pad their base64url; JWTs usually do not. Accept both.
        let b64 = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let key = self.public_key.as_ref().ok_or("no key was generated")?;
        let signature = b64
            .decode(signature)
            .map_err(|e| format!("signature: {e}"))?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| "bad signature".to_owned())?;
        let header: Value = serde_json::from_slice(&b64.decode(header).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let claims: Value = serde_json::from_slice(&b64.decode(claims).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        if header["alg"] != "RS256" {
            return Err(format!("alg {}", header["alg"]));
        }
        if claims["iss"] != CLIENT_EMAIL {
            return Err(format!("iss {}", claims["iss"]));
        }
        match aud {
            Some(aud) if claims["aud"] != aud => return Err(format!("aud {}", claims["aud"])),
            Some(_) => {}
            None => {
                if claims["sub"] != CLIENT_EMAIL || !claims["aud"].is_null() {
                    return Err(format!("sub {} aud {}", claims["sub"], claims["aud"]));
                }
                if header["kid"] != "0123456789abcdef" {
                    return Err(format!("kid {}", header["kid"]));
                }
            }
        }
        if !claims["scope"]
            .as_str()
            .unwrap_or_default()
            .split(' ')
            .any(|s| s == CLOUD_PLATFORM)
        {
            return Err(format!("scope {}", claims["scope"]));
        }
        if claims["exp"].as_i64().unwrap_or(0) <= claims["iat"].as_i64().unwrap_or(0) {
            return Err("exp not after iat".to_owned());
        }
        Ok(())
    }

    fn metadata(&mut self, path: &str, query: &str, headers: &hyper::HeaderMap) -> (u16, Value) {
        if headers.get("metadata-flavor").and_then(|h| h.to_str().ok()) != Some("Google") {
            return (403, json!("Missing required header: Metadata-Flavor"));
        }
        match path {
            "/computeMetadata/v1/instance/service-accounts/default/token" => {
                let scopes = query_param(query, "scopes").unwrap_or_default();
                if !scopes.is_empty() && !scopes.split(',').any(|s| s == CLOUD_PLATFORM) {
                    return (400, json!(format!("scopes {scopes}")));
                }
                self.metadata_tokens += 1;
                (200, self.issue())
            }
            "/computeMetadata/v1/project/project-id" => (200, json!(PROJECT)),
            _ => (404, json!("not found")),
        }
    }

    fn create(&mut self, location: &str, body: &[u8]) -> (u16, Value, Then) {
        let Ok(job) = serde_json::from_slice::<Value>(body) else {
            let (c, v) = error_answer(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
            return (c, v, Then::Now);
        };
        let problems = self
            .discovery
            .check("GoogleCloudAiplatformV1TuningJob", &job);
        if !problems.is_empty() {
            self.violations
                .extend(problems.iter().map(|p| format!("create body: {p}")));
            let (c, v) = error_answer(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {}", problems.join("; ")),
            );
            return (c, v, Then::Now);
        }
        let fault = self.create_faults.pop_front();
        if let Some(Fault::Refuse(code, error)) = fault {
            return (code, json!({ "error": error }), Then::Now);
        }
        if let Some(refusal) = self.refuse_model(location, &job) {
            return (refusal.0, refusal.1, Then::Now);
        }
        if job["supervisedTuningSpec"]["trainingDatasetUri"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            let (c, v) = error_answer(
                400,
                "INVALID_ARGUMENT",
                "supervised_tuning_spec.training_dataset_uri is required.",
            );
            return (c, v, Then::Now);
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut value = job;
        let name = format!("projects/{PROJECT}/locations/{location}/tuningJobs/{id}");
        value["name"] = json!(name);
        value["state"] = json!("JOB_STATE_PENDING");
        // The real clock (the watchdog counts from it), a microsecond per id later so that
        // creation order is also time order.
        let created = self.created_at.unwrap_or_else(chrono::Utc::now)
            + chrono::Duration::microseconds(i64::try_from(self.jobs.len()).unwrap_or(0));
        value["createTime"] = json!(created.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        value["updateTime"] = value["createTime"].clone();
        if value["preTunedModel"].is_object() {
            // Output only: the base model of the parent.
            value["preTunedModel"]["baseModel"] = json!("gemini-3.5-flash");
        }
        self.jobs.push(Job {
            value: value.clone(),
            history: self.history.iter().cloned().collect(),
        });
        match fault {
            Some(Fault::CreateThen(code)) => {
                let (c, v) = fault_answer(code);
                (c, v, Then::Now)
            }
            Some(Fault::CreateAndHang(d)) => (200, value, Then::Hang(d)),
            _ => (200, value, Then::Now),
        }
    }

    /// Vertex's answers for a base model it does not know (404) or cannot tune (400) or not in
    /// this location (400), and for a parent model that is not a tuned model of this project.
    fn refuse_model(&self, location: &str, job: &Value) -> Option<(u16, Value)> {
        if let Some(model) = job["baseModel"].as_str() {
            if job["preTunedModel"].is_object() {
                return Some(error_answer(
                    400,
                    "INVALID_ARGUMENT",
                    "base_model and pre_tuned_model are mutually exclusive.",
                ));
            }
            if NOT_TUNABLE.contains(&model) {
                return Some(error_answer(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Base model {model} is not supported for tuning."),
                ));
            }
            if !TUNABLE.contains(&model) {
                return Some(error_answer(
                    404,
                    "NOT_FOUND",
                    &format!(
                        "Publisher Model `projects/{PROJECT}/locations/{location}/publishers/google/models/{model}` not found."
                    ),
                ));
            }
            if gemini_3(model) && !GEMINI_3_TUNING_REGIONS.contains(&location) {
                return Some(error_answer(
                    400,
                    "INVALID_ARGUMENT",
                    &format!(
                        "Base model {model} is not supported for tuning in {location}; supported: {}.",
                        GEMINI_3_TUNING_REGIONS.join(", ")
                    ),
                ));
            }
            return None;
        }
        let Some(parent) = job["preTunedModel"]["tunedModelName"].as_str() else {
            return Some(error_answer(
                400,
                "INVALID_ARGUMENT",
                "One of base_model or pre_tuned_model must be set.",
            ));
        };
        let known = self
            .jobs
            .iter()
            .any(|j| j.value["tunedModel"]["model"] == parent)
            || parent == format!("projects/{PROJECT}/locations/{LOCATION}/models/987654321@1");
        // A parent lives in the job's location or its multi-region.
        let at = location_of(parent);
        if known && at != location && jurisdiction(location) != Some(at) {
            return Some(error_answer(
                400,
                "INVALID_ARGUMENT",
                &format!("Model {parent} is not in location {location}."),
            ));
        }
        if !known {
            return Some(error_answer(
                404,
                "NOT_FOUND",
                &format!("Model {parent} not found."),
            ));
        }
        let checkpoint = job["preTunedModel"]["checkpointId"].as_str()?;
        let has = self
            .aliases
            .checkpoints(parent)
            .iter()
            .any(|c| c == checkpoint);
        (!has).then(|| {
            error_answer(
                400,
                "INVALID_ARGUMENT",
                &format!("Checkpoint {checkpoint} is not a checkpoint of {parent}."),
            )
        })
    }

    fn get(&mut self, name: &str) -> (u16, Value) {
        if let Some(code) = self.get_faults.pop_front() {
            return fault_answer(code);
        }
        let Some(job) = self.jobs.iter_mut().find(|j| j.value["name"] == name) else {
            return error_answer(404, "NOT_FOUND", &format!("TuningJob {name} not found."));
        };
        // One step per read; the last step stays.
        let next = if job.history.len() > 1 {
            job.history.pop_front()
        } else {
            job.history.front().cloned()
        };
        if let Some(step) = next {
            job.value["state"] = json!(step.state);
            if let Some(extra) = step.extra.as_object() {
                for (k, v) in extra {
                    job.value[k] = v.clone();
                }
            }
            if step.state == "JOB_STATE_SUCCEEDED" {
                add_checkpoints(&mut job.value, self.default_epochs);
                let at = location_of(name).to_owned();
                let under = self.tuned_under.map_or(at.clone(), str::to_owned);
                for key in ["model", "endpoint"] {
                    if let Some(n) = job.value["tunedModel"][key].as_str()
                        && location_of(n) == at
                        && under != at
                    {
                        job.value["tunedModel"][key] = json!(relocate(n, &under));
                    }
                }
                let checkpoints = job
                    .value
                    .get_mut("tunedModel")
                    .and_then(|t| t.get_mut("checkpoints"))
                    .and_then(Value::as_array_mut);
                for c in checkpoints.into_iter().flatten() {
                    if let Some(n) = c["endpoint"].as_str()
                        && location_of(n) == at
                        && under != at
                    {
                        c["endpoint"] = json!(relocate(n, &under));
                    }
                }
            }
        }
        let value = job.value.clone();
        if let Some(model) = value["tunedModel"]["model"].as_str() {
            let checkpoints: Vec<String> = value["tunedModel"]["checkpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["checkpointId"].as_str().map(str::to_owned))
                .collect();
            self.aliases.add_version(model);
            self.aliases.add_checkpoints(model, &checkpoints);
        }
        (200, value)
    }

    fn list(&mut self, location: &str, query: &str) -> (u16, Value) {
        if let Some(code) = self.list_faults.pop_front() {
            return fault_answer(code);
        }
        let filter = query_param(query, "filter").unwrap_or_default();
        if !filter.is_empty() {
            match self.list_filter {
                ListFilter::Honour | ListFilter::Ignore => {}
                ListFilter::Refuse => {
                    return error_answer(
                        400,
                        "INVALID_ARGUMENT",
                        &format!("Unsupported filter: {filter}"),
                    );
                }
                ListFilter::MatchNothing => return (200, json!({})),
            }
        }
        let wanted = if filter.is_empty() || self.list_filter == ListFilter::Ignore {
            None
        } else {
            // The one form the fake understands: labels.KEY="VALUE".
            let parsed = filter
                .strip_prefix("labels.")
                .and_then(|f| f.split_once('='))
                .and_then(|(k, v)| {
                    Some((
                        k.trim().to_owned(),
                        v.trim().strip_prefix('"')?.strip_suffix('"')?.to_owned(),
                    ))
                });
            match parsed {
                Some(kv) => Some(kv),
                None => {
                    return error_answer(
                        400,
                        "INVALID_ARGUMENT",
                        &format!("Invalid filter: {filter}"),
                    );
                }
            }
        };
        let size = query_param(query, "pageSize")
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(self.page_size)
            .min(self.page_size)
            .max(1);
        let start = match query_param(query, "pageToken") {
            Some(t) => match t
                .strip_prefix("offset-")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => n,
                None => return error_answer(400, "INVALID_ARGUMENT", "Invalid page token."),
            },
            None => 0,
        };
        // Newest first, as Vertex lists.
        let matching: Vec<Value> = self
            .jobs
            .iter()
            .rev()
            .filter(|j| location_of(j.value["name"].as_str().unwrap_or_default()) == location)
            .filter(|j| {
                wanted
                    .as_ref()
                    .is_none_or(|(k, v)| j.value["labels"][k] == v.as_str())
            })
            .map(|j| j.value.clone())
            .collect();
        let page: Vec<Value> = matching.iter().skip(start).take(size).cloned().collect();
        let mut out = json!({});
        if !page.is_empty() {
            out["tuningJobs"] = Value::Array(page);
        }
        if start + size < matching.len() {
            out["nextPageToken"] = json!(format!("offset-{}", start + size));
        }
        (200, out)
    }

    fn cancel(&mut self, name: &str, body: &[u8]) -> (u16, Value) {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        for p in self
            .discovery
            .check("GoogleCloudAiplatformV1CancelTuningJobRequest", &request)
        {
            self.violations.push(format!("cancel body: {p}"));
        }
        let Some(job) = self.jobs.iter_mut().find(|j| j.value["name"] == name) else {
            return error_answer(404, "NOT_FOUND", &format!("TuningJob {name} not found."));
        };
        job.history = VecDeque::from([Step {
            state: "JOB_STATE_CANCELLED",
            extra: json!({ "error": {"code": 1, "message": "CANCELLED"} }),
        }]);
        job.value["state"] = json!("JOB_STATE_CANCELLING");
        (200, json!({}))
    }
}
