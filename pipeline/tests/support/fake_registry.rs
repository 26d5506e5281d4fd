//! A loopback fake of the Vertex AI Model Registry's version aliases:
//! `projects.locations.models.get` (`…/models/M`, `…/models/M@VERSION_ID`, `…/models/M@ALIAS`)
//! and `models.mergeVersionAliases` (`POST …/models/M@VERSION_ID:mergeVersionAliases`).
//!
//! Aliases behave as Google documents them (aiplatform.v1 and the model-alias page): unique
//! within a Model, adding one moves it off the version that held it, `-alias` removes it,
//! adding and removing the same alias in one request cancel out, `default` always stays on
//! exactly one version, alias names match `[a-z][a-z0-9-]{0,126}[a-z0-9]`, and merging needs
//! an explicit version ID. Request bodies are checked against
//! `GoogleCloudAiplatformV1MergeVersionAliasesRequest` and every answer against
//! `GoogleCloudAiplatformV1Model` (aiplatform.v1.json). Only the loopback bearer token is
//! accepted; the next calls can be scripted to fail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

use super::discovery::Discovery;
use super::loopback::{Loopback, Received, Reply};

pub(crate) const PROJECT: &str = "test-project";
pub(crate) const LOCATION: &str = "us-central1";

struct Version {
    id: String,
    aliases: Vec<String>,
    /// The checkpoints its tuning job kept, and the default one (`models.patch`).
    checkpoints: Vec<String>,
    default_checkpoint: Option<String>,
}

struct Model {
    name: String,
    versions: Vec<Version>,
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    pub status: u16,
}

/// The Models and their version aliases, with the two routes: shared by this fake and the
/// fake Vertex AI (`fake_vertex.rs`), which registers the models its tuning jobs make.
#[derive(Default)]
pub(crate) struct Aliases {
    models: Vec<Model>,
}

struct State {
    discovery: Discovery,
    aliases: Aliases,
    faults: VecDeque<Reply>,
    violations: Vec<String>,
    calls: Vec<Call>,
}

pub(crate) struct FakeRegistry {
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: Loopback,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeRegistry {
    pub(crate) fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            discovery: Discovery::load("aiplatform.v1.json"),
            aliases: Aliases::default(),
            faults: VecDeque::new(),
            violations: Vec::new(),
            calls: Vec::new(),
        }));
        let shared = state.clone();
        let server = Loopback::start(move |r| {
            let mut s = lock(&shared);
            let reply = s.route(&r);
            s.calls.push(Call {
                method: r.method.clone(),
                path: r.path.clone(),
                body: serde_json::from_slice(&r.body).ok(),
                status: reply.status,
            });
            reply
        });
        Self {
            url: server.url.clone(),
            state,
            _server: server,
        }
    }

    /// Adds the Model `id` with versions 1..=`versions` (version 1 holds `default`); returns
    /// its name.
    pub(crate) fn add_model(&self, id: &str, versions: usize) -> String {
        let name = format!("projects/{PROJECT}/locations/{LOCATION}/models/{id}");
        let mut s = lock(&self.state);
        for v in 1..=versions {
            s.aliases.add_version(&format!("{name}@{v}"));
        }
        name
    }

    /// The aliases of the version `model@version`.
    pub(crate) fn aliases(&self, version: &str) -> Vec<String> {
        let (model, id) = version.split_once('@').expect("model@version");
        let s = lock(&self.state);
        let m = s
            .aliases
            .models
            .iter()
            .find(|m| m.name == model)
            .expect("known model");
        let v = m
            .versions
            .iter()
            .find(|v| v.id == id)
            .expect("known version");
        let mut a = v.aliases.clone();
        a.sort();
        a
    }

    /// Every `model@version` that carries `alias`, across all Models.
    pub(crate) fn holders(&self, alias: &str) -> Vec<String> {
        lock(&self.state).aliases.holders(alias)
    }

    /// Puts `alias` on `model@version` by hand (as someone in the console would).
    pub(crate) fn set_alias(&self, version: &str, alias: &str) {
        let (model, id) = version.split_once('@').expect("model@version");
        let mut s = lock(&self.state);
        let m = s
            .aliases
            .models
            .iter_mut()
            .find(|m| m.name == model)
            .expect("known model");
        for v in &mut m.versions {
            v.aliases.retain(|a| a != alias);
            if v.id == id {
                v.aliases.push(alias.to_owned());
            }
        }
    }

    /// The next calls are answered with these statuses (a Google error each) instead.
    pub(crate) fn fail_next(&self, statuses: impl IntoIterator<Item = u16>) {
        lock(&self.state).faults.extend(
            statuses
                .into_iter()
                .map(|s| Reply::google_error(s, "The service is currently unavailable.")),
        );
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// Schema and rule violations of request bodies and of the fake's own answers.
    pub(crate) fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }
}

