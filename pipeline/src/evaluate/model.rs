//! The seam a model answers an evaluation row through: [`Model`].
//!
//! Both sides of a paired evaluation are asked the same thing: one `GenerateContentRequest`
//! ([`request_body`]) with the row's `systemInstruction` and `contents`, and a
//! `generationConfig` fixed by [`Generation`] (the temperature the model family takes: 0 for
//! Gemini 2.x, the recommended 1.0 for Gemini 3, none for a model that ignores it; a fixed
//! seed; a cap on output tokens; and the smallest thinking setting the base model allows:
//! [`smallest_thinking`]).
//! Only the `autotune_role` billing label differs between the two calls.
//!
//! Backends: [`crate::evaluate::vertex`] (a tuned model's endpoint, or a base model through its
//! publisher path) and [`crate::evaluate::rehearsal`] (the deterministic stand-in of the dry-run
//! tuner). What a response means is decided here, once, by [`reply_of`]: the first candidate's
//! text, a blocked answer, or an empty one.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Answer, Row};

/// A model that answers evaluation rows.
#[async_trait]
pub trait Model: Send + Sync {
    /// What the model is called in reports, errors and stored answers: the endpoint or
    /// publisher model's resource name, or the rehearsal stand-in's label.
    fn name(&self) -> &str;

    /// The resource name that answered, when the model may answer under more than one
    /// (a tuned Gemini 3 endpoint); `None` until one has answered.
    fn serving(&self) -> Option<String> {
        None
    }

    /// The model's answer to `row` under `config`.
    async fn generate(&self, row: &Row, config: &Generation) -> Result<Reply, ModelError>;
}

/// A model's answer to one row, with what it cost (`usageMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub answer: Answer,
    /// `promptTokenCount`.
    pub prompt_tokens: u64,
    /// Billed output tokens: `candidatesTokenCount` plus `thoughtsTokenCount` (thinking tokens
    /// are billed as output).
    pub answer_tokens: u64,
}

/// Why a model gave no answer to a row.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The request was refused for good (a 4xx other than 404 and 429, e.g. 400
    /// `INVALID_ARGUMENT)`: Google's message word for word. Never retried.
    #[error("{model} refused the request: HTTP {status}: {message}")]
    Refused {
        model: String,
        status: u16,
        message: String,
    },
    /// The model answered 404. A candidate's endpoint is retried for a bounded window after
    /// its tuning job succeeded (`waited` is how long); other models are not waited for.
    #[error("{model} was not found{}: {message}", waited_for(*waited))]
    NotFound {
        model: String,
        waited: Duration,
        message: String,
    },
    /// 429, 5xx, timeouts or broken connections until the retry policy was spent.
    #[error("{model} did not answer: {message} (gave up after {attempts} attempts)")]
    Exhausted {
        model: String,
        attempts: usize,
        message: String,
    },
    /// No credentials, an invalid model name, an unreadable answer.
    #[error("{model}: {message}")]
    Unavailable { model: String, message: String },
}

fn waited_for(waited: Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        let secs = Duration::from_secs(waited.as_secs());
        format!(" (still after {})", humantime::format_duration(secs))
    }
}

/// How much a model may think before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Thinking {
    /// `thinkingConfig.thinkingBudget`: a token budget (Gemini 2.5; 0 turns thinking off).
    Budget(i32),
    /// `thinkingConfig.thinkingLevel` (Gemini 3 and later).
    Level(ThinkingLevel),
    /// No `thinkingConfig`: models without thinking (Gemini 2.0 and older), or unknown names.
    ModelDefault,
}

/// The levels of `GoogleCloudAiplatformV1GenerationConfigThinkingConfig.thinkingLevel` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ThinkingLevel {
    Minimal,
    Low,
}

impl ThinkingLevel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Minimal => "MINIMAL",
            Self::Low => "LOW",
        }
    }
}

