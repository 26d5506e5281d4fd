//! Conversion templates: the CONVERT_CONFIG file and the `{placeholder}` text it holds.
//!
//! A template is parsed once, at start-up, into literal pieces and placeholders, so that a
//! sample costs a walk over a few pieces and a lookup in its already-parsed label, never a
//! re-parse. Two roots exist:
//!
//! * `{label}` is the whole label, `{label.a.b}` a nested field, `{label.items.0}` an array
//!   element (a segment of digits indexes an array, and names a key of an object);
//! * `{sample.key}`, `{sample.mime_type}`, `{sample.modality}`, `{sample.uri}` (the raw
//!   object) and `{sample.extension}` are facts of the listing.
//!
//! `{{` and `}}` are literal braces. A string value is inserted as it is; any other value as
//! compact JSON. Every error in a template is found at start-up and names the file, the
//! template and the line and column; a label without a field a placeholder reads is a
//! per-sample [`Missing`], which the converter turns into a `missing_field` reject.

use std::fmt::{self, Write as _};

use serde_json::Value;

use super::ConfigError;
use crate::modality::Modality;
use crate::sample::Sample;

/// The setting that names the file, in every error about it.
const SETTING: &str = "CONVERT_CONFIG";

/// A fact of the sample's listing that a `{sample.…}` placeholder names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fact {
    Key,
    MimeType,
    Modality,
    Uri,
    Extension,
}

impl Fact {
    const ALL: [(&'static str, Fact); 5] = [
        ("key", Fact::Key),
        ("mime_type", Fact::MimeType),
        ("modality", Fact::Modality),
        ("uri", Fact::Uri),
        ("extension", Fact::Extension),
    ];
}

/// One step of a `{label.…}` path: a key, which also indexes an array when it is a number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    key: Box<str>,
    index: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// `{label…}`; `text` is the placeholder as written (trimmed), for rejects.
    Label {
        path: Vec<Step>,
        text: Box<str>,
    },
    Sample(Fact),
}

/// A parsed template: literal text and placeholders, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Which template this is (`prompt`, `answer`, …), for rejects.
    name: &'static str,
    pieces: Vec<Piece>,
}

/// Where a template is broken: 1-based line and column (in characters) inside the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {reason}")]
pub struct TemplateError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

/// A placeholder whose field the sample's label does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The template (`prompt`, `system_instruction`, `answer`).
    pub template: &'static str,
    /// The placeholder as written, e.g. `{label.customer.name}`.
    pub placeholder: String,
    /// Why there is no value, e.g. `no field "name" in label.customer`.
    pub why: String,
}

/// The label as the placeholders see it.
#[derive(Debug, Clone, Copy)]
pub enum LabelView<'a> {
    Json(&'a Value),
    /// A `.txt` label: `{label}` is its text, and it has no fields.
    Text(&'a str),
}

/// What placeholders read for one sample.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub sample: &'a Sample,
    pub raw_uri: &'a str,
    pub label: LabelView<'a>,
}

