//! Conversion of one sample into one Vertex AI tuning example (a JSONL line), in the camelCase
//! form of `shared/contracts/GOOGLE-APIS.md` §2.3.
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

use serde::Serialize;

use crate::inventory::{LabelFormat, Sample};
use crate::modality::Modality;

/// Vertex's limit on input plus output tokens of one training example.
pub const MAX_EXAMPLE_TOKENS: u64 = 131_072;

/// A documented, deliberately simple token estimate: about four characters per token for
/// English text. Good enough to refuse examples that Vertex would truncate.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    MalformedLabel,
    MissingField,
    EmptyLabel,
    EmptyRaw,
    NotUtf8,
    UnsupportedType,
    TooLarge,
    ReadError,
    Ambiguous,
}

/// A sample skipped with its reason; one line of `rejected.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    pub key: String,
    pub objects: Vec<String>,
    pub category: Category,
    pub reason: String,
}

impl Reject {
    pub fn new(key: &str, object: &str, category: Category, reason: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            objects: vec![object.to_owned()],
            category,
            reason: reason.into(),
        }
    }
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

#[derive(Debug, Clone, Default)]
pub struct Converter {
    pub prompt: Option<String>,
    pub system_instruction: Option<String>,
    pub label_field: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Example<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'a>>,
    contents: [Content<'a>; 2],
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

impl Converter {
    /// The converter the settings describe.
    pub fn from_settings(s: &crate::settings::Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            prompt: s.prompt.clone(),
            system_instruction: s.system_instruction.clone(),
            label_field: s.label_field.clone(),
        })
    }

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
        let key = sample.key.as_str();
        let answer = self.answer(sample, uris, &loaded.label)?;
        let mime = Self::precheck(sample, uris)?;
        let mut parts = Vec::with_capacity(2);
        let raw_text;
        if sample.raw.modality == Modality::Text {
            let bytes = loaded.raw_text.as_deref().unwrap_or_default();
            raw_text = utf8(bytes, key, &uris.raw, "raw file")?;
            if raw_text.trim().is_empty() {
                return Err(Reject::new(
                    key,
                    &uris.raw,
                    Category::EmptyRaw,
                    "raw text is empty",
                ));
            }
        } else {
            raw_text = "";
            parts.push(Part::FileData(FileData {
                mime_type: mime.unwrap_or("application/octet-stream"),
                file_uri: &uris.raw,
            }));
        }
        if let Some(p) = &self.prompt {
            parts.push(Part::Text(p));
        }
        if !raw_text.is_empty() {
            parts.push(Part::Text(raw_text));
        }
        let tokens = estimate_tokens(raw_text)
            + estimate_tokens(&answer)
            + self.prompt.as_deref().map_or(0, estimate_tokens)
            + self
                .system_instruction
                .as_deref()
                .map_or(0, estimate_tokens);
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
            system_instruction: self.system_instruction.as_deref().map(|s| Content {
                role: None,
                parts: vec![Part::Text(s)],
            }),
            contents: [
                Content {
                    role: Some("user"),
                    parts,
                },
                Content {
                    role: Some("model"),
                    parts: vec![Part::Text(&answer)],
                },
            ],
        };
        Ok(serde_json::to_string(&example).expect("an example serialises"))
    }

    /// The model turn, from the label file.
    fn answer(&self, sample: &Sample, uris: &Uris, label: &[u8]) -> Result<String, Reject> {
        let (key, object) = (sample.key.as_str(), uris.label.as_str());
        let text = utf8(label, key, object, "label")?;
        let answer = match sample.label.format {
            LabelFormat::Text => text.trim_end_matches(['\r', '\n']).to_owned(),
            LabelFormat::Json => {
                let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    Reject::new(
                        key,
                        object,
                        Category::MalformedLabel,
                        format!("label is not valid JSON: {e}"),
                    )
                })?;
                let picked = match self.label_field.as_deref() {
                    Some(ptr) if !ptr.is_empty() => value.pointer(ptr).ok_or_else(|| {
                        Reject::new(
                            key,
                            object,
                            Category::MissingField,
                            format!("label has no field at LABEL_FIELD {ptr}"),
                        )
                    })?,
                    _ => &value,
                };
                match picked {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
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
    use crate::inventory::{LabelFile, RawFile};
    use crate::storage::ObjectMeta;

    fn sample(raw_ext: &str, modality: Modality, label: LabelFormat, size: u64) -> (Sample, Uris) {
        let meta = |k: &str| ObjectMeta {
            key: k.to_owned(),
            size,
            generation: "1".into(),
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
    fn text_label_is_used_as_is() {
        let c = Converter::default();
        let (s, u) = sample("md", Modality::Text, LabelFormat::Text, 10);
        let line = c.convert(&s, &u, &loaded("q", "  the answer  \n")).unwrap();
        assert!(
            line.ends_with(r#"{"role":"model","parts":[{"text":"  the answer  "}]}]}"#),
            "{line}"
        );
    }
}
