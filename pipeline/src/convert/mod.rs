//! Conversion of one sample into one Vertex AI tuning example (a JSONL line), in the camelCase
//! form of `pipeline/tests/contracts/GOOGLE-APIS.md` §2.3.
//!
//! * A text raw file's content goes into the user turn, after the prompt.
//! * An image, PDF, audio or video raw file becomes a `fileData` part naming the object by URI
//!   and MIME type; it is never copied.
//! * A `.json` label becomes the model turn: the value at LABEL_FIELD (a JSON pointer) when set,
//!   a string as it is and anything else as compact JSON; a `.txt` label is used as it is, less
//!   a trailing line break.
//!
//! Conversion is pure CPU work on bytes already read, so it runs on rayon; a sample that cannot
//! be converted yields a [`Reject`] naming its objects and the reason, and the others go on.
//!
//! # Templates (CONVERT_CONFIG)
//!
//! CONVERT_CONFIG names a TOML file whose `prompt`, `system_instruction` and `answer` are
//! templates with placeholders (`{label.question}`, `{label.a.b}`, `{label.items.0}`,
//! `{sample.key}`, `{sample.mime_type}`, …; see [`template`]). Each key set in the file wins
//! over its setting: `prompt` over PROMPT, `system_instruction` over SYSTEM_INSTRUCTION,
//! `answer` over LABEL_FIELD; a key left out keeps the setting. PROMPT and SYSTEM_INSTRUCTION
//! stay literal text (their braces were never placeholders). Templates are parsed once by
//! the settings at start-up (from the same bytes the run key digests), so a broken template stops the job at start-up (exit 2) with
//! the file, the template, the line and the column; a label lacking a field a placeholder reads
//! rejects that sample alone (`missing_field`, naming the placeholder and the label object).
//!
//! A `turns` key (a JSON pointer, `"/turns"`, or `""` for a label that is itself the array)
//! makes every example multi-turn: see [`turns`] for the shape and the checks.
//!
//! # Custom converters
//!
//! Templates place label fields into text. When an example needs logic — computing the answer
//! (joining tags, mapping codes to words), choosing or skipping samples by their content,
//! several media parts, reading other objects — implement [`SampleConverter`] instead. It has
//! the signature of [`Converter::convert`], which implements it, so a custom converter can
//! prepare a label and delegate to the built-in one to keep its checks (UTF-8, sizes, tokens,
//! `fileData`). `cargo run -p autotune --example custom_converter` shows one. The `autotune`
//! binary itself builds its converter from the settings; a custom converter is for programs
//! that use this crate as a library.

pub mod template;
pub mod turns;

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::modality::Modality;
use crate::sample::{Category, LabelFormat, Reject, Sample};
use template::{Context, LabelView};
pub use template::{Missing, Template, TemplateError, Templates};
use turns::Turn;

/// Vertex's limit on input plus output tokens of one training example.
pub const MAX_EXAMPLE_TOKENS: u64 = 131_072;

/// A documented, deliberately simple token estimate: about four characters per token for
/// English text. Good enough to refuse examples that Vertex would truncate.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The bytes a sample needs, read by the I/O stage.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Content of a text raw file (decompressed); `None` for media.
    pub raw_text: Option<bytes::Bytes>,
    pub label: bytes::Bytes,
}

/// URIs of a sample's two objects, for lines and errors.
#[derive(Debug, Clone)]
pub struct Uris {
    pub raw: String,
    pub label: String,
}

/// The built-in converter: the conversion settings, and CONVERT_CONFIG's templates.
#[derive(Debug, Clone, Default)]
pub struct Converter {
    /// PROMPT, literal text.
    pub prompt: Option<String>,
    /// SYSTEM_INSTRUCTION, literal text.
    pub system_instruction: Option<String>,
    /// LABEL_FIELD, a JSON pointer into `.json` labels.
    pub label_field: Option<String>,
    /// CONVERT_CONFIG's templates; each one set replaces the setting it stands for.
    pub templates: Templates,
}

/// Converts one sample, read, into one JSONL line (without its newline).
///
/// The seam for conversions that templates cannot express (see the module docs). It is called
/// on rayon threads, hence `Send + Sync`; it must not panic on bad input but return a
/// [`Reject`] saying why, so that the other samples go on. Closures of the same signature
/// implement it too.
pub trait SampleConverter: Send + Sync {
    fn convert(&self, sample: &Sample, uris: &Uris, loaded: &Loaded) -> Result<String, Reject>;
}