fn position(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Template {
    /// Parses `src`; `name` says which template it is in later rejects.
    pub fn parse(name: &'static str, src: &str) -> Result<Self, TemplateError> {
        let err = |at: usize, reason: String| {
            let (line, column) = position(src, at);
            TemplateError {
                line,
                column,
                reason,
            }
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = src;
        while let Some(i) = rest.find(['{', '}']) {
            let at = src.len() - rest.len() + i;
            literal.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.as_bytes().first() == Some(&brace) {
                literal.push(char::from(brace));
                rest = &after[1..];
                continue;
            }
            if brace == b'}' {
                return Err(err(
                    at,
                    "unmatched `}` (write `}}` for a literal brace)".into(),
                ));
            }
            let Some(end) = after
                .find(['{', '}'])
                .filter(|&e| after.as_bytes()[e] == b'}')
            else {
                return Err(err(
                    at,
                    "unclosed `{` (write `{{` for a literal brace)".into(),
                ));
            };
            let inner = after[..end].trim();
            let piece = Self::placeholder(inner).map_err(|reason| err(at, reason))?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self { name, pieces })
    }

    /// A template that is only `text`, for PROMPT and SYSTEM_INSTRUCTION, whose braces have
    /// always been literal.
    pub fn literal(name: &'static str, text: &str) -> Self {
        let pieces = if text.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Literal(text.to_owned())]
        };
        Self { name, pieces }
    }

    fn placeholder(inner: &str) -> Result<Piece, String> {
        if inner.is_empty() {
            return Err("empty placeholder `{}` (write `{{}}` for literal braces)".into());
        }
        let (root, path) = match inner.split_once('.') {
            Some((root, path)) => (root, Some(path)),
            None => (inner, None),
        };
        match (root, path) {
            ("label", None) => Ok(Piece::Label {
                path: Vec::new(),
                text: format!("{{{inner}}}").into(),
            }),
            ("label", Some(path)) => {
                let mut steps = Vec::new();
                for seg in path.split('.') {
                    let seg = seg.trim();
                    if seg.is_empty() {
                        return Err(format!("empty field name in `{{{inner}}}`"));
                    }
                    steps.push(Step {
                        key: seg.into(),
                        index: seg
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                            .then(|| seg.parse().ok())
                            .flatten(),
                    });
                }
                Ok(Piece::Label {
                    path: steps,
                    text: format!("{{{inner}}}").into(),
                })
            }
            ("sample", Some(fact)) => Fact::ALL
                .iter()
                .find(|(n, _)| *n == fact.trim())
                .map(|&(_, f)| Piece::Sample(f))
                .ok_or_else(|| {
                    format!(
                        "unknown sample fact `{{{inner}}}` (known: {})",
                        Fact::ALL.map(|(n, _)| format!("sample.{n}")).join(", ")
                    )
                }),
            ("sample", None) => Err(
                "`{sample}` needs a fact: sample.key, sample.mime_type, sample.modality, sample.uri or sample.extension"
                    .into(),
            ),
            _ => Err(format!(
                "unknown placeholder `{{{inner}}}`: placeholders read `label` or `sample` (e.g. {{label.question}}, {{sample.key}})"
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the template reads nothing from the sample.
    pub fn is_literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Literal(_)))
    }

    /// Appends the template, filled in for one sample, to `out`.
    pub fn render_into(&self, out: &mut String, cx: &Context<'_>) -> Result<(), Missing> {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Sample(fact) => out.push_str(sample_fact(*fact, cx)),
                Piece::Label { path, text } => match cx.label {
                    LabelView::Text(t) if path.is_empty() => out.push_str(t),
                    LabelView::Text(_) => {
                        return Err(self.missing(text, "a .txt label has no fields".into()));
                    }
                    LabelView::Json(v) => match lookup(v, path) {
                        Ok(Value::String(s)) => out.push_str(s),
                        // Display of a Value is compact JSON.
                        Ok(other) => {
                            let _ = write!(out, "{other}");
                        }
                        Err(why) => return Err(self.missing(text, why)),
                    },
                },
            }
        }
        Ok(())
    }

    /// The template filled in for one sample.
    pub fn render(&self, cx: &Context<'_>) -> Result<String, Missing> {
        let mut out = String::with_capacity(self.len_hint());
        self.render_into(&mut out, cx)?;
        Ok(out)
    }

    fn len_hint(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(s) => s.len(),
                _ => 16,
            })
            .sum()
    }

    fn missing(&self, placeholder: &str, why: String) -> Missing {
        Missing {
            template: self.name,
            placeholder: placeholder.to_owned(),
            why,
        }
    }
}

fn sample_fact<'a>(fact: Fact, cx: &Context<'a>) -> &'a str {
    let raw = &cx.sample.raw;
    match fact {
        Fact::Key => &cx.sample.key,
        Fact::Uri => cx.raw_uri,
        Fact::Extension => &raw.ext,
        Fact::MimeType => raw
            .modality
            .mime_type(&raw.ext)
            .unwrap_or("application/octet-stream"),
        Fact::Modality => modality_name(raw.modality),
    }
}

/// The modality's name, as `{sample.modality}` and the logs spell it.
pub fn modality_name(m: Modality) -> &'static str {
    match m {
        Modality::Text => "text",
        Modality::Image => "image",
        Modality::Document => "document",
        Modality::Audio => "audio",
        Modality::Video => "video",
    }
}

/// Follows `path` into `value`; the error says where the path stops.
fn lookup<'v>(value: &'v Value, path: &[Step]) -> Result<&'v Value, String> {
    let mut at = value;
    for (i, step) in path.iter().enumerate() {
        let next = match at {
            Value::Object(map) => map.get(&*step.key),
            Value::Array(items) => step.index.and_then(|n| items.get(n)),
            _ => None,
        };
        at = next.ok_or_else(|| {
            let parent = std::iter::once("label")
                .chain(path[..i].iter().map(|s| &*s.key))
                .collect::<Vec<_>>()
                .join(".");
            match at {
                Value::Array(items) => format!(
                    "{parent} is an array of {} item(s), with no item {:?}",
                    items.len(),
                    &*step.key
                ),
                Value::Object(_) => format!("no field {:?} in {parent}", &*step.key),
                other => format!("{parent} is {}, not an object or array", json_type(other)),
            }
        })?;
    }
    Ok(at)
}

