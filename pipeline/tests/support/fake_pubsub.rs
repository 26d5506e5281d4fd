//! A loopback fake of Pub/Sub `projects.topics.publish` (`POST /v1/{topic}:publish`).
//!
//! It checks every request body against `PublishRequest` of `pubsub.v1.json` and its own
//! answers against `PublishResponse`, and what the discovery document says in prose: at least
//! one message, each with non-empty `data` (base64) or an attribute, no `messageId` or
//! `publishTime` from the publisher, attribute keys not starting with `goog`. It accepts only
//! the loopback bearer token, knows only the topics it is given (others are 404), records the
//! messages it published, and answers the next requests with scripted statuses when told.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use serde_json::{Value, json};

use super::discovery::Discovery;
use super::loopback::{Loopback, Received, Reply};

/// One published message, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub topic: String,
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub id: String,
}

impl Message {
    /// `data` as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.data).expect("the message data is JSON")
    }
}

struct State {
    discovery: Discovery,
    topics: Vec<String>,
    messages: Vec<Message>,
    faults: VecDeque<Reply>,
    violations: Vec<String>,
    attempts: usize,
    next_id: u64,
}

pub(crate) struct FakePubSub {
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: Loopback,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakePubSub {
    /// A fake that knows `topics` (`projects/p/topics/t`).
    pub(crate) fn start(topics: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(State {
            discovery: Discovery::load("pubsub.v1.json"),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            messages: Vec::new(),
            faults: VecDeque::new(),
            violations: Vec::new(),
            attempts: 0,
            next_id: 7_000_000_000_000_000,
        }));
        let shared = state.clone();
        let server = Loopback::start(move |r| lock(&shared).route(&r));
        Self {
            url: server.url.clone(),
            state,
            _server: server,
        }
    }

    /// The next publishes are answered with these statuses (a Google error each) instead.
    pub(crate) fn fail_next(&self, statuses: impl IntoIterator<Item = u16>) {
        lock(&self.state).faults.extend(
            statuses
                .into_iter()
                .map(|s| Reply::google_error(s, "The service was unable to fulfill your request.")),
        );
    }

    /// Every publish from now on hangs (a Pub/Sub that accepts connections and never answers).
    pub(crate) fn hang(&self) {
        let mut s = lock(&self.state);
        s.faults.clear();
        s.faults.extend(std::iter::repeat_n(Reply::hang(), 1000));
    }

    pub(crate) fn messages(&self) -> Vec<Message> {
        lock(&self.state).messages.clone()
    }

    /// Publish requests received, answered or not.
    pub(crate) fn attempts(&self) -> usize {
        lock(&self.state).attempts
    }

    /// Schema and rule violations of request bodies and of the fake's own answers.
    pub(crate) fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }
}

impl State {
    fn route(&mut self, r: &Received) -> Reply {
        let Some(topic) = r
            .path
            .strip_prefix("/v1/")
            .and_then(|p| p.strip_suffix(":publish"))
        else {
            return Reply::google_error(404, &format!("no route {} {}", r.method, r.path));
        };
        if r.method != "POST" {
            return Reply::google_error(404, "topics.publish is POST");
        }
        self.attempts += 1;
        if !r.authorised() {
            return Reply::google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            );
        }
        if let Some(fault) = self.faults.pop_front() {
            return fault;
        }
        if !self.topics.iter().any(|t| t == topic) {
            return Reply::google_error(404, &format!("Resource not found (resource={topic})."));
        }
        let body: Value = match serde_json::from_slice(&r.body) {
            Ok(v) => v,
            Err(e) => {
                self.violations
                    .push(format!("publish body is not JSON: {e}"));
                return Reply::google_error(400, "Invalid JSON payload received.");
            }
        };
        let problems = self.check(&body);
        if !problems.is_empty() {
            self.violations.extend(problems.iter().cloned());
            return Reply::google_error(400, &problems.join("; "));
        }
        let mut ids = Vec::new();
        for m in body["messages"].as_array().into_iter().flatten() {
            let data = base64::engine::general_purpose::STANDARD
                .decode(m["data"].as_str().unwrap_or_default())
                .unwrap_or_default();
            let attributes = m["attributes"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            self.next_id += 1;
            let message_id = self.next_id.to_string();
            ids.push(message_id.clone());
            self.messages.push(Message {
                topic: topic.to_owned(),
                data,
                attributes,
                id: message_id,
            });
        }
        let answer = json!({ "messageIds": ids });
        let problems = self.discovery.check("PublishResponse", &answer);
        self.violations
            .extend(problems.into_iter().map(|p| format!("answer: {p}")));
        Reply::json(200, answer)
    }

    fn check(&self, body: &Value) -> Vec<String> {
        let mut problems = self.discovery.check("PublishRequest", body);
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            problems.push("$.messages: at least one message is required".into());
        }
        for (i, m) in messages.iter().enumerate() {
            let data = m["data"].as_str().unwrap_or_default();
            let attributes = m["attributes"].as_object().cloned().unwrap_or_default();
            if data.is_empty() && attributes.is_empty() {
                problems.push(format!(
                    "$.messages[{i}]: needs non-empty data or an attribute"
                ));
            }
            if base64::engine::general_purpose::STANDARD
                .decode(data)
                .is_err()
            {
                problems.push(format!("$.messages[{i}].data: not base64"));
            }
            for field in ["messageId", "publishTime"] {
                if m.get(field).is_some() {
                    problems.push(format!(
                        "$.messages[{i}].{field}: must not be set by the publisher"
                    ));
                }
            }
            for (k, v) in &attributes {
                if k.starts_with("goog") || k.is_empty() || k.len() > 256 {
                    problems.push(format!(
                        "$.messages[{i}].attributes.{k}: reserved or bad key"
                    ));
                }
                if v.as_str().is_some_and(|s| s.len() > 1024) {
                    problems.push(format!(
                        "$.messages[{i}].attributes.{k}: longer than 1024 bytes"
                    ));
                }
            }
        }
        problems
    }
}
