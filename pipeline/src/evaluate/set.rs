//! The frozen evaluation set: rows no run trains or validates on, written once under
//! `MODEL_META_FOLDER/eval/<set id>.jsonl` and reused by every later run.

use serde::{Deserialize, Serialize};

/// One evaluation row: a tuning example split into the request and the expected answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The sample's content digest (hex): the row's identity across runs and renames.
    pub id: String,
    /// The sample key it was made from, for reports.
    pub key: String,
    /// `systemInstruction`, when the example has one (a Vertex `Content`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "systemInstruction"
    )]
    pub system_instruction: Option<serde_json::Value>,
    /// The example's `contents` less its last `model` turn (Vertex `Content`s).
    pub contents: Vec<serde_json::Value>,
    /// The text of the last `model` turn: the expected answer.
    pub reference: String,
}