/// The smallest thinking setting a Gemini base model accepts, by its name (`gemini-2.5-flash`,
/// `gemini-2.5-pro-001`, `publishers/google/models/gemini-3.5-flash`, …). Google recommends
/// thinking off or at its lowest for tuned models (gemini-supervised-tuning docs); both sides of
/// an evaluation get the setting of the candidate's base model.
///
/// | family | setting | why |
/// |---|---|---|
/// | `gemini-2.5-flash`, `gemini-2.5-flash-lite` | `thinkingBudget: 0` | 0 turns thinking off (budget range 0–24,576) |
/// | `gemini-2.5-pro` | `thinkingBudget: 128` | thinking cannot be turned off; 128 is the smallest budget (range 128–32,768) |
/// | Gemini 3 and later, Pro | `thinkingLevel: LOW` | Pro models take LOW or HIGH (3.1 Pro has no MINIMAL) |
/// | Gemini 3 and later, Flash / Flash-Lite | `thinkingLevel: MINIMAL` | "matches no thinking for most queries" |
/// | Gemini 2.0 and older | none | no thinking; a `thinkingConfig` could be refused |
/// | anything else | none | the model's default |
///
/// Sources: `GoogleCloudAiplatformV1GenerationConfigThinkingConfig` in aiplatform.v1.json
/// (`thinkingBudget` int32; `thinkingLevel` MINIMAL, LOW, MEDIUM, HIGH), and Google's thinking
/// guides (ai.google.dev/gemini-api/docs/thinking; cloud.google.com/vertex-ai/generative-ai/docs/thinking):
/// Gemini 3 models take `thinkingLevel`, and sending both fields is a 400.
pub fn smallest_thinking(base_model: &str) -> Thinking {
    let name = base_model
        .rsplit('/')
        .next()
        .unwrap_or(base_model)
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Some(rest) = name.strip_prefix("gemini-") else {
        return Thinking::ModelDefault;
    };
    let version = rest.split('-').next().unwrap_or_default();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let variant = &rest[version.len()..];
    if major >= 3 {
        if variant.starts_with("-pro") {
            Thinking::Level(ThinkingLevel::Low)
        } else {
            Thinking::Level(ThinkingLevel::Minimal)
        }
    } else if version == "2.5" {
        if variant.starts_with("-pro") {
            Thinking::Budget(128)
        } else {
            Thinking::Budget(0)
        }
    } else {
        Thinking::ModelDefault
    }
}

/// The generation settings both models of an evaluation share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// `None` sends no temperature (the model's default). Gemini 2.x is judged greedily (0);
    /// Gemini 3 at its recommended default of 1.0, lower values "may lead to unexpected
    /// behavior, looping, or degraded performance" (Gemini 3 prompting guide); the model table
    /// says which ([`crate::validate::models::Sampling`]).
    pub temperature: Option<f64>,
    /// A fixed seed, so that repeated evaluations of one model agree as far as Google allows;
    /// `None` where the model does not honour it.
    pub seed: Option<i32>,
    pub max_output_tokens: u32,
    pub thinking: Thinking,
    /// Billing labels (`GenerateContentRequest.labels`): `autotune_run` and `autotune_role`.
    pub labels: BTreeMap<String, String>,
}

impl Generation {
    /// The seed every evaluation uses.
    pub const SEED: i32 = 1_124;
    /// Output tokens allowed by default: enough for a label or a short JSON object.
    pub const MAX_OUTPUT_TOKENS: u32 = 1_024;

    /// Temperature 0, [`Generation::SEED`], the smallest thinking setting of `base_model`, and
    /// the label `autotune_run` = `run_id` (made a valid label value).
    pub fn new(base_model: &str, run_id: &str, max_output_tokens: u32) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert("autotune_run".to_owned(), label_value(run_id));
        Self {
            temperature: Some(0.0),
            seed: Some(Self::SEED),
            max_output_tokens,
            thinking: smallest_thinking(base_model),
            labels,
        }
    }

    /// The temperature and seed the model family takes (the model table's `sampling`).
    #[must_use]
    pub fn with_sampling(mut self, sampling: &crate::validate::models::Sampling) -> Self {
        self.temperature = sampling.temperature;
        self.seed = sampling.seed.then_some(Self::SEED);
        self
    }

    /// Whether answers vary between calls (a temperature above 0, or none sent): the
    /// evaluation then measures a sample of each model's answers, not its single best one.
    pub fn samples(&self) -> bool {
        self.temperature.is_none_or(|t| t > 0.0)
    }

    /// The same settings, labelled `autotune_role` = `role` (`candidate`, `champion`).
    #[must_use]
    pub fn for_role(&self, role: &str) -> Self {
        let mut g = self.clone();
        g.labels
            .insert("autotune_role".to_owned(), label_value(role));
        g
    }
}

/// A valid label value: lowercase letters, digits, `_` and `-`, at most 63 characters.
fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect()
}

/// The `GenerateContentRequest` for `row` under `config`.
pub fn request_body(row: &Row, config: &Generation) -> Value {
    let mut generation = json!({ "maxOutputTokens": config.max_output_tokens });
    if let Some(t) = config.temperature {
        generation["temperature"] = json!(t);
    }
    if let Some(seed) = config.seed {
        generation["seed"] = json!(seed);
    }
    match config.thinking {
        Thinking::Budget(b) => generation["thinkingConfig"] = json!({ "thinkingBudget": b }),
        Thinking::Level(l) => generation["thinkingConfig"] = json!({ "thinkingLevel": l.as_str() }),
        Thinking::ModelDefault => {}
    }
    let mut body = Map::new();
    if let Some(system) = &row.system_instruction {
        body.insert("systemInstruction".to_owned(), system.clone());
    }
    body.insert("contents".to_owned(), Value::Array(row.contents.clone()));
    body.insert("generationConfig".to_owned(), generation);
    if !config.labels.is_empty() {
        body.insert("labels".to_owned(), json!(config.labels));
    }
    Value::Object(body)
}

