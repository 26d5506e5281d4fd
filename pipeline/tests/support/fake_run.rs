//! A loopback fake of the Cloud Run Admin API v2 (`jobs.get`, `jobs.run`, `executions.get`) and
//! of the metadata server's token endpoint, that **executes the real `autotune` binary** for
//! every `jobs.run`: the job's environment, merged with the request's container overrides and
//! the variables Cloud Run injects (`CLOUD_RUN_JOB`, `CLOUD_RUN_EXECUTION`, …). An execution is
//! `EXECUTION_RUNNING` while its process lives, then `EXECUTION_SUCCEEDED` or `EXECUTION_FAILED`
//! by exit code.
//!
//! Every request body and every answer is checked against `run.v2.json` (`Discovery`); problems
//! are collected for the test to assert on. Only bearer tokens the fake issued are accepted.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::discovery::Discovery;

pub(crate) const PROJECT: &str = "test-project";
pub(crate) const REGION: &str = "europe-west1";
pub(crate) const JOB: &str = "autotune-job";
pub(crate) const ACCESS_TOKEN: &str = "ya29.fake-run-token";

/// `projects/{p}/locations/{r}/jobs/{j}`.
pub(crate) fn job_name() -> String {
    format!("projects/{PROJECT}/locations/{REGION}/jobs/{JOB}")
}

/// One execution: one process of the `autotune` binary.
#[derive(Debug)]
pub(crate) struct Execution {
    /// `…/executions/autotune-job-00001`.
    pub name: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub started: Instant,
    pub ended: Option<Instant>,
    pub completed: Option<chrono::DateTime<chrono::Utc>>,
    pub exit_code: Option<i32>,
    /// The container overrides' environment, as sent.
    pub overrides: Vec<(String, String)>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    child: Option<Child>,
}

impl Execution {
    pub(crate) fn running(&self) -> bool {
        self.ended.is_none()
    }

