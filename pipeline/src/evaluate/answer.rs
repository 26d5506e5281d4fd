//! What a model answered to one evaluation row.

use serde::{Deserialize, Serialize};

/// One model's answer to one row. Blocked and empty answers count as wrong for either model
/// and are reported apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// The text of the first candidate's parts, joined.
    Text { text: String },
    /// The prompt or the answer was blocked (`promptFeedback.blockReason`, or a candidate's
    /// `finishReason` SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII…).
    Blocked { reason: String },
    /// No candidate, or a candidate without text.
    Empty,
}

impl Answer {
    /// The text, when the model gave one.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text { text } => Some(text),
            _ => None,
        }
    }
}
