//! Multi-turn labels: an array of turns in a `.json` label, found by the `turns` JSON pointer
//! of CONVERT_CONFIG (`"/turns"` for `{"turns": […]}`, `""` for a label that is the array).
//!
//! Each turn is an object `{"role": "user" | "model", "text": "…"}`. The turns must start with
//! a user turn, alternate, and end with a model turn, as Vertex requires of `contents`; the
//! raw content (text or `fileData`) joins the first user turn. A label that breaks the shape is
//! refused here with the reason, so the file never holds an example Vertex would refuse.

use serde_json::Value;

use super::Category;
use super::template::json_type;

/// The two roles Vertex accepts in `contents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Model,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Model => "model",
        }
    }
}

/// One turn, borrowed from the parsed label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn<'a> {
    pub role: Role,
    pub text: &'a str,
}

/// The turns at `pointer` in `label`, checked; the error is the reject's category and reason.
pub fn extract<'a>(label: &'a Value, pointer: &str) -> Result<Vec<Turn<'a>>, (Category, String)> {
    let malformed = |reason: String| (Category::MalformedLabel, reason);
    let at = if pointer.is_empty() {
        "the label"
    } else {
        pointer
    };
    let Some(value) = label.pointer(pointer) else {
        return Err((
            Category::MissingField,
            format!("label has no turns at {pointer} (`turns` in CONVERT_CONFIG)"),
        ));
    };
    let Value::Array(items) = value else {
        return Err(malformed(format!(
            "turns at {at} must be an array of {{\"role\", \"text\"}} objects, not {}",
            json_type(value)
        )));
    };
    if items.is_empty() {
        return Err(malformed(format!("turns at {at} is an empty array")));
    }
    let mut turns = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        let Value::Object(obj) = item else {
            return Err(malformed(format!(
                "turn {n} is {}, not an object with role and text",
                json_type(item)
            )));
        };
        let role = match obj.get("role") {
            Some(Value::String(r)) if r == "user" => Role::User,
            Some(Value::String(r)) if r == "model" => Role::Model,
            Some(Value::String(r)) => {
                return Err(malformed(format!(
                    "turn {n} has role {r:?}: roles are \"user\" and \"model\""
                )));
            }
            _ => return Err(malformed(format!("turn {n} has no role string"))),
        };
        let text = match obj.get("text") {
            Some(Value::String(t)) if !t.trim().is_empty() => t.as_str(),
            Some(Value::String(_)) => return Err(malformed(format!("turn {n} has empty text"))),
            _ => return Err(malformed(format!("turn {n} has no text string"))),
        };
        match (turns.last(), role) {
            (None, Role::Model) => {
                return Err(malformed(
                    "turn 1 is a model turn: turns must start with a user turn".into(),
                ));
            }
            (Some(Turn { role: prev, .. }), _) if *prev == role => {
                return Err(malformed(format!(
                    "turn {n} is a {0} turn after a {0} turn: turns must alternate user and model",
                    role.as_str()
                )));
            }
            _ => {}
        }
        turns.push(Turn { role, text });
    }
    if turns.last().map(|t| t.role) != Some(Role::Model) {
        return Err(malformed(format!(
            "the last turn (turn {}) is a user turn: turns must end with a model turn",
            turns.len()
        )));
    }
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_turns_are_read_in_order() {
        let label = json!({"turns": [
            {"role": "user", "text": "hi"},
            {"role": "model", "text": "hello"},
            {"role": "user", "text": "and?"},
            {"role": "model", "text": "done", "extra": 1},
        ]});
        let turns = extract(&label, "/turns").unwrap();
        assert_eq!(
            turns.iter().map(|t| (t.role, t.text)).collect::<Vec<_>>(),
            [
                (Role::User, "hi"),
                (Role::Model, "hello"),
                (Role::User, "and?"),
                (Role::Model, "done")
            ]
        );
        let top = json!([{"role": "user", "text": "q"}, {"role": "model", "text": "a"}]);
        assert_eq!(extract(&top, "").unwrap().len(), 2);
    }

    #[test]
    fn broken_turns_say_why() {
        let t = |v: Value| json!({ "turns": v });
        for (label, category, why) in [
            (
                json!({"x": 1}),
                Category::MissingField,
                "no turns at /turns",
            ),
            (t(json!("hi")), Category::MalformedLabel, "not a string"),
            (t(json!([])), Category::MalformedLabel, "empty array"),
            (
                t(json!([1])),
                Category::MalformedLabel,
                "turn 1 is a number",
            ),
            (
                t(json!([{"role": "model", "text": "a"}])),
                Category::MalformedLabel,
                "must start with a user turn",
            ),
            (
                t(json!([{"role": "user", "text": "a"}, {"role": "user", "text": "b"}])),
                Category::MalformedLabel,
                "turn 2 is a user turn after a user turn",
            ),
            (
                t(
                    json!([{"role": "user", "text": "a"}, {"role": "model", "text": "b"}, {"role": "user", "text": "c"}]),
                ),
                Category::MalformedLabel,
                "the last turn (turn 3) is a user turn",
            ),
            (
                t(json!([{"role": "user", "text": "a"}, {"role": "assistant", "text": "b"}])),
                Category::MalformedLabel,
                "turn 2 has role \"assistant\"",
            ),
            (
                t(json!([{"role": "user", "text": " "}, {"role": "model", "text": "b"}])),
                Category::MalformedLabel,
                "turn 1 has empty text",
            ),
            (
                t(json!([{"role": "user"}, {"role": "model", "text": "b"}])),
                Category::MalformedLabel,
                "turn 1 has no text",
            ),
            (
                t(json!([{"text": "a"}])),
                Category::MalformedLabel,
                "turn 1 has no role",
            ),
        ] {
            let (c, reason) = extract(&label, "/turns").unwrap_err();
            assert_eq!(c, category, "{label}: {reason}");
            assert!(reason.contains(why), "{label}: {reason}");
        }
    }
}