fn valid_alias(a: &str) -> bool {
    let b = a.as_bytes();
    (2..=128).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

impl State {
    fn route(&mut self, r: &Received) -> Reply {
        if !r.authorised() {
            return Reply::google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            );
        }
        if let Some(fault) = self.faults.pop_front() {
            return fault;
        }
        self.aliases.route(
            &self.discovery,
            &mut self.violations,
            &r.method,
            &r.path,
            &r.body,
        )
    }
}

impl Aliases {
    /// Adds the version `model@id` (a Model's first version holds `default`).
    pub(crate) fn add_version(&mut self, version: &str) {
        let Some((model, id)) = version.split_once('@') else {
            return;
        };
        let at = if let Some(at) = self.models.iter().position(|m| m.name == model) {
            at
        } else {
            self.models.push(Model {
                name: model.to_owned(),
                versions: Vec::new(),
            });
            self.models.len() - 1
        };
        let m = &mut self.models[at];
        if m.versions.iter().any(|v| v.id == id) {
            return;
        }
        let aliases = if m.versions.is_empty() {
            vec!["default".to_owned()]
        } else {
            Vec::new()
        };
        m.versions.push(Version {
            id: id.to_owned(),
            aliases,
            checkpoints: Vec::new(),
            default_checkpoint: None,
        });
    }

    fn version_mut(&mut self, version: &str) -> Option<&mut Version> {
        let (model, id) = version.split_once('@')?;
        self.models
            .iter_mut()
            .find(|m| m.name == model)?
            .versions
            .iter_mut()
            .find(|v| v.id == id)
    }

    /// Records the checkpoints of `model@id` (a succeeded job's), the last the default.
    pub(crate) fn add_checkpoints(&mut self, version: &str, checkpoints: &[String]) {
        if let Some(v) = self.version_mut(version)
            && v.checkpoints.is_empty()
        {
            v.checkpoints = checkpoints.to_vec();
            v.default_checkpoint = checkpoints.last().cloned();
        }
    }

    fn version(&self, version: &str) -> Option<&Version> {
        let (model, id) = version.split_once('@')?;
        self.models
            .iter()
            .find(|m| m.name == model)?
            .versions
            .iter()
            .find(|v| v.id == id)
    }

    /// The checkpoints of `model@id`.
    pub(crate) fn checkpoints(&self, version: &str) -> Vec<String> {
        self.version(version)
            .map(|v| v.checkpoints.clone())
            .unwrap_or_default()
    }

    /// The default checkpoint of `model@id`.
    pub(crate) fn default_checkpoint(&self, version: &str) -> Option<String> {
        self.version(version)?.default_checkpoint.clone()
    }