/// A JSON type's name, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl fmt::Display for Template {
    /// The template as it would be written, braces escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => f.write_str(&s.replace('{', "{{").replace('}', "}}"))?,
                Piece::Label { text, .. } => f.write_str(text)?,
                Piece::Sample(fact) => {
                    let name = Fact::ALL
                        .iter()
                        .find(|(_, x)| x == fact)
                        .map_or("", |x| x.0);
                    write!(f, "{{sample.{name}}}")?;
                }
            }
        }
        Ok(())
    }
}

/// What CONVERT_CONFIG holds, parsed: the templates and where a label keeps its turns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    /// Text before the raw content in the first user turn; replaces PROMPT.
    pub prompt: Option<Template>,
    /// The system instruction; replaces SYSTEM_INSTRUCTION.
    pub system_instruction: Option<Template>,
    /// The model turn; replaces LABEL_FIELD's pick of the label.
    pub answer: Option<Template>,
    /// JSON pointer of an array of turns in `.json` labels (`""`: the label is the array);
    /// when set, every example is multi-turn.
    pub turns: Option<String>,
}

/// The file as written; unknown keys are refused, so a misspelt key does not pass silently.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    prompt: Option<String>,
    system_instruction: Option<String>,
    answer: Option<String>,
    turns: Option<String>,
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid {
        setting: SETTING,
        reason,
    }
}

