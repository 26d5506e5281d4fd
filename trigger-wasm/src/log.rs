//! Structured log lines on stderr.
//!
//! Cloud Run, `SpinKube` and Spin all forward a component's stderr; one JSON object per line with
//! `severity` and `message` is what Cloud Logging parses into a structured entry, and stays
//! readable in a terminal.

use serde_json::{Map, Value};

/// Cloud Logging severities the component uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        }
    }
}

/// Writes one log line: `{"severity":…,"message":…, <fields>}`.
#[allow(
    clippy::print_stderr,
    reason = "the component's logger: Spin sends stderr to the platform's log"
)]
pub fn emit(severity: Severity, message: &str, fields: &[(&str, &str)]) {
    eprintln!("{}", render(severity, message, fields));
}

/// Builds the line without writing it (tested natively).
pub fn render(severity: Severity, message: &str, fields: &[(&str, &str)]) -> String {
    let mut map = Map::new();
    map.insert("severity".into(), Value::from(severity.as_str()));
    map.insert("message".into(), Value::from(message));
    map.insert("component".into(), Value::from("trigger-wasm"));
    for (k, v) in fields {
        map.insert((*k).to_owned(), Value::from(*v));
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_escapes_and_keeps_fields() {
        let line = render(
            Severity::Warning,
            "bad \"quote\"\n",
            &[("object", "a/b.json")],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["severity"], "WARNING");
        assert_eq!(v["message"], "bad \"quote\"\n");
        assert_eq!(v["object"], "a/b.json");
        assert!(!line.contains('\n'));
    }
}
