//! The fake's inference and metrics routes: `endpoints.generateContent`,
//! `publishers.models.generateContent` and `projects.locations.evaluateInstances`.
//!
//! Every request body is checked against `GenerateContentRequest` / `EvaluateInstancesRequest`
//! and every answer against `GenerateContentResponse` / `EvaluateInstancesResponse`. A model
//! answers only where Google serves it (the placement rules of `fake_vertex.rs`: a Gemini 3
//! base model on global and multi-region endpoints, a model tuned from Gemini 3 on its
//! multi-region endpoint), and only once the test serves it ([`FakeVertex::serve_model`],
//! by its name in any location) with an answer function keyed by the row's prompt text (the
//! last user turn); per model the test can queue 429/503
//! storms, a run of 404s (a candidate endpoint still deploying), a refusal after k answers, and
//! a delay per call (on the fake's real clock). Calls are counted per model, and the largest
//! number of `generateContent` calls in flight at once is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    Answer, FakeVertex, LOCATION, PROJECT, Recorded, State, answer, error_answer, fault_answer,
    gemini_3, jurisdiction, location_of,
};

/// What a served model answers to one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FakeReply {
    /// A candidate with this text, finished with STOP.
    Text(String),
    /// A candidate withheld with this `finishReason` (SAFETY, RECITATION, …) and no content.
    Blocked(&'static str),
    /// No candidate; `promptFeedback.blockReason` is this.
    PromptBlocked(&'static str),
    /// A candidate without text (MAX_TOKENS spent on nothing).
    Empty,
}

type AnswerFn = Arc<dyn Fn(&str) -> FakeReply + Send + Sync>;

struct Script {
    answer: AnswerFn,
    faults: VecDeque<u16>,
    /// 404s still to answer before the model is found (`usize::MAX`: for ever).
    not_found: usize,
    delay: Duration,
    /// Answers given before every further call is refused with 400.
    refuse_after: Option<usize>,
}

/// The inference side of the fake's state.
#[derive(Default)]
pub(super) struct Inference {
    scripts: HashMap<String, Script>,
    /// Requests per model (every status).
    calls: HashMap<String, usize>,
    /// Prompts answered with 200, per model, in order.
    answered: HashMap<String, Vec<String>>,
    in_flight: usize,
    max_in_flight: usize,
    evaluate_calls: usize,
    /// Largest `instances` list `evaluateInstances` takes (0: no limit).
    max_instances: usize,
}

impl FakeVertex {
    fn inference<T>(&self, f: impl FnOnce(&mut Inference) -> T) -> T {
        f(&mut self.state().inference)
    }

    fn script<T>(&self, model: &str, f: impl FnOnce(&mut Script) -> T) -> T {
        let model = key_of(model);
        self.inference(|i| {
            f(i.scripts
                .get_mut(&model)
                .unwrap_or_else(|| panic!("the fake does not serve {model}; serve_model first")))
        })
    }

    /// Serves `model` (`projects/…/endpoints/…` or `projects/…/publishers/google/models/…`),
    /// answering each prompt (the text of the last user turn) with `answer`.
    pub(crate) fn serve_model(
        &self,
        model: &str,
        answer: impl Fn(&str) -> FakeReply + Send + Sync + 'static,
    ) {
        self.inference(|i| {
            i.scripts.insert(
                key_of(model),
                Script {
                    answer: Arc::new(answer),
                    faults: VecDeque::new(),
                    not_found: 0,
                    delay: Duration::ZERO,
                    refuse_after: None,
                },
            );
        });
    }

    /// Statuses (429, 503, 400, …) answered to the next calls of `model`.
    pub(crate) fn fail_generate(&self, model: &str, statuses: impl IntoIterator<Item = u16>) {
        self.script(model, |s| s.faults.extend(statuses));
    }

    /// The next `calls` calls of `model` answer 404 (`usize::MAX`: for ever).
    pub(crate) fn not_found_for(&self, model: &str, calls: usize) {
        self.script(model, |s| s.not_found = calls);
    }

    /// Every call of `model` takes `delay` (the fake's real clock).
    pub(crate) fn set_delay(&self, model: &str, delay: Duration) {
        self.script(model, |s| s.delay = delay);
    }

    /// After `answers` answers, `model` refuses every call with 400 (`None`: never).
    pub(crate) fn refuse_after(&self, model: &str, answers: Option<usize>) {
        self.script(model, |s| s.refuse_after = answers);
    }

    /// `generateContent` requests `model` received (every status).
    pub(crate) fn generate_calls(&self, model: &str) -> usize {
        self.inference(|i| i.calls.get(&key_of(model)).copied().unwrap_or(0))
    }

    /// The prompts `model` answered with 200, in order.
    pub(crate) fn answered(&self, model: &str) -> Vec<String> {
        self.inference(|i| i.answered.get(&key_of(model)).cloned().unwrap_or_default())
    }

    /// The most `generateContent` calls in flight at once, over all models.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.inference(|i| i.max_in_flight)
    }

    pub(crate) fn evaluate_calls(&self) -> usize {
        self.inference(|i| i.evaluate_calls)
    }

    /// `evaluateInstances` refuses more than `n` instances in one request with 400.
    pub(crate) fn set_max_instances(&self, n: usize) {
        self.inference(|i| i.max_instances = n);
    }
}