    /// `models.patch` of a version (`PATCH …/models/M@V?updateMask=…`): the body checked
    /// against `GoogleCloudAiplatformV1Model`, the mask required and naming only fields the
    /// body sets; `defaultCheckpointId` must be a checkpoint of the version. Only
    /// `defaultCheckpointId` is applied (what autotune patches).
    pub(crate) fn patch(
        &mut self,
        discovery: &Discovery,
        violations: &mut Vec<String>,
        path: &str,
        mask: &str,
        body: &[u8],
    ) -> Reply {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let problems = discovery.check("GoogleCloudAiplatformV1Model", &body);
        if !problems.is_empty() {
            violations.extend(problems.iter().map(|p| format!("patch body: {p}")));
            return Reply::google_error(400, &problems.join("; "));
        }
        if mask.is_empty() {
            violations.push(format!("models.patch of {path} without updateMask"));
            return Reply::google_error(400, "update_mask is required.");
        }
        for field in mask.split(',') {
            if body.get(field.trim()).is_none() {
                violations.push(format!(
                    "updateMask names {field}, which the body does not set"
                ));
                return Reply::google_error(400, &format!("Invalid update mask field {field}."));
            }
        }
        let name = path.strip_prefix("/v1/").unwrap_or(path);
        let Some((model, id)) = name.split_once('@') else {
            violations.push(format!("models.patch of {name} without a version"));
            return Reply::google_error(400, "A model version is required.");
        };
        let Some(v) = self.version_mut(name) else {
            return Reply::google_error(404, &format!("Model {name} is not found."));
        };
        if let Some(c) = body["defaultCheckpointId"].as_str() {
            if !v.checkpoints.iter().any(|x| x == c) {
                return Reply::google_error(
                    400,
                    &format!("Checkpoint {c} is not a checkpoint of {name}."),
                );
            }
            v.default_checkpoint = Some(c.to_owned());
        }
        let (model, id) = (model.to_owned(), id.to_owned());
        let m = self
            .models
            .iter()
            .find(|m| m.name == model)
            .expect("found above");
        let v = m.versions.iter().find(|v| v.id == id).expect("found above");
        let answer = Self::model_json(m, v);
        let problems = discovery.check("GoogleCloudAiplatformV1Model", &answer);
        violations.extend(problems.into_iter().map(|p| format!("answer: {p}")));
        Reply::json(200, answer)
    }

    /// Every `model@version` that carries `alias`.
    pub(crate) fn holders(&self, alias: &str) -> Vec<String> {
        self.models
            .iter()
            .flat_map(|m| {
                m.versions
                    .iter()
                    .filter(|v| v.aliases.iter().any(|a| a == alias))
                    .map(|v| format!("{}@{}", m.name, v.id))
            })
            .collect()
    }

    /// Whether `path` is one of these routes (`/v1/projects/*/locations/*/models/…`).
    pub(crate) fn handles(path: &str) -> bool {
        path.strip_prefix("/v1/")
            .map(|rest| rest.split(['@', ':']).next().unwrap_or(rest))
            .is_some_and(|model| {
                let parts: Vec<&str> = model.split('/').collect();
                matches!(parts[..], ["projects", _, "locations", _, "models", _])
            })
    }

    /// `models.get` and `models.mergeVersionAliases`, bodies and answers checked against the
    /// discovery document.
    pub(crate) fn route(
        &mut self,
        discovery: &Discovery,
        violations: &mut Vec<String>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Reply {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Reply::google_error(404, "no such route");
        };
        let (name, merge) = match rest.strip_suffix(":mergeVersionAliases") {
            Some(n) => (n, true),
            None => (rest, false),
        };
        let (model, version) = match name.split_once('@') {
            Some((m, v)) => (m, Some(v)),
            None => (name, None),
        };
        let parts: Vec<&str> = model.split('/').collect();
        if !matches!(parts[..], ["projects", _, "locations", _, "models", _]) {
            return Reply::google_error(404, &format!("no route for {name}"));
        }
        let reply = match (method, merge) {
            ("GET", false) => self.get(model, version),
            ("POST", true) => self.merge(discovery, violations, model, version, body),
            _ => Reply::google_error(404, &format!("no route {method} {path}")),
        };
        if reply.status == 200 {
            let problems = discovery.check("GoogleCloudAiplatformV1Model", &reply.body);
            violations.extend(problems.into_iter().map(|p| format!("answer: {p}")));
        }
        reply
    }