impl SampleConverter for Converter {
    fn convert(&self, sample: &Sample, uris: &Uris, loaded: &Loaded) -> Result<String, Reject> {
        Converter::convert(self, sample, uris, loaded)
    }
}

impl<F> SampleConverter for F
where
    F: Fn(&Sample, &Uris, &Loaded) -> Result<String, Reject> + Send + Sync,
{
    fn convert(&self, sample: &Sample, uris: &Uris, loaded: &Loaded) -> Result<String, Reject> {
        self(sample, uris, loaded)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Example<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    contents: Vec<Content<'a>>,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Part<'a> {
    Text(&'a str),
    FileData(FileData<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    mime_type: &'a str,
    file_uri: &'a str,
}

fn utf8<'a>(bytes: &'a [u8], key: &str, object: &str, what: &str) -> Result<&'a str, Reject> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Reject::new(
            key,
            object,
            Category::NotUtf8,
            format!(
                "{what} is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Why the conversion settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

/// A placeholder without a value, as the sample's reject.
fn missing(m: &Missing, key: &str, label: &str) -> Reject {
    Reject::new(
        key,
        label,
        Category::MissingField,
        format!(
            "template `{}`: placeholder {} has no value in label {label}: {}",
            m.template, m.placeholder, m.why
        ),
    )
}

/// Why an object name cannot go into a `fileData.fileUri`, if it cannot. Cloud Storage's naming
/// page asks to avoid control characters, `#` (read as a version by Google's tools) and the
/// wildcards `[`, `]`, `*`, `?`; Vertex takes the URI's object name literally, so it is sent
/// as it is, never percent-encoded (a name with `%20` would name another object).
pub fn unaddressable(name: &str) -> Option<String> {
    let bad = name
        .chars()
        .find(|&c| c.is_control() || matches!(c, '#' | '[' | ']' | '*' | '?'))?;
    Some(if bad.is_control() {
        format!("contains the control character U+{:04X}", u32::from(bad))
    } else {
        format!("contains {bad:?}, which Google's tools read as a version or a wildcard")
    })
}

/// What the model says: one answer, or the turns of a multi-turn label.
enum Reply<'a> {
    Answer(String),
    Turns(Vec<Turn<'a>>),
}

impl Converter {
    /// Checks what the listing already tells, before anything is read.
    pub fn precheck(sample: &Sample, uris: &Uris) -> Result<Option<&'static str>, Reject> {
        let raw = &sample.raw;
        let Some(mime) = raw.modality.mime_type(&raw.ext) else {
            return Err(Reject::new(
                &sample.key,
                &uris.raw,
                Category::UnsupportedType,
                format!(
                    ".{} is not a {:?} type Vertex AI accepts",
                    raw.ext, raw.modality
                ),
            ));
        };
        if let Some(max) = raw.modality.max_bytes() {
            // A media object is named by its `gs://` URI with the object name as it is: Vertex
            // does not percent-decode it, so a name it cannot look up must not reach a line.
            if let Some(why) = unaddressable(&raw.meta.key) {
                return Err(Reject::new(
                    &sample.key,
                    &uris.raw,
                    Category::InvalidName,
                    format!(
                        "Vertex AI cannot address this object by its gs:// URI: its name {why}; rename it"
                    ),
                ));
            }
            if raw.meta.size > max {
                return Err(Reject::new(
                    &sample.key,
                    &uris.raw,
                    Category::TooLarge,
                    format!(
                        "{} bytes is more than Vertex AI allows for one {:?} file ({max} bytes)",
                        raw.meta.size, raw.modality
                    ),
                ));
            }
            if raw.meta.size == 0 {
                return Err(Reject::new(
                    &sample.key,
                    &uris.raw,
                    Category::EmptyRaw,
                    "empty file",
                ));
            }
            return Ok(Some(mime));
        }
        Ok(None)
    }

    /// Converts one sample whose bytes were read into one JSONL line (without newline).
    pub fn convert(&self, sample: &Sample, uris: &Uris, loaded: &Loaded) -> Result<String, Reject> {
        let (key, label_uri) = (sample.key.as_str(), uris.label.as_str());
        let text = utf8(&loaded.label, key, label_uri, "label")?;
        // The label is parsed once; every template and the reply read the same value.
        let json: Value;
        let label = match sample.label.format {
            LabelFormat::Text => LabelView::Text(text.trim_end_matches(['\r', '\n'])),
            LabelFormat::Json => {
                json = serde_json::from_str(text).map_err(|e| {
                    Reject::new(
                        key,
                        label_uri,
                        Category::MalformedLabel,
                        format!("label is not valid JSON: {e}"),
                    )
                })?;
                LabelView::Json(&json)
            }
        };
        let cx = Context {
            sample,
            raw_uri: &uris.raw,
            label,
        };
        let reply = self.reply(&cx, label_uri)?;
        let prompt = Self::text(self.templates.prompt.as_ref(), self.prompt.as_deref(), &cx)
            .map_err(|m| missing(&m, key, label_uri))?;
        let system = Self::text(
            self.templates.system_instruction.as_ref(),
            self.system_instruction.as_deref(),
            &cx,
        )
        .map_err(|m| missing(&m, key, label_uri))?;

        let (mut user, raw_text) = Self::raw_parts(sample, uris, loaded)?;
        if let Some(p) = &prompt {
            user.push(Part::Text(p));
        }
        if !raw_text.is_empty() {
            user.push(Part::Text(raw_text));
        }

        let mut tokens = estimate_tokens(raw_text)
            + prompt.as_deref().map_or(0, estimate_tokens)
            + system.as_deref().map_or(0, estimate_tokens);
        let mut contents = Vec::with_capacity(2);
        match &reply {
            Reply::Answer(answer) => {
                tokens += estimate_tokens(answer);
                contents.push(Content {
                    role: Some("user"),
                    parts: user,
                });
                contents.push(Content {
                    role: Some("model"),
                    parts: vec![Part::Text(answer)],
                });
            }
            Reply::Turns(turns) => {
                // The raw content opens the conversation: it joins the first (user) turn.
                let mut user = Some(user);
                for turn in turns {
                    tokens += estimate_tokens(turn.text);
                    let mut parts = user.take().unwrap_or_default();
                    parts.push(Part::Text(turn.text));
                    contents.push(Content {
                        role: Some(turn.role.as_str()),
                        parts,
                    });
                }
            }
        }
        if tokens > MAX_EXAMPLE_TOKENS {
            return Err(Reject::new(
                key,
                &uris.raw,
                Category::TooLarge,
                format!(
                    "about {tokens} tokens (4 characters a token), more than the {MAX_EXAMPLE_TOKENS} Vertex AI allows per example"
                ),
            ));
        }
        let example = Example {
            system_instruction: system.as_deref().map(|s| Content {
                role: None,
                parts: vec![Part::Text(s)],
            }),
            contents,
        };
        Ok(serde_json::to_string(&example).expect("an example serialises"))
    }

    /// What the model says: the label's turns when CONVERT_CONFIG sets `turns`, else the answer.
    fn reply<'l>(&self, cx: &Context<'l>, label_uri: &str) -> Result<Reply<'l>, Reject> {
        let key = cx.sample.key.as_str();
        match (&self.templates.turns, cx.label) {
            (Some(pointer), LabelView::Json(v)) => turns::extract(v, pointer)
                .map(Reply::Turns)
                .map_err(|(category, reason)| Reject::new(key, label_uri, category, reason)),
            (Some(_), LabelView::Text(_)) => Err(Reject::new(
                key,
                label_uri,
                Category::MalformedLabel,
                "a .txt label cannot hold turns (CONVERT_CONFIG sets `turns`): use a .json label",
            )),
            (None, _) => self.answer(cx, key, label_uri).map(Reply::Answer),
        }
    }

    /// The raw file's part (a `fileData` reference for media) and its text (empty for media).
    fn raw_parts<'a>(
        sample: &Sample,
        uris: &'a Uris,
        loaded: &'a Loaded,
    ) -> Result<(Vec<Part<'a>>, &'a str), Reject> {
        let mime = Self::precheck(sample, uris)?;
        let mut parts = Vec::with_capacity(4);
        if sample.raw.modality != Modality::Text {
            parts.push(Part::FileData(FileData {
                mime_type: mime.unwrap_or("application/octet-stream"),
                file_uri: &uris.raw,
            }));
            return Ok((parts, ""));
        }
        let bytes = loaded.raw_text.as_deref().unwrap_or_default();
        let raw_text = utf8(bytes, &sample.key, &uris.raw, "raw file")?;
        if raw_text.trim().is_empty() {
            return Err(Reject::new(
                &sample.key,
                &uris.raw,
                Category::EmptyRaw,
                "raw text is empty",
            ));
        }
        Ok((parts, raw_text))
    }

    /// A prompt or system instruction: the template when CONVERT_CONFIG sets one, else the
    /// setting's literal text; an empty result is no part at all.
    fn text<'s>(
        template: Option<&Template>,
        setting: Option<&'s str>,
        cx: &Context<'_>,
    ) -> Result<Option<Cow<'s, str>>, Missing> {
        let text = match (template, setting) {
            (Some(t), _) => Some(Cow::Owned(t.render(cx)?)),
            (None, Some(s)) => Some(Cow::Borrowed(s)),
            (None, None) => None,
        };
        Ok(text.filter(|t| !t.is_empty()))
    }

    /// The model turn: the `answer` template, else LABEL_FIELD's pick of the label.
    fn answer(&self, cx: &Context<'_>, key: &str, object: &str) -> Result<String, Reject> {
        let answer = match (&self.templates.answer, cx.label) {
            (Some(t), _) => t.render(cx).map_err(|m| missing(&m, key, object))?,
            (None, LabelView::Text(text)) => text.to_owned(),
            (None, LabelView::Json(value)) => {
                let picked = match self.label_field.as_deref() {
                    Some(ptr) if !ptr.is_empty() => value.pointer(ptr).ok_or_else(|| {
                        Reject::new(
                            key,
                            object,
                            Category::MissingField,
                            format!("label has no field at LABEL_FIELD {ptr}"),
                        )
                    })?,
                    _ => value,
                };
                match picked {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                }
            }
        };
        if answer.trim().is_empty() {
            return Err(Reject::new(
                key,
                object,
                Category::EmptyLabel,
                "label is empty",
            ));
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{LabelFile, RawFile};
    use crate::storage::ObjectMeta;

    fn sample(raw_ext: &str, modality: Modality, label: LabelFormat, size: u64) -> (Sample, Uris) {
        let meta = |k: &str| ObjectMeta {
            key: k.to_owned(),
            size,
            generation: "1".into(),
            checksum: None,
        };
        let s = Sample {
            key: "a/x".into(),
            raw: RawFile {
                meta: meta(&format!("raw/a/x.{raw_ext}")),
                modality,
                ext: raw_ext.into(),
                gzip: false,
            },
            label: LabelFile {
                meta: meta("raw/a/x.json"),
                format: label,
                gzip: false,
            },
        };
        let uris = Uris {
            raw: format!("gs://b/raw/a/x.{raw_ext}"),
            label: "gs://b/raw/a/x.json".into(),
        };
        (s, uris)
    }

    #[test]
    fn media_names_vertex_cannot_address_are_rejected_and_others_pass_as_they_are() {
        for (name, ok) in [
            ("raw/a/na\u{ef}ve caf\u{e9} 100%.png", true),
            ("raw/a/x#1.png", false),
            ("raw/a/x?.png", false),
            ("raw/a/[x].png", false),
            ("raw/a/x*.png", false),
            ("raw/a/x\u{7}.png", false),
        ] {
            let (mut s, mut u) = sample("png", Modality::Image, LabelFormat::Text, 10);
            s.raw.meta.key = name.to_owned();
            u.raw = format!("gs://b/{name}");
            match Converter::precheck(&s, &u) {
                Ok(mime) => {
                    assert!(ok, "{name:?} should be refused");
                    assert_eq!(mime, Some("image/png"));
                    let line = Converter::default()
                        .convert(
                            &s,
                            &u,
                            &Loaded {
                                raw_text: None,
                                label: bytes::Bytes::from("a"),
                            },
                        )
                        .unwrap();
                    let v: Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(
                        v["contents"][0]["parts"][0]["fileData"]["fileUri"],
                        format!("gs://b/{name}"),
                        "the object name as it is, never percent-encoded"
                    );
                }
                Err(r) => {
                    assert!(!ok, "{name:?}: {}", r.reason);
                    assert_eq!(r.category, Category::InvalidName);
                    assert!(r.reason.contains("cannot address"), "{}", r.reason);
                    assert_eq!(r.objects, [u.raw.clone()]);
                }
            }
        }
    }

    fn loaded(raw: &str, label: &str) -> Loaded {
        Loaded {
            raw_text: Some(bytes::Bytes::from(raw.to_owned())),
            label: bytes::Bytes::from(label.to_owned()),
        }
    }

    #[test]
    fn text_sample_puts_content_after_prompt() {
        let c = Converter {
            prompt: Some("Classify:".into()),
            system_instruction: Some("Be brief.".into()),
            label_field: Some("/label".into()),
            ..Converter::default()
        };
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Json, 10);
        let line = c
            .convert(
                &s,
                &u,
                &loaded("\u{feff}refund not received", r#"{"label":"billing"}"#),
            )
            .unwrap();
        assert_eq!(
            line,
            r#"{"systemInstruction":{"parts":[{"text":"Be brief."}]},"contents":[{"role":"user","parts":[{"text":"Classify:"},{"text":"refund not received"}]},{"role":"model","parts":[{"text":"billing"}]}]}"#
        );
    }

    #[test]
    fn media_sample_references_the_object() {
        let c = Converter {
            prompt: Some("Extract the fields.".into()),
            ..Converter::default()
        };
        let (s, u) = sample("pdf", Modality::Document, LabelFormat::Json, 1000);
        let line = c
            .convert(
                &s,
                &u,
                &Loaded {
                    raw_text: None,
                    label: r#"{"total":"12.50"}"#.into(),
                },
            )
            .unwrap();
        assert_eq!(
            line,
            r#"{"contents":[{"role":"user","parts":[{"fileData":{"mimeType":"application/pdf","fileUri":"gs://b/raw/a/x.pdf"}},{"text":"Extract the fields."}]},{"role":"model","parts":[{"text":"{\"total\":\"12.50\"}"}]}]}"#
        );
    }

    #[test]
    fn bad_samples_are_rejected_with_reasons() {
        let c = Converter {
            label_field: Some("/answer".into()),
            ..Converter::default()
        };
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Json, 10);
        let cases = [
            (
                loaded("hi", "{not json"),
                Category::MalformedLabel,
                "gs://b/raw/a/x.json",
            ),
            (
                loaded("hi", r#"{"other":1}"#),
                Category::MissingField,
                "gs://b/raw/a/x.json",
            ),
            (
                loaded("hi", r#"{"answer":"  "}"#),
                Category::EmptyLabel,
                "gs://b/raw/a/x.json",
            ),
            (
                loaded("   ", r#"{"answer":"a"}"#),
                Category::EmptyRaw,
                "gs://b/raw/a/x.txt",
            ),
            (
                Loaded {
                    raw_text: Some(bytes::Bytes::from_static(b"\xff\xfe")),
                    label: r#"{"answer":"a"}"#.into(),
                },
                Category::NotUtf8,
                "gs://b/raw/a/x.txt",
            ),
            (
                loaded(&"word ".repeat(110_000), r#"{"answer":"a"}"#),
                Category::TooLarge,
                "gs://b/raw/a/x.txt",
            ),
        ];
        for (input, category, object) in cases {
            let r = c.convert(&s, &u, &input).unwrap_err();
            assert_eq!(r.category, category, "{}", r.reason);
            assert_eq!(r.objects, [object], "{}", r.reason);
        }
        let (big, u) = sample("png", Modality::Image, LabelFormat::Json, 21_000_000);
        assert_eq!(
            Converter::precheck(&big, &u).unwrap_err().category,
            Category::TooLarge
        );
        let (gif, u) = sample("gif", Modality::Image, LabelFormat::Json, 10);
        assert_eq!(
            Converter::precheck(&gif, &u).unwrap_err().category,
            Category::UnsupportedType
        );
    }

    #[test]
    fn numbers_in_labels_pass_through_exactly_as_written() {
        // Compact JSON lists an object's keys in order, as it always did.
        let label = r#"{"huge":1e+400,"id":123456789012345678901234567890,"list":[1.0,100,2e-3],"neg":-0.0,"price":1.10}"#;
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Json, 10);
        let model_turn = |c: &Converter, label: &str| {
            let line = c.convert(&s, &u, &loaded("q", label)).unwrap();
            assert_valid(&line);
            let v: Value = serde_json::from_str(&line).unwrap();
            v["contents"][1]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        // The whole label, as compact JSON.
        assert_eq!(model_turn(&Converter::default(), label), label);
        let spaced = label.replace(',', ", ").replace(':', ": ");
        assert_eq!(model_turn(&Converter::default(), &spaced), label);
        // One field, by LABEL_FIELD.
        for (pointer, expected) in [
            ("/id", "123456789012345678901234567890"),
            ("/price", "1.10"),
            ("/neg", "-0.0"),
            ("/huge", "1e+400"),
            ("/list", "[1.0,100,2e-3]"),
        ] {
            let c = Converter {
                label_field: Some(pointer.into()),
                ..Converter::default()
            };
            assert_eq!(model_turn(&c, label), expected, "{pointer}");
        }
        // Templates.
        let c = templated("answer = \"{label.id} costs {label.price}, {label.list.2}\"");
        assert_eq!(
            model_turn(&c, label),
            "123456789012345678901234567890 costs 1.10, 2e-3"
        );
    }

    #[test]
    fn text_label_is_used_as_is() {
        let c = Converter::default();
        let (s, u) = sample("md", Modality::Text, LabelFormat::Text, 10);
        let line = c.convert(&s, &u, &loaded("q", "  the answer  \n")).unwrap();
        assert!(
            line.ends_with(r#"{"role":"model","parts":[{"text":"  the answer  "}]}]}"#),
            "{line}"
        );
    }

    /// Checks a line with the project's validator: no errors, no warnings.
    fn assert_valid(line: &str) {
        use crate::validate::{ModelTable, rules};
        let limits = ModelTable::built_in().resolve("gemini-2.5-flash").limits;
        let mut findings = rules::Findings::new(10);
        let example = rules::check_line(line.as_bytes(), 1, &limits, &mut findings, None);
        assert!(example.is_some(), "{line}");
        assert_eq!(findings.total(), 0, "{line}: {:?}", findings.kept);
    }

    fn templated(toml: &str) -> Converter {
        Converter {
            templates: Templates::parse(toml, "test.toml").unwrap(),
            ..Converter::default()
        }
    }

    #[test]
    fn templates_fill_prompt_system_and_answer_and_win_over_settings() {
        let c = Converter {
            prompt: Some("PROMPT setting {kept literal}".into()),
            system_instruction: Some("SYSTEM_INSTRUCTION setting".into()),
            label_field: Some("/answer".into()),
            templates: Templates::parse(
                "prompt = \"Ticket {sample.key} ({sample.mime_type}): {label.meta.lang}\"\n\
                 answer = \"{label.category}/{label.tags.1}\"",
                "t.toml",
            )
            .unwrap(),
        };
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Json, 10);
        let label = r#"{"category":"billing","tags":["a","b"],"meta":{"lang":"fr"},"answer":"x"}"#;
        let line = c.convert(&s, &u, &loaded("refund", label)).unwrap();
        assert_eq!(
            line,
            r#"{"systemInstruction":{"parts":[{"text":"SYSTEM_INSTRUCTION setting"}]},"contents":[{"role":"user","parts":[{"text":"Ticket a/x (text/plain): fr"},{"text":"refund"}]},{"role":"model","parts":[{"text":"billing/b"}]}]}"#
        );
        assert_valid(&line);
        // Without CONVERT_CONFIG the PROMPT setting is literal text, braces included.
        let plain = Converter {
            templates: Templates::default(),
            ..c
        };
        let line = plain.convert(&s, &u, &loaded("refund", label)).unwrap();
        assert!(
            line.contains(r#"{"text":"PROMPT setting {kept literal}"}"#),
            "{line}"
        );
        assert!(line.contains(r#""model","parts":[{"text":"x"}]"#), "{line}");
    }

    #[test]
    fn a_placeholder_without_value_rejects_the_sample_naming_it() {
        let c = templated("system_instruction = \"Answer in {label.lang}.\"");
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Json, 10);
        let r = c
            .convert(&s, &u, &loaded("q", r#"{"answer":"a"}"#))
            .unwrap_err();
        assert_eq!(r.category, Category::MissingField);
        assert_eq!(r.objects, ["gs://b/raw/a/x.json"]);
        assert!(r.reason.contains("{label.lang}"), "{}", r.reason);
        assert!(r.reason.contains("system_instruction"), "{}", r.reason);
        assert!(r.reason.contains("gs://b/raw/a/x.json"), "{}", r.reason);
        // The next sample, which has the field, converts.
        let line = c
            .convert(&s, &u, &loaded("q", r#"{"lang":"French"}"#))
            .unwrap();
        assert!(
            line.starts_with(r#"{"systemInstruction":{"parts":[{"text":"Answer in French."}]}"#),
            "{line}"
        );
        // An answer template that renders nothing is an empty label.
        let c = templated("answer = \"{label.a}\"");
        let r = c.convert(&s, &u, &loaded("q", r#"{"a":""}"#)).unwrap_err();
        assert_eq!(r.category, Category::EmptyLabel);
    }

    #[test]
    fn turns_make_a_multi_turn_example_with_the_raw_content_first() {
        let c = Converter {
            prompt: Some("Read the invoice.".into()),
            ..templated("turns = \"/turns\"")
        };
        let (s, u) = sample("pdf", Modality::Document, LabelFormat::Json, 1000);
        let label = r#"{"turns":[{"role":"user","text":"Total?"},{"role":"model","text":"12.50"},{"role":"user","text":"Currency?"},{"role":"model","text":"EUR"}]}"#;
        let line = c
            .convert(
                &s,
                &u,
                &Loaded {
                    raw_text: None,
                    label: label.into(),
                },
            )
            .unwrap();
        assert_eq!(
            line,
            r#"{"contents":[{"role":"user","parts":[{"fileData":{"mimeType":"application/pdf","fileUri":"gs://b/raw/a/x.pdf"}},{"text":"Read the invoice."},{"text":"Total?"}]},{"role":"model","parts":[{"text":"12.50"}]},{"role":"user","parts":[{"text":"Currency?"}]},{"role":"model","parts":[{"text":"EUR"}]}]}"#
        );
        assert_valid(&line);
        // A label that is the array itself, with a text raw file.
        let c = templated("turns = \"\"");
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Json, 10);
        let line = c
            .convert(
                &s,
                &u,
                &loaded(
                    "the document",
                    r#"[{"role":"user","text":"Summarise"},{"role":"model","text":"Short."}]"#,
                ),
            )
            .unwrap();
        assert_eq!(
            line,
            r#"{"contents":[{"role":"user","parts":[{"text":"the document"},{"text":"Summarise"}]},{"role":"model","parts":[{"text":"Short."}]}]}"#
        );
        assert_valid(&line);
    }

    #[test]
    fn broken_turns_are_rejected_and_say_why() {
        let c = templated("turns = \"/turns\"");
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Json, 10);
        for (label, category, why) in [
            (
                r#"{"turns":[{"role":"user","text":"a"},{"role":"user","text":"b"},{"role":"model","text":"c"}]}"#,
                Category::MalformedLabel,
                "must alternate",
            ),
            (
                r#"{"turns":[{"role":"user","text":"a"}]}"#,
                Category::MalformedLabel,
                "must end with a model turn",
            ),
            (
                r#"{"turns":[{"role":"model","text":"a"}]}"#,
                Category::MalformedLabel,
                "must start with a user turn",
            ),
            (
                r#"{"answer":"a"}"#,
                Category::MissingField,
                "no turns at /turns",
            ),
        ] {
            let r = c.convert(&s, &u, &loaded("q", label)).unwrap_err();
            assert_eq!(r.category, category, "{label}: {}", r.reason);
            assert_eq!(r.objects, ["gs://b/raw/a/x.json"]);
            assert!(r.reason.contains(why), "{label}: {}", r.reason);
        }
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Text, 10);
        let r = c.convert(&s, &u, &loaded("q", "an answer")).unwrap_err();
        assert_eq!(r.category, Category::MalformedLabel);
        assert!(
            r.reason.contains(".txt label cannot hold turns"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn custom_converters_are_trait_objects() {
        let skip_drafts = |s: &Sample, u: &Uris, l: &Loaded| {
            if l.label.starts_with(b"DRAFT") {
                return Err(Reject::new(
                    &s.key,
                    &u.label,
                    Category::EmptyLabel,
                    "a draft",
                ));
            }
            Converter::default().convert(s, u, l)
        };
        let converters: [Box<dyn SampleConverter>; 2] =
            [Box::new(Converter::default()), Box::new(skip_drafts)];
        let (s, u) = sample("txt", Modality::Text, LabelFormat::Text, 10);
        assert!(
            converters[0]
                .convert(&s, &u, &loaded("q", "DRAFT a"))
                .is_ok()
        );
        assert_eq!(
            converters[1]
                .convert(&s, &u, &loaded("q", "DRAFT a"))
                .unwrap_err()
                .reason,
            "a draft"
        );
    }
}