/// Finish reasons (`GoogleCloudAiplatformV1Candidate.finishReason`) that mean the answer was
/// withheld by a filter rather than ended.
pub const BLOCKING_FINISH_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "MODEL_ARMOR",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
];

/// What a `GenerateContentResponse` says: `promptFeedback.blockReason` or a blocking finish
/// reason is [`Answer::Blocked`]; otherwise the text of the first candidate's parts (thought
/// parts left out), or [`Answer::Empty`] when there is no candidate or no text.
pub fn reply_of(response: &Value) -> Reply {
    let usage = &response["usageMetadata"];
    let count = |field: &str| usage[field].as_u64().unwrap_or(0);
    Reply {
        answer: answer_of(response),
        prompt_tokens: count("promptTokenCount"),
        answer_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
    }
}

fn answer_of(response: &Value) -> Answer {
    if let Some(reason) = response["promptFeedback"]["blockReason"].as_str()
        && !reason.is_empty()
    {
        return Answer::Blocked {
            reason: reason.to_owned(),
        };
    }
    let Some(candidate) = response["candidates"].get(0) else {
        return Answer::Empty;
    };
    if let Some(reason) = candidate["finishReason"].as_str()
        && BLOCKING_FINISH_REASONS.contains(&reason)
    {
        return Answer::Blocked {
            reason: reason.to_owned(),
        };
    }
    let text: String = candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["thought"].as_bool() != Some(true))
        .filter_map(|p| p["text"].as_str())
        .collect();
    if text.is_empty() {
        Answer::Empty
    } else {
        Answer::Text { text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_thinking_setting_follows_the_model_family() {
        use ThinkingLevel::{Low, Minimal};
        for (model, want) in [
            ("gemini-2.5-flash", Thinking::Budget(0)),
            ("gemini-2.5-flash-lite", Thinking::Budget(0)),
            ("gemini-2.5-flash-001", Thinking::Budget(0)),
            ("gemini-2.5-pro", Thinking::Budget(128)),
            (
                "projects/p/locations/l/publishers/google/models/gemini-2.5-pro",
                Thinking::Budget(128),
            ),
            ("gemini-3.5-flash", Thinking::Level(Minimal)),
            ("gemini-3.1-flash-lite", Thinking::Level(Minimal)),
            ("gemini-3-pro-preview", Thinking::Level(Low)),
            ("gemini-3.1-pro", Thinking::Level(Low)),
            ("Gemini-4-Flash", Thinking::Level(Minimal)),
            ("gemini-2.0-flash-001", Thinking::ModelDefault),
            ("gemini-1.0-pro-002", Thinking::ModelDefault),
            ("translation-llm-002", Thinking::ModelDefault),
        ] {
            assert_eq!(smallest_thinking(model), want, "{model}");
        }
    }

    #[test]
    fn answers_are_text_blocked_or_empty() {
        let r = reply_of(&json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": true}, {"text": "a"}, {"text": "b"}]},
                "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}
        }));
        assert_eq!(r.answer, Answer::Text { text: "ab".into() });
        assert_eq!((r.prompt_tokens, r.answer_tokens), (7, 5));
        let blocked = |v: Value| reply_of(&v).answer;
        assert_eq!(
            blocked(json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})),
            Answer::Blocked {
                reason: "PROHIBITED_CONTENT".into()
            }
        );
        assert_eq!(
            blocked(json!({"candidates": [{"finishReason": "SAFETY"}]})),
            Answer::Blocked {
                reason: "SAFETY".into()
            }
        );
        assert_eq!(blocked(json!({})), Answer::Empty);
        assert_eq!(
            blocked(
                json!({"candidates": [{"finishReason": "MAX_TOKENS", "content": {"parts": []}}]})
            ),
            Answer::Empty
        );
    }

    #[test]
    fn labels_are_valid_label_values() {
        let g = Generation::new("gemini-2.5-flash", "20261124-100000-ABC.def", 16)
            .for_role("Candidate");
        assert_eq!(g.labels["autotune_run"], "20261124-100000-abc-def");
        assert_eq!(g.labels["autotune_role"], "candidate");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
    }
}