impl Templates {
    /// Parses the TOML text of a CONVERT_CONFIG file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text)
            .map_err(|e| invalid(format!("{origin}: {}", e.to_string().trim_end())))?;
        let template = |name: &'static str, src: Option<String>| {
            src.map(|s| Template::parse(name, &s))
                .transpose()
                .map_err(|e| invalid(format!("{origin}: template `{name}`, {e}")))
        };
        let turns = match file.turns {
            Some(p) if !p.is_empty() && !p.starts_with('/') => {
                return Err(invalid(format!(
                    "{origin}: `turns` = {p:?} is not a JSON pointer (it must start with '/', e.g. \"/turns\", or be \"\" for a label that is the array)"
                )));
            }
            t => t,
        };
        if turns.is_some() && file.answer.is_some() {
            return Err(invalid(format!(
                "{origin}: `answer` and `turns` cannot both be set: with `turns` the model turns come from the label"
            )));
        }
        Ok(Self {
            prompt: template("prompt", file.prompt)?,
            system_instruction: template("system_instruction", file.system_instruction)?,
            answer: template("answer", file.answer)?,
            turns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{LabelFile, LabelFormat, RawFile};
    use crate::storage::ObjectMeta;

    fn sample() -> Sample {
        let meta = |k: &str| ObjectMeta {
            key: k.to_owned(),
            size: 10,
            generation: "1".into(),
            checksum: None,
        };
        Sample {
            key: "tickets/t1".into(),
            raw: RawFile {
                meta: meta("raw/tickets/t1.png"),
                modality: Modality::Image,
                ext: "png".into(),
                gzip: false,
            },
            label: LabelFile {
                meta: meta("raw/tickets/t1.json"),
                format: LabelFormat::Json,
                gzip: false,
            },
        }
    }

    fn render(src: &str, label: &Value) -> Result<String, Missing> {
        let s = sample();
        let cx = Context {
            sample: &s,
            raw_uri: "gs://b/raw/tickets/t1.png",
            label: LabelView::Json(label),
        };
        Template::parse("prompt", src).unwrap().render(&cx)
    }

    #[test]
    fn renders_fields_facts_and_escapes() {
        let label = serde_json::json!({
            "q": "Why?",
            "a": {"b": {"c": "deep"}},
            "items": ["zero", {"n": 1}],
            "n": 4.5,
            "flag": true,
            "nothing": null,
            "obj": {"x": [1, 2]},
            "7": "seven",
        });
        assert_eq!(
            render(
                "{{literal}} {label.q} {label.a.b.c} {label.items.0} {label.items.1.n} {label.7}",
                &label
            )
            .unwrap(),
            "{literal} Why? deep zero 1 seven"
        );
        assert_eq!(
            render("{label.n}|{label.flag}|{label.nothing}|{label.obj}", &label).unwrap(),
            r#"4.5|true|null|{"x":[1,2]}"#
        );
        assert_eq!(
            render(
                "{sample.key} {sample.mime_type} {sample.modality} {sample.uri} {sample.extension}",
                &label
            )
            .unwrap(),
            "tickets/t1 image/png image gs://b/raw/tickets/t1.png png"
        );
        assert_eq!(render("{ label.q }}}", &label).unwrap(), "Why?}");
        assert_eq!(render("", &label).unwrap(), "");
        assert_eq!(
            render("{label}", &serde_json::json!("a string label")).unwrap(),
            "a string label"
        );
        assert_eq!(
            render("{label}", &serde_json::json!({"k": [1]})).unwrap(),
            r#"{"k":[1]}"#
        );
        assert_eq!(
            render("é {label.q} ü", &label).unwrap(),
            "é Why? ü",
            "multi-byte text around placeholders"
        );
    }

    #[test]
    fn a_missing_field_names_the_placeholder_and_where_it_stops() {
        let label = serde_json::json!({"a": {"b": 1}, "items": ["x"], "s": "str"});
        for (src, placeholder, why) in [
            (
                "Q: {label.question}",
                "{label.question}",
                r#"no field "question" in label"#,
            ),
            ("{label.a.c}", "{label.a.c}", r#"no field "c" in label.a"#),
            (
                "{label.items.3}",
                "{label.items.3}",
                "label.items is an array of 1 item(s)",
            ),
            (
                "{label.items.x}",
                "{label.items.x}",
                "label.items is an array",
            ),
            (
                "{label.s.t}",
                "{label.s.t}",
                "label.s is a string, not an object",
            ),
        ] {
            let m = render(src, &label).unwrap_err();
            assert_eq!(m.template, "prompt");
            assert_eq!(m.placeholder, placeholder);
            assert!(m.why.contains(why), "{src}: {}", m.why);
        }
        let s = sample();
        let cx = Context {
            sample: &s,
            raw_uri: "u",
            label: LabelView::Text("plain answer"),
        };
        let t = Template::parse("answer", "{label}").unwrap();
        assert_eq!(t.render(&cx).unwrap(), "plain answer");
        let m = Template::parse("answer", "{label.x}")
            .unwrap()
            .render(&cx)
            .unwrap_err();
        assert!(m.why.contains(".txt label has no fields"), "{}", m.why);
    }

    #[test]
    fn bad_templates_give_their_position() {
        for (src, line, column, reason) in [
            ("Hello {label.q", 1, 7, "unclosed `{`"),
            ("a }", 1, 3, "unmatched `}`"),
            ("ok\n  {}", 2, 3, "empty placeholder"),
            ("{labl.q}", 1, 1, "unknown placeholder `{labl.q}`"),
            (
                "x {sample.size}",
                1,
                3,
                "unknown sample fact `{sample.size}`",
            ),
            ("{sample}", 1, 1, "needs a fact"),
            ("é{label..q}", 1, 2, "empty field name"),
            ("{label.{q}}", 1, 1, "unclosed `{`"),
        ] {
            let e = Template::parse("prompt", src).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{src}: {e}");
            assert!(e.reason.contains(reason), "{src}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        let src = "{{x}} {label.a.0} {sample.mime_type} }}";
        let t = Template::parse("prompt", src).unwrap();
        assert_eq!(t.to_string(), src);
        assert_eq!(Template::parse("prompt", &t.to_string()).unwrap(), t);
        assert!(!t.is_literal());
        let lit = Template::literal("prompt", "{not a placeholder}");
        assert!(lit.is_literal());
        assert_eq!(
            lit.render(&Context {
                sample: &sample(),
                raw_uri: "u",
                label: LabelView::Text("")
            })
            .unwrap(),
            "{not a placeholder}"
        );
    }

    #[test]
    fn config_files_parse_or_name_the_setting_template_and_position() {
        let t = Templates::parse(
            "prompt = \"Q: {label.q}\"\nsystem_instruction = \"\"\"\nBe brief.\n\"\"\"\nturns = \"/turns\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(t.prompt.unwrap().to_string(), "Q: {label.q}");
        assert_eq!(t.system_instruction.unwrap().to_string(), "Be brief.\n");
        assert_eq!(t.turns.as_deref(), Some("/turns"));
        assert_eq!(
            Templates::parse("", "c.toml").unwrap(),
            Templates::default()
        );
        for (text, needle) in [
            (
                "prompt = \"line one\\n{label.q\"",
                "c.toml: template `prompt`, line 2, column 1: unclosed `{`",
            ),
            (
                "answer = \"{nope}\"",
                "c.toml: template `answer`, line 1, column 1: unknown placeholder",
            ),
            ("promt = \"x\"", "unknown field `promt`"),
            ("prompt = ", "c.toml: TOML parse error"),
            ("turns = \"turns\"", "is not a JSON pointer"),
            (
                "turns = \"/t\"\nanswer = \"{label.a}\"",
                "cannot both be set",
            ),
        ] {
            let e = Templates::parse(text, "c.toml").unwrap_err().to_string();
            assert!(e.starts_with("CONVERT_CONFIG: "), "{e}");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