/// The endpoint name of a tuned model in the fake's project.
pub(crate) fn endpoint(id: &str) -> String {
    format!("projects/{PROJECT}/locations/{LOCATION}/endpoints/{id}")
}

/// The publisher path of a base model in the fake's project.
pub(crate) fn publisher_model(model: &str) -> String {
    publisher_model_in(model, LOCATION)
}

/// The publisher path of a base model in `location`.
pub(crate) fn publisher_model_in(model: &str, location: &str) -> String {
    format!("projects/{PROJECT}/locations/{location}/publishers/google/models/{model}")
}

/// A model's name without its location: scripts and counts are kept by it, so a test serves
/// a model once and the fake's placement rules decide where it answers.
fn key_of(name: &str) -> String {
    let at = location_of(name);
    if at.is_empty() {
        name.to_owned()
    } else {
        name.replacen(&format!("/locations/{at}/"), "/", 1)
    }
}

/// Whether this request is one of these routes.
pub(super) fn handles(method: &str, path: &str) -> bool {
    method == "POST" && (path.ends_with(":generateContent") || path.ends_with(":evaluateInstances"))
}

/// The text of the last user turn.
fn prompt_of(request: &Value) -> String {
    request["contents"]
        .as_array()
        .and_then(|c| c.iter().rev().find(|c| c["role"] != "model"))
        .and_then(|c| c["parts"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect()
}

fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| *k != "role")
            .map(|(_, v)| words(v))
            .sum(),
        _ => 0,
    }
}