    /// The short name (`autotune-job-00001`), as `CLOUD_RUN_EXECUTION` gives it.
    pub(crate) fn short_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or_default()
    }

    /// What the process printed on stdout, parsed (once it has ended).
    pub(crate) fn output(&self) -> Value {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not one JSON object ({e}): {text}\nstderr: {}",
                self.name,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            )
        })
    }

    fn status(&self) -> &'static str {
        match self.exit_code {
            None => "EXECUTION_RUNNING",
            Some(0) => "EXECUTION_SUCCEEDED",
            Some(_) => "EXECUTION_FAILED",
        }
    }

    /// The `ExecutionReference` of `Job.latestCreatedExecution`.
    fn reference(&self) -> Value {
        let mut r = json!({
            "name": self.name,
            "createTime": self.created.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "completionStatus": self.status(),
        });
        if let Some(done) = self.completed {
            r["completionTime"] = json!(done.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
        r
    }

    /// The `Execution` resource.
    fn resource(&self) -> Value {
        let time = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        let (running, succeeded, failed) = match self.exit_code {
            None => (1, 0, 0),
            Some(0) => (0, 1, 0),
            Some(_) => (0, 0, 1),
        };
        let condition = match self.exit_code {
            None => json!({"type": "Completed", "state": "CONDITION_PENDING"}),
            Some(0) => json!({"type": "Completed", "state": "CONDITION_SUCCEEDED"}),
            Some(_) => json!({"type": "Completed", "state": "CONDITION_FAILED",
                              "executionReason": "NON_ZERO_EXIT_CODE"}),
        };
        let mut e = json!({
            "name": self.name,
            "job": JOB,
            "createTime": time(self.created),
            "startTime": time(self.created),
            "taskCount": 1,
            "parallelism": 1,
            "runningCount": running,
            "succeededCount": succeeded,
            "failedCount": failed,
            "reconciling": self.exit_code.is_none(),
            "conditions": [condition],
        });
        if let Some(done) = self.completed {
            e["completionTime"] = json!(time(done));
        }
        e
    }
}

struct State {
    /// The job's own container environment.
    env: Vec<(String, String)>,
    executions: Vec<Execution>,
    /// Contract violations seen (requests and answers against run.v2.json, auth).
    problems: Vec<String>,
    /// `METHOD path` of every request.
    requests: Vec<String>,
    dir: PathBuf,
}

/// The fake, serving on a loopback port until dropped; dropping it kills running executions.
pub(crate) struct FakeRun {
    pub port: u16,
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakeRun {
    /// Starts the fake for a job whose container has `env`.
    pub(crate) fn start(env: &[(&str, &str)]) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the fake"));
        let port = server.server_addr().to_ip().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(Mutex::new(State {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            executions: Vec::new(),
            problems: Vec::new(),
            requests: Vec::new(),
            dir: dir.path().to_owned(),
        }));
        let doc = Arc::new(Discovery::load("run.v2.json"));
        let mut threads = Vec::new();
        // Two workers: a slow answer never holds up the trigger's next request.
        for _ in 0..2 {
            let (server, state, doc) = (server.clone(), state.clone(), doc.clone());
            threads.push(std::thread::spawn(move || {
                for mut req in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = req.as_reader().read_to_end(&mut body);
                    let (status, answer) = handle(&state, &doc, &req, &body);
                    let resp = tiny_http::Response::from_data(answer.to_string())
                        .with_status_code(status)
                        .with_header(
                            tiny_http::Header::from_bytes("content-type", "application/json")
                                .unwrap(),
                        );
                    let _ = req.respond(resp);
                }
            }));
        }
        // The reaper: marks executions completed when their process exits.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reaper_state, reaper_stop) = (state.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let state = reaper_state;
            while !reaper_stop.load(std::sync::atomic::Ordering::SeqCst) {
                {
                    let mut st = state.lock().unwrap();
                    for e in &mut st.executions {
                        if let Some(child) = e.child.as_mut()
                            && let Ok(Some(status)) = child.try_wait()
                        {
                            e.exit_code = Some(status.code().unwrap_or(-1));
                            e.ended = Some(Instant::now());
                            e.completed = Some(chrono::Utc::now());
                            e.child = None;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
        FakeRun {
            port,
            state,
            server,
            stop,
            threads,
            _dir: dir,
        }
    }

    pub(crate) fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `host:port`, for GCE_METADATA_HOST.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Sets a variable of the job's container environment (as `gcloud run jobs update`).
    pub(crate) fn set_env(&self, name: &str, value: &str) {
        let mut st = self.state();
        st.env.retain(|(k, _)| k != name);
        st.env.push((name.to_owned(), value.to_owned()));
    }

    /// Calls `jobs.run` as Cloud Scheduler does: an empty `RunJobRequest` with an OAuth token.
    pub(crate) fn scheduled_run(&self) -> (u16, Value) {
        let (status, body) = super::request(
            "POST",
            &self.host(),
            &format!("/v2/{}:run", job_name()),
            &[
                ("authorization", &format!("Bearer {ACCESS_TOKEN}")),
                ("content-type", "application/json"),
                ("user-agent", "Google-Cloud-Scheduler"),
            ],
            b"{}",
        );
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// How many executions were started, and how many still run.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = self.state();
        (
            st.executions.len(),
            st.executions.iter().filter(|e| e.running()).count(),
        )
    }

    /// Runs `f` on the executions.
    pub(crate) fn with_executions<T>(&self, f: impl FnOnce(&[Execution]) -> T) -> T {
        f(&self.state().executions)
    }

    /// Waits until no execution runs, at most `limit`.
    pub(crate) fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.counts().1 > 0 {
            assert!(
                Instant::now() < deadline,
                "executions still running after {limit:?}: {}",
                self.with_executions(|e| e
                    .iter()
                    .filter(|e| e.running())
                    .map(|e| e.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        self.state().problems.clone()
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }
}

impl Drop for FakeRun {
    fn drop(&mut self) {
        {
            let mut st = self.state();
            for e in &mut st.executions {
                if let Some(mut c) = e.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.server.unblock();
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn error(code: u16, status: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

fn handle(
    state: &Mutex<State>,
    doc: &Discovery,
    req: &tiny_http::Request,
    body: &[u8],
) -> (u16, Value) {
    let path = req.url().to_owned();
    let method = req.method().to_string();
    let header = |name: &str| {
        req.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    state
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}"));
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if header("metadata-flavor").as_deref() != Some("Google") {
            return error(403, "FORBIDDEN", "missing Metadata-Flavor: Google");
        }
        return (
            200,
            json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
        );
    }
    if !path.starts_with("/v2/") {
        return error(404, "NOT_FOUND", "no such path");
    }
    if header("authorization").as_deref() != Some(&format!("Bearer {ACCESS_TOKEN}")) {
        state
            .lock()
            .unwrap()
            .problems
            .push(format!("{method} {path}: no valid bearer token"));
        return error(401, "UNAUTHENTICATED", "bad access token");
    }
    let job = format!("/v2/{}", job_name());
    let answer = if method == "GET" && path == job {
        let st = state.lock().unwrap();
        let mut j =
            json!({"name": job_name(), "uid": "fake-uid", "executionCount": st.executions.len()});
        if let Some(last) = st.executions.last() {
            j["latestCreatedExecution"] = last.reference();
        }
        (200, j, "GoogleCloudRunV2Job")
    } else if method == "POST" && path == format!("{job}:run") {
        let request: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return error(400, "INVALID_ARGUMENT", &format!("body: {e}")),
            }
        };
        let problems = doc.check("GoogleCloudRunV2RunJobRequest", &request);
        if !problems.is_empty() {
            state
                .lock()
                .unwrap()
                .problems
                .extend(problems.iter().map(|p| format!("RunJobRequest {p}")));
            return error(400, "INVALID_ARGUMENT", &problems.join("; "));
        }
        let execution = start_execution(state, &request);
        (
            200,
            json!({
                "name": format!("projects/{PROJECT}/locations/{REGION}/operations/op-{}", uuid::Uuid::new_v4().simple()),
                "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", "name": execution,
                             "reconciling": true,
                             "conditions": [{"type": "Completed", "state": "CONDITION_PENDING"}]},
                "done": false,
            }),
            "GoogleLongrunningOperation",
        )
    } else if method == "GET" && path.starts_with(&format!("{job}/executions/")) {
        let st = state.lock().unwrap();
        let name = path.trim_start_matches("/v2/");
        match st.executions.iter().find(|e| e.name == name) {
            Some(e) => (200, e.resource(), "GoogleCloudRunV2Execution"),
            None => return error(404, "NOT_FOUND", "no such execution"),
        }
    } else {
        return error(404, "NOT_FOUND", "no such resource");
    };
    let (status, value, schema) = answer;
    let problems = doc.check(schema, &value);
    if !problems.is_empty() {
        state
            .lock()
            .unwrap()
            .problems
            .extend(problems.iter().map(|p| format!("{schema} answer {p}")));
    }
    (status, value)
}

/// Starts `autotune run` with the job's environment and the request's overrides.
fn start_execution(state: &Mutex<State>, request: &Value) -> String {
    let mut st = state.lock().unwrap();
    let n = st.executions.len() + 1;
    let short = format!("{JOB}-{n:05}");
    let name = format!("{}/executions/{short}", job_name());
    let overrides: Vec<(String, String)> = request["overrides"]["containerOverrides"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    let stdout = st.dir.join(format!("{short}.out"));
    let stderr = st.dir.join(format!("{short}.err"));
    let mut cmd = super::autotune();
    cmd.arg("run")
        .envs(st.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // Overrides are merged into the job's environment (GOOGLE-APIS.md §3.1).
        .envs(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("CLOUD_RUN_JOB", JOB)
        .env("CLOUD_RUN_EXECUTION", &short)
        .env("CLOUD_RUN_TASK_INDEX", "0")
        .env("CLOUD_RUN_TASK_ATTEMPT", "0")
        .env("CLOUD_RUN_TASK_COUNT", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let child = cmd.spawn().expect("start the autotune binary");
    st.executions.push(Execution {
        name: name.clone(),
        created: chrono::Utc::now(),
        started: Instant::now(),
        ended: None,
        completed: None,
        exit_code: None,
        overrides,
        stdout,
        stderr,
        child: Some(child),
    });
    name
}