    fn model_json(model: &Model, v: &Version) -> Value {
        let mut m = json!({
            "name": model.name,
            "displayName": "autotune-tuned-model",
            "versionId": v.id,
            "versionAliases": v.aliases,
            "versionCreateTime": "2026-11-24T10:41:00Z",
            "versionUpdateTime": "2026-11-24T10:41:00Z",
            "createTime": "2026-11-01T10:41:00Z",
            "updateTime": "2026-11-24T10:41:00Z",
        });
        if let Some(c) = &v.default_checkpoint {
            m["defaultCheckpointId"] = json!(c);
        }
        m
    }

    fn find(&mut self, model: &str) -> Option<&mut Model> {
        self.models.iter_mut().find(|m| m.name == model)
    }

    fn get(&self, model: &str, version: Option<&str>) -> Reply {
        let Some(m) = self.models.iter().find(|m| m.name == model) else {
            return Reply::google_error(404, &format!("Model {model} is not found."));
        };
        let wanted = version.unwrap_or("default");
        let found = if wanted.bytes().all(|b| b.is_ascii_digit()) {
            m.versions.iter().find(|v| v.id == wanted)
        } else {
            m.versions
                .iter()
                .find(|v| v.aliases.iter().any(|a| a == wanted))
        };
        match found {
            Some(v) => Reply::json(200, Self::model_json(m, v)),
            None => Reply::google_error(404, &format!("Model {model}@{wanted} is not found.")),
        }
    }

    fn merge(
        &mut self,
        discovery: &Discovery,
        violations: &mut Vec<String>,
        model: &str,
        version: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let problems = discovery.check("GoogleCloudAiplatformV1MergeVersionAliasesRequest", &body);
        if !problems.is_empty() {
            violations.extend(problems.iter().cloned());
            return Reply::google_error(400, &problems.join("; "));
        }
        let Some(id) = version.filter(|v| v.bytes().all(|b| b.is_ascii_digit())) else {
            violations.push(format!("merge on {model} without an explicit version ID"));
            return Reply::google_error(
                400,
                "The model version to merge aliases must include a version ID.",
            );
        };
        let aliases: Vec<String> = body["versionAliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        if aliases.is_empty() {
            violations.push("versionAliases is empty".into());
            return Reply::google_error(400, "versionAliases is required.");
        }
        for a in &aliases {
            if !valid_alias(a.trim_start_matches('-')) {
                violations.push(format!("bad alias {a:?}"));
                return Reply::google_error(400, &format!("Invalid version alias {a}."));
            }
            if a == "-default" {
                return Reply::google_error(400, "The default version alias cannot be removed.");
            }
        }
        let Some(m) = self.find(model) else {
            return Reply::google_error(404, &format!("Model {model} is not found."));
        };
        let Some(at) = m.versions.iter().position(|v| v.id == id) else {
            return Reply::google_error(404, &format!("Model {model}@{id} is not found."));
        };
        for a in &aliases {
            // Adding and removing the same alias in one request cancel out.
            let (name, add) = match a.strip_prefix('-') {
                Some(n) => (n, false),
                None => (a.as_str(), true),
            };
            let opposite = if add {
                format!("-{name}")
            } else {
                name.to_owned()
            };
            if aliases.contains(&opposite) {
                continue;
            }
            if add {
                for v in &mut m.versions {
                    v.aliases.retain(|x| x != name);
                }
                m.versions[at].aliases.push(name.to_owned());
            } else {
                m.versions[at].aliases.retain(|x| x != name);
            }
        }
        let m = &*m;
        Reply::json(200, Self::model_json(m, &m.versions[at]))
    }
}