pub(super) async fn handle(
    state: Arc<Mutex<State>>,
    method: &str,
    path: &str,
    query: &str,
    headers: &hyper::HeaderMap,
    body: &Bytes,
) -> Answer {
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let generate = path.ends_with(":generateContent");
    let first = {
        let mut s = lock();
        let early = s.inference_start(path, headers, body, generate);
        if early.is_none() && generate {
            let i = &mut s.inference;
            i.in_flight += 1;
            i.max_in_flight = i.max_in_flight.max(i.in_flight);
        }
        early
    };
    let (status, value) = match first {
        Some(done) => done,
        None if generate => {
            let delay = {
                let s = lock();
                let model = key_of(model_of(path));
                s.inference
                    .scripts
                    .get(&model)
                    .map_or(Duration::ZERO, |x| x.delay)
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut s = lock();
            s.inference.in_flight -= 1;
            s.generate(path, body)
        }
        None => lock().evaluate(body),
    };
    let mut s = lock();
    s.requests.push(Recorded {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        body: serde_json::from_slice(body).ok(),
        status,
    });
    drop(s);
    answer(status, &value)
}

fn model_of(path: &str) -> &str {
    path.strip_prefix("/v1/")
        .and_then(|p| p.strip_suffix(":generateContent"))
        .unwrap_or(path)
}

impl State {
    /// Authorisation and the request's schema; `Some` is the final answer.
    fn inference_start(
        &mut self,
        path: &str,
        headers: &hyper::HeaderMap,
        body: &[u8],
        generate: bool,
    ) -> Option<(u16, Value)> {
        if !self.authorised(headers) {
            return Some(error_answer(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            ));
        }
        let schema = if generate {
            "GoogleCloudAiplatformV1GenerateContentRequest"
        } else {
            "GoogleCloudAiplatformV1EvaluateInstancesRequest"
        };
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return Some(error_answer(
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received.",
            ));
        };
        let problems = self.discovery.check(schema, &request);
        if !problems.is_empty() {
            self.violations
                .extend(problems.iter().map(|p| format!("{path} body: {p}")));
            return Some(error_answer(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {}", problems.join("; ")),
            ));
        }
        if generate {
            let model = key_of(model_of(path));
            *self.inference.calls.entry(model).or_default() += 1;
        }
        None
    }

    fn check_answer(&mut self, schema: &str, path: &str, value: &Value) {
        for v in self.discovery.check(schema, value) {
            self.violations.push(format!("fake answer to {path}: {v}"));
        }
    }

    /// Why Google would not find `name` where it is called: a Gemini 3 base model on a
    /// region, a Gemini 2 one on a multi-region, a model tuned from Gemini 3 outside its
    /// multi-region endpoint.
    fn misplaced(&self, name: &str) -> Option<String> {
        let at = location_of(name);
        if let Some((_, id)) = name.split_once("/publishers/google/models/") {
            let multi = at == "us" || at == "eu";
            let served = if gemini_3(id) {
                multi || at == "global"
            } else {
                !multi
            };
            return (!served).then(|| format!("Publisher model `{name}` not found."));
        }
        let (_, id) = name.split_once("/endpoints/")?;
        let job = self.jobs.iter().find(|j| {
            j.value["tunedModel"]["endpoint"]
                .as_str()
                .is_some_and(|e| e.rsplit('/').next() == Some(id))
        })?;
        let base = job.value["baseModel"]
            .as_str()
            .or_else(|| job.value["preTunedModel"]["baseModel"].as_str())
            .unwrap_or_default();
        if !gemini_3(base) {
            return None;
        }
        let tuned_in = location_of(job.value["name"].as_str().unwrap_or_default());
        (jurisdiction(tuned_in) != Some(at)).then(|| format!("Endpoint `{name}` not found."))
    }

    fn generate(&mut self, path: &str, body: &[u8]) -> (u16, Value) {
        let name = model_of(path).to_owned();
        if let Some(message) = self.misplaced(&name) {
            return error_answer(404, "NOT_FOUND", &message);
        }
        let model = key_of(&name);
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let Some(script) = self.inference.scripts.get_mut(&model) else {
            let what = if model.contains("/publishers/") {
                "Publisher Model"
            } else {
                "Endpoint"
            };
            return error_answer(404, "NOT_FOUND", &format!("{what} `{name}` not found."));
        };
        if let Some(code) = script.faults.pop_front() {
            return if code == 400 {
                error_answer(
                    400,
                    "INVALID_ARGUMENT",
                    "Request contains an invalid argument.",
                )
            } else {
                fault_answer(code)
            };
        }
        if script.not_found > 0 {
            if script.not_found != usize::MAX {
                script.not_found -= 1;
            }
            return error_answer(404, "NOT_FOUND", &format!("Endpoint `{name}` not found."));
        }
        let prompt = prompt_of(&request);
        let done = self.inference.answered.get(&model).map_or(0, Vec::len);
        if script.refuse_after.is_some_and(|k| done >= k) {
            return error_answer(
                400,
                "INVALID_ARGUMENT",
                "The fake refuses every call from now on (refuse_after).",
            );
        }
        let reply = (script.answer)(&prompt);
        let prompt_tokens = words(&request["contents"]) + words(&request["systemInstruction"]);
        let usage = |answer_tokens: u64| {
            json!({
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": answer_tokens,
                "totalTokenCount": prompt_tokens + answer_tokens,
            })
        };
        let value = match &reply {
            FakeReply::Text(t) => json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [{"text": t}]},
                    "finishReason": "STOP",
                    "avgLogprobs": -0.01
                }],
                "usageMetadata": usage(words(&json!(t))),
                "modelVersion": "gemini-2.5-flash",
                "responseId": "fake-response"
            }),
            FakeReply::Blocked(reason) => json!({
                "candidates": [{
                    "finishReason": reason,
                    "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                        "probability": "HIGH", "blocked": true}]
                }],
                "usageMetadata": usage(0),
                "modelVersion": "gemini-2.5-flash"
            }),
            FakeReply::PromptBlocked(reason) => json!({
                "promptFeedback": {"blockReason": reason, "blockReasonMessage": "blocked by the fake"},
                "usageMetadata": usage(0),
                "modelVersion": "gemini-2.5-flash"
            }),
            FakeReply::Empty => json!({
                "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "MAX_TOKENS"}],
                "usageMetadata": usage(0),
                "modelVersion": "gemini-2.5-flash"
            }),
        };
        self.inference
            .answered
            .entry(model)
            .or_default()
            .push(prompt);
        self.check_answer(
            "GoogleCloudAiplatformV1GenerateContentResponse",
            path,
            &value,
        );
        (200, value)
    }

    fn evaluate(&mut self, body: &[u8]) -> (u16, Value) {
        self.inference.evaluate_calls += 1;
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let (input, results, values) = if request["exactMatchInput"].is_object() {
            (
                "exactMatchInput",
                "exactMatchResults",
                "exactMatchMetricValues",
            )
        } else if request["rougeInput"].is_object() {
            ("rougeInput", "rougeResults", "rougeMetricValues")
        } else {
            return error_answer(
                400,
                "INVALID_ARGUMENT",
                "The fake computes exact match and ROUGE only.",
            );
        };
        if input == "rougeInput" && request[input]["metricSpec"]["rougeType"] != "rougeL" {
            return error_answer(400, "INVALID_ARGUMENT", "The fake computes rougeL only.");
        }
        let instances = request[input]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let limit = self.inference.max_instances;
        if limit > 0 && instances.len() > limit {
            return error_answer(
                400,
                "INVALID_ARGUMENT",
                &format!("At most {limit} instances are allowed per request."),
            );
        }
        let scores: Vec<Value> = instances
            .iter()
            .map(|i| {
                let p = i["prediction"].as_str().unwrap_or_default();
                let r = i["reference"].as_str().unwrap_or_default();
                let score = if input == "exactMatchInput" {
                    if p == r { 1.0 } else { 0.0 }
                } else {
                    rouge_l(p, r)
                };
                // proto3 JSON leaves zero values out.
                if score == 0.0 {
                    json!({})
                } else {
                    json!({ "score": score })
                }
            })
            .collect();
        let value = json!({ results: { values: scores } });
        self.check_answer(
            "GoogleCloudAiplatformV1EvaluateInstancesResponse",
            ":evaluateInstances",
            &value,
        );
        (200, value)
    }
}

/// ROUGE-L F-measure on lowercase whitespace tokens (longest common subsequence).
pub(crate) fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let p: Vec<String> = prediction
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let r: Vec<String> = reference
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    if p.is_empty() || r.is_empty() {
        return 0.0;
    }
    let mut table = vec![vec![0usize; r.len() + 1]; p.len() + 1];
    for i in 1..=p.len() {
        for j in 1..=r.len() {
            table[i][j] = if p[i - 1] == r[j - 1] {
                table[i - 1][j - 1] + 1
            } else {
                table[i - 1][j].max(table[i][j - 1])
            };
        }
    }
    let lcs = table[p.len()][r.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let precision = lcs / p.len() as f64;
    let recall = lcs / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}
