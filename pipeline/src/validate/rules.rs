//! The per-example rules: one JSONL line in, findings and a token count out.
//!
//! The rules are those of `pipeline/tests/contracts/GOOGLE-APIS.md` §2.3–2.4 and the `Content`, `Part`
//! and `FileData` schemas of `aiplatform.v1.json`. Checking a line is pure CPU work on bytes
//! already read, so the stream stage runs it on rayon. Findings are written into a
//! [`Findings`] accumulator through closures, so that paths and messages are only formatted
//! for findings that are kept: a file where every line is bad costs counting, not formatting.

use crate::convert::template::json_type;
use serde::Serialize;
use serde_json::{Map, Value};

use super::estimate::{self, TOKENS_PER_IMAGE};
use super::models::ModelLimits;
use crate::convert::estimate_tokens;
use crate::modality::Modality;

/// Whether a finding makes the file unusable (error) or is worth a look (warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! categories {
    ($($(#[$doc:meta])* $name:ident => $sev:ident,)*) => {
        /// What rule a finding breaks; its severity is fixed by the category.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Category {
            $($(#[$doc])* $name,)*
        }

        impl Category {
            /// Every category, in declaration order (their index order).
            pub const ALL: &'static [Category] = &[$(Category::$name,)*];
            pub const COUNT: usize = Self::ALL.len();

            pub fn severity(self) -> Severity {
                match self {
                    $(Category::$name => Severity::$sev,)*
                }
            }
        }
    };
}

categories! {
    /// The line is not UTF-8.
    NotUtf8 => Error,
    /// The line is not JSON.
    InvalidJson => Error,
    /// A blank line.
    EmptyLine => Warning,
    /// A line longer than any valid example could be; it is skipped unread.
    LineTooLong => Error,
    /// A field has the wrong JSON type (e.g. the line is not an object, `parts` not an array).
    WrongType => Error,
    /// `contents` is missing or empty.
    MissingContents => Error,
    /// A role other than `user` or `model`.
    InvalidRole => Error,
    /// A Content without a role (Vertex takes it as `user`).
    MissingRole => Warning,
    FirstRoleNotUser => Error,
    LastRoleNotModel => Error,
    RolesNotAlternating => Error,
    /// A Content without parts.
    EmptyParts => Error,
    /// A Part without a data field.
    PartWithoutData => Error,
    /// A Part with more than one data field.
    PartWithMultipleData => Error,
    /// A `snake_case` field name (`file_data`) where Vertex documents camelCase (`fileData`).
    SnakeCase => Warning,
    /// A field the schema does not have.
    UnknownField => Warning,
    /// `systemInstruction` is not a Content of text parts.
    InvalidSystemInstruction => Error,
    /// A required field of `fileData` or `inlineData` is missing.
    MissingField => Error,
    /// A `fileUri` that is neither `gs://bucket/object` nor `https://`.
    InvalidFileUri => Error,
    /// A MIME type Vertex does not accept for tuning.
    UnsupportedMimeType => Error,
    /// The URI's extension says another modality than `mimeType`.
    MimeTypeMismatch => Warning,
    /// A text part with empty text.
    EmptyText => Warning,
    /// More images, PDFs, audio or video files in one example than Vertex allows.
    TooManyMedia => Error,
    /// More input plus output tokens in one example than the model allows.
    TooManyTokens => Error,
    /// More training examples than the model allows.
    TooManyExamples => Error,
    /// More validation examples than the model allows.
    TooManyValidationExamples => Error,
    /// A training file larger than the model allows.
    FileTooLarge => Error,
    /// A file without a single example.
    NoExamples => Error,
    /// `--check-files`: the object a `fileUri` names does not exist.
    MediaNotFound => Error,
    /// A media object (or inline data) larger than Vertex allows for its modality.
    MediaTooLarge => Error,
    /// `--check-files`: the object could not be looked up (permissions, network).
    MediaNotChecked => Warning,
    /// The model is not in the model table; the strictest known limits apply.
    UnknownModel => Warning,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// 1-based line of the file; `None` for findings about the whole file.
    pub line: Option<u64>,
    /// JSON path inside the line, e.g. `contents[1].parts[0].fileData.mimeType`; empty for the
    /// whole line.
    pub path: String,
    pub category: Category,
    pub severity: Severity,
    pub message: String,
}

/// Counts every finding by category and keeps the first `cap` in full.
#[derive(Debug, Clone)]
pub struct Findings {
    pub counts: [u64; Category::COUNT],
    pub kept: Vec<Finding>,
    pub cap: usize,
}

impl Findings {
    pub fn new(cap: usize) -> Self {
        Self {
            counts: [0; Category::COUNT],
            kept: Vec::new(),
            cap,
        }
    }

    /// Records a finding; the path and message are only built if it is kept.
    pub fn push(
        &mut self,
        line: Option<u64>,
        category: Category,
        path: impl FnOnce() -> String,
        message: impl FnOnce() -> String,
    ) {
        self.counts[category as usize] += 1;
        if self.kept.len() < self.cap {
            self.kept.push(Finding {
                line,
                path: path(),
                category,
                severity: category.severity(),
                message: message(),
            });
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn count(&self, severity: Severity) -> u64 {
        Category::ALL
            .iter()
            .filter(|c| c.severity() == severity)
            .map(|c| self.counts[*c as usize])
            .sum()
    }
}

/// The kind of media a MIME type names, as the per-example counts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Pdf,
    /// `text/plain` passed by URI: a document, but not a PDF.
    TextDocument,
    Audio,
    Video,
}

impl MediaKind {
    /// Which kind a MIME type is, if Vertex accepts it for tuning (GOOGLE-APIS.md §2.4).
    pub fn of(mime: &str) -> Option<Self> {
        let kind = |m: Modality| m.accepted().contains(&mime);
        if kind(Modality::Image) {
            Some(Self::Image)
        } else if mime == "application/pdf" {
            Some(Self::Pdf)
        } else if kind(Modality::Document) {
            Some(Self::TextDocument)
        } else if kind(Modality::Audio) {
            Some(Self::Audio)
        } else if kind(Modality::Video) {
            Some(Self::Video)
        } else {
            None
        }
    }

    pub fn modality(self) -> Modality {
        match self {
            Self::Image => Modality::Image,
            Self::Pdf | Self::TextDocument => Modality::Document,
            Self::Audio => Modality::Audio,
            Self::Video => Modality::Video,
        }
    }
}

/// A `fileData` object to look up with `--check-files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Line relative to the batch while in a batch, of the file once merged.
    pub line: u64,
    pub path: String,
    pub uri: String,
    pub kind: MediaKind,
}

/// What a line that is an example contributes to the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Example {
    pub tokens: u64,
    pub multimodal: bool,
}

/// Classifies a JSON key of a Part: its camelCase name, whether it was written in `snake_case`,
/// and whether it is one of the `Part.data` oneof fields.
fn part_key(key: &str) -> Option<(&'static str, bool, bool)> {
    const KEYS: &[(&str, &str, bool)] = &[
        ("text", "text", true),
        ("inlineData", "inline_data", true),
        ("fileData", "file_data", true),
        ("functionCall", "function_call", true),
        ("functionResponse", "function_response", true),
        ("executableCode", "executable_code", true),
        ("codeExecutionResult", "code_execution_result", true),
        ("thought", "thought", false),
        ("thoughtSignature", "thought_signature", false),
        ("videoMetadata", "video_metadata", false),
        ("mediaResolution", "media_resolution", false),
        ("audioTranscription", "audio_transcription", false),
    ];
    KEYS.iter().find_map(|&(camel, snake, data)| {
        if key == camel {
            Some((camel, false, data))
        } else if key == snake {
            Some((camel, true, data))
        } else {
            None
        }
    })
}

/// Looks up a camelCase field, accepting (and flagging) its `snake_case` spelling.
fn field<'v>(
    obj: &'v Map<String, Value>,
    camel: &str,
    snake: &str,
    cx: &mut Cx<'_>,
    at: &dyn Fn() -> String,
) -> Option<&'v Value> {
    if let Some(v) = obj.get(camel) {
        return Some(v);
    }
    let v = obj.get(snake)?;
    cx.snake(at, snake, camel);
    Some(v)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The state of checking one line.
struct Cx<'a> {
    line: u64,
    limits: &'a ModelLimits,
    out: &'a mut Findings,
    refs: Option<&'a mut Vec<FileRef>>,
    tokens: u64,
    images: u32,
    pdfs: u32,
    audio: u32,
    video: u32,
    multimodal: bool,
}

impl Cx<'_> {
    fn push(
        &mut self,
        category: Category,
        path: impl FnOnce() -> String,
        message: impl FnOnce() -> String,
    ) {
        self.out.push(Some(self.line), category, path, message);
    }

    fn snake(&mut self, at: &dyn Fn() -> String, snake: &str, camel: &str) {
        self.push(
            Category::SnakeCase,
            || join(&at(), snake),
            || format!("{snake} is snake_case; Vertex documents {camel} (camelCase)"),
        );
    }

    fn wrong_type(&mut self, path: impl FnOnce() -> String, want: &str, got: &Value) {
        let got = json_type(got);
        self.push(Category::WrongType, path, || {
            format!("must be {want}, not {got}")
        });
    }

    fn unknown(&mut self, at: &dyn Fn() -> String, key: &str, what: &str) {
        self.push(
            Category::UnknownField,
            || join(&at(), key),
            || format!("{key} is not a field of {what}"),
        );
    }

    fn example(&mut self, obj: &Map<String, Value>) {
        let root = String::new;
        let mut contents = None;
        let mut system = None;
        for (key, value) in obj {
            match key.as_str() {
                "contents" => contents = Some(value),
                "systemInstruction" => system = Some(("systemInstruction", value)),
                "system_instruction" => {
                    self.snake(&root, "system_instruction", "systemInstruction");
                    system = system.or(Some(("system_instruction", value)));
                }
                // Function-calling tuning: passed through to Vertex unchecked.
                "tools" | "toolConfig" => {}
                "tool_config" => self.snake(&root, "tool_config", "toolConfig"),
                other => self.unknown(&root, other, "a tuning example"),
            }
        }
        if let Some((name, sys)) = system {
            self.system_instruction(name, sys);
        }
        match contents {
            None => self.push(Category::MissingContents, String::new, || {
                "no contents: an example needs {\"contents\":[{\"role\":\"user\",...},{\"role\":\"model\",...}]}".into()
            }),
            Some(Value::Array(list)) if list.is_empty() => {
                self.push(Category::MissingContents, || "contents".into(), || "contents is empty".into());
            }
            Some(Value::Array(list)) => self.contents(list),
            Some(other) => self.wrong_type(|| "contents".into(), "an array of Content", other),
        }
        self.media_counts();
        if self.tokens > self.limits.max_example_tokens {
            let (tokens, max, model) = (
                self.tokens,
                self.limits.max_example_tokens,
                &self.limits.name,
            );
            self.push(Category::TooManyTokens, String::new, || {
                format!(
                    "about {tokens} input+output tokens (text at 4 characters a token, media at documented rates); {model} allows {max} per example"
                )
            });
        }
    }

    fn contents(&mut self, list: &[Value]) {
        // Roles as far as they are valid; `None` once any role is invalid, which is reported
        // on its own so that one mistake yields one finding.
        let mut roles: Option<Vec<bool>> = Some(Vec::with_capacity(list.len()));
        for (i, content) in list.iter().enumerate() {
            let at = || format!("contents[{i}]");
            let Value::Object(obj) = content else {
                self.wrong_type(at, "a Content object", content);
                roles = None;
                continue;
            };
            let is_user = match obj.get("role") {
                None => {
                    self.push(
                        Category::MissingRole,
                        || format!("contents[{i}]"),
                        || "no role: Vertex takes it as \"user\"; set \"user\" or \"model\"".into(),
                    );
                    Some(true)
                }
                Some(Value::String(r)) if r == "user" => Some(true),
                Some(Value::String(r)) if r == "model" => Some(false),
                Some(Value::String(r)) => {
                    let hint = match r.as_str() {
                        "assistant" | "bot" | "ai" => " (use \"model\")",
                        "system" => " (put system text in systemInstruction)",
                        "human" => " (use \"user\")",
                        _ => "",
                    };
                    self.push(
                        Category::InvalidRole,
                        || format!("contents[{i}].role"),
                        || format!("role {r:?} is neither \"user\" nor \"model\"{hint}"),
                    );
                    None
                }
                Some(other) => {
                    self.wrong_type(
                        || format!("contents[{i}].role"),
                        "\"user\" or \"model\"",
                        other,
                    );
                    None
                }
            };
            match (is_user, roles.as_mut()) {
                (Some(u), Some(r)) => r.push(u),
                _ => roles = None,
            }
            for key in obj.keys() {
                if key != "role" && key != "parts" {
                    self.unknown(&at, key, "a Content");
                }
            }
            self.parts(obj, &at, false);
        }
        let Some(roles) = roles else { return };
        if roles.first() == Some(&false) {
            self.push(
                Category::FirstRoleNotUser,
                || "contents[0].role".into(),
                || "the first turn must be \"user\"".into(),
            );
        }
        if let Some(i) = roles.windows(2).position(|w| w[0] == w[1]) {
            let role = if roles[i] { "user" } else { "model" };
            self.push(
                Category::RolesNotAlternating,
                || format!("contents[{}].role", i + 1),
                || format!("two {role} turns in a row (contents[{i}] and contents[{}]); turns must alternate", i + 1),
            );
        }
        if roles.last() == Some(&true) {
            let end = roles.len() - 1;
            self.push(
                Category::LastRoleNotModel,
                || format!("contents[{end}].role"),
                || "the last turn must be \"model\": the answer to learn".into(),
            );
        }
    }

    /// Checks the `parts` of a Content; in a system instruction only text is allowed.
    fn parts(&mut self, obj: &Map<String, Value>, at: &dyn Fn() -> String, system: bool) {
        let empty = if system {
            Category::InvalidSystemInstruction
        } else {
            Category::EmptyParts
        };
        match obj.get("parts") {
            None => self.push(empty, at, || {
                "no parts: a Content needs at least one Part".into()
            }),
            Some(Value::Array(parts)) if parts.is_empty() => {
                self.push(empty, || join(&at(), "parts"), || "parts is empty".into());
            }
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let pat = || format!("{}.parts[{j}]", at());
                    self.part(part, &pat, system);
                }
            }
            Some(other) => self.wrong_type(|| join(&at(), "parts"), "an array of Part", other),
        }
    }

    fn system_instruction(&mut self, name: &'static str, value: &Value) {
        let at = || name.to_owned();
        match value {
            Value::Object(obj) => {
                for key in obj.keys() {
                    if key != "role" && key != "parts" {
                        self.unknown(&at, key, "a system instruction");
                    }
                }
                self.parts(obj, &at, true);
            }
            Value::String(_) => self.push(Category::InvalidSystemInstruction, at, || {
                "must be a Content object {\"parts\":[{\"text\":\"...\"}]}, not a string".into()
            }),
            other => {
                let got = json_type(other);
                self.push(Category::InvalidSystemInstruction, at, || {
                    format!(
                        "must be a Content object {{\"parts\":[{{\"text\":\"...\"}}]}}, not {got}"
                    )
                });
            }
        }
    }

    fn part(&mut self, part: &Value, at: &dyn Fn() -> String, system: bool) {
        let Value::Object(obj) = part else {
            self.wrong_type(at, "a Part object", part);
            return;
        };
        let mut data: Vec<&'static str> = Vec::new();
        for (key, value) in obj {
            let Some((camel, snake, is_data)) = part_key(key) else {
                self.unknown(at, key, "a Part");
                continue;
            };
            if snake {
                self.snake(at, key, camel);
            }
            if !is_data {
                continue;
            }
            data.push(camel);
            let vat = || join(&at(), key);
            if system && camel != "text" {
                self.push(Category::InvalidSystemInstruction, vat, || {
                    format!("a system instruction holds text parts only, not {camel}")
                });
                continue;
            }
            match camel {
                "text" => match value {
                    Value::String(s) => {
                        if s.is_empty() {
                            self.push(Category::EmptyText, vat, || "empty text".into());
                        }
                        self.tokens += estimate_tokens(s);
                    }
                    other => self.wrong_type(vat, "a string", other),
                },
                "fileData" => self.file_data(value, &vat, obj),
                "inlineData" => self.inline_data(value, &vat),
                // Function calls and code: counted as their compact JSON text.
                _ => self.tokens += estimate_tokens(&value.to_string()),
            }
        }
        match data.len() {
            0 => self.push(Category::PartWithoutData, at, || {
                "a Part needs one data field: text, fileData, inlineData, functionCall, functionResponse, executableCode or codeExecutionResult".into()
            }),
            1 => {}
            _ => self.push(Category::PartWithMultipleData, at, || {
                format!("a Part holds exactly one data field, not {}", data.join(" and "))
            }),
        }
    }

    /// Checks a MIME type, counts the medium and adds its tokens.
    fn media(
        &mut self,
        mime: &str,
        at: &dyn Fn() -> String,
        part: &Map<String, Value>,
    ) -> Option<MediaKind> {
        let Some(kind) = MediaKind::of(mime) else {
            self.push(Category::UnsupportedMimeType, at, || {
                format!("{mime:?} is not a MIME type Vertex accepts for tuning (images, PDF, text/plain, audio or video; see GOOGLE-APIS.md §2.4)")
            });
            return None;
        };
        self.multimodal = true;
        let tokens = match kind {
            MediaKind::Image => {
                self.images += 1;
                TOKENS_PER_IMAGE
            }
            MediaKind::Pdf => {
                self.pdfs += 1;
                estimate::document_tokens()
            }
            MediaKind::TextDocument => estimate::document_tokens(),
            MediaKind::Audio => {
                self.audio += 1;
                estimate::audio_tokens()
            }
            MediaKind::Video => {
                self.video += 1;
                estimate::video_tokens(clip_seconds(part))
            }
        };
        self.tokens = self.tokens.saturating_add(tokens);
        Some(kind)
    }

    fn file_data(&mut self, value: &Value, at: &dyn Fn() -> String, part: &Map<String, Value>) {
        let Value::Object(fd) = value else {
            self.wrong_type(at, "a FileData object {mimeType, fileUri}", value);
            return;
        };
        for key in fd.keys() {
            if !matches!(
                key.as_str(),
                "mimeType" | "mime_type" | "fileUri" | "file_uri" | "displayName" | "display_name"
            ) {
                self.unknown(at, key, "fileData");
            }
        }
        if fd.contains_key("display_name") {
            self.snake(at, "display_name", "displayName");
        }
        let mime = self.string_field(fd, "mimeType", "mime_type", at);
        let uri = self.string_field(fd, "fileUri", "file_uri", at);
        let kind = mime.and_then(|(key, m)| self.media(m, &|| join(&at(), key), part));
        let Some((ukey, uri)) = uri else { return };
        let uat = || join(&at(), ukey);
        let local_ok = self.limits.allow_local_uris && uri.starts_with("file://");
        if !(valid_uri(uri) || local_ok) {
            self.push(Category::InvalidFileUri, uat, || {
                format!("{uri:?} is neither gs://bucket/object nor an https:// URL")
            });
            return;
        }
        let Some(kind) = kind else { return };
        if let Some(ext_kind) = extension_modality(uri)
            && ext_kind != kind.modality()
        {
            let m = mime.map_or("", |(_, m)| m);
            self.push(Category::MimeTypeMismatch, uat, || {
                format!("the extension of {uri} is a {ext_kind:?} file, but mimeType is {m}")
            });
        }
        if let Some(refs) = self.refs.as_deref_mut()
            && uri.starts_with("gs://")
        {
            refs.push(FileRef {
                line: self.line,
                path: uat(),
                uri: uri.to_owned(),
                kind,
            });
        }
    }

    fn inline_data(&mut self, value: &Value, at: &dyn Fn() -> String) {
        let Value::Object(blob) = value else {
            self.wrong_type(at, "a Blob object {mimeType, data}", value);
            return;
        };
        for key in blob.keys() {
            if !matches!(
                key.as_str(),
                "mimeType" | "mime_type" | "data" | "displayName" | "display_name"
            ) {
                self.unknown(at, key, "inlineData");
            }
        }
        let mime = self.string_field(blob, "mimeType", "mime_type", at);
        let data = self.string_field(blob, "data", "data", at);
        let Some((mkey, mime)) = mime else { return };
        let Some(kind) = self.media(mime, &|| join(&at(), mkey), &Map::new()) else {
            return;
        };
        if let (Some((_, data)), Some(max)) = (data, kind.modality().max_bytes()) {
            let bytes = data.len() as u64 / 4 * 3;
            if bytes > max {
                self.push(
                    Category::MediaTooLarge,
                    || join(&at(), "data"),
                    || {
                        format!(
                            "about {bytes} bytes of inline {mime}; Vertex allows {max} per file"
                        )
                    },
                );
            }
        }
    }

    /// A required string field of fileData or inlineData, with the key it was found under.
    fn string_field<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        camel: &'static str,
        snake: &'static str,
        at: &dyn Fn() -> String,
    ) -> Option<(&'static str, &'v str)> {
        let key = if obj.contains_key(camel) {
            camel
        } else {
            snake
        };
        match field(obj, camel, snake, self, at) {
            None => {
                self.push(
                    Category::MissingField,
                    || join(&at(), camel),
                    || format!("{camel} is required"),
                );
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.push(
                    Category::MissingField,
                    || join(&at(), key),
                    || format!("{camel} is empty"),
                );
                None
            }
            Some(Value::String(s)) => Some((key, s.as_str())),
            Some(other) => {
                self.wrong_type(|| join(&at(), key), "a string", other);
                None
            }
        }
    }

    fn media_counts(&mut self) {
        let l = self.limits;
        for (n, max, what) in [
            (self.images, l.max_images_per_example, "images"),
            (self.pdfs, l.max_pdfs_per_example, "PDF files"),
            (self.audio, l.max_audio_per_example, "audio files"),
            (self.video, l.max_video_per_example, "video files"),
        ] {
            if n > max {
                self.push(
                    Category::TooManyMedia,
                    || "contents".into(),
                    || format!("{n} {what} in one example; Vertex allows at most {max}"),
                );
            }
        }
    }
}

/// `gs://bucket/object` or `https://host/...`.
fn valid_uri(uri: &str) -> bool {
    if let Some(rest) = uri.strip_prefix("gs://") {
        return rest
            .split_once('/')
            .is_some_and(|(bucket, object)| !bucket.is_empty() && !object.is_empty());
    }
    uri.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

/// The modality a URI's extension suggests, if it suggests one.
fn extension_modality(uri: &str) -> Option<Modality> {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let name = path.rsplit('/').next()?;
    let (_, ext) = name.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    let candidates = [
        Modality::Image,
        Modality::Document,
        Modality::Audio,
        Modality::Video,
    ];
    let found: Vec<Modality> = candidates
        .into_iter()
        .filter(|m| m.mime_type(&ext).is_some())
        .collect();
    // `.webm` is audio or video; an ambiguous extension says nothing.
    (found.len() == 1).then(|| found[0])
}

/// The length of a video clip from the part's `videoMetadata` offsets.
fn clip_seconds(part: &Map<String, Value>) -> Option<f64> {
    let meta = part
        .get("videoMetadata")
        .or_else(|| part.get("video_metadata"))?;
    let offset = |camel: &str, snake: &str| {
        meta.get(camel)
            .or_else(|| meta.get(snake))
            .and_then(Value::as_str)
            .and_then(estimate::parse_duration_seconds)
    };
    let end = offset("endOffset", "end_offset")?;
    let start = offset("startOffset", "start_offset").unwrap_or(0.0);
    (end > start).then_some(end - start)
}

/// Checks one line (without its line break). Returns what it adds to the totals when it is an
/// example (a JSON object), whether or not it breaks rules.
pub fn check_line(
    raw: &[u8],
    line: u64,
    limits: &ModelLimits,
    out: &mut Findings,
    refs: Option<&mut Vec<FileRef>>,
) -> Option<Example> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        out.push(Some(line), Category::EmptyLine, String::new, || {
            "blank line".into()
        });
        return None;
    }
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => {
            out.push(Some(line), Category::NotUtf8, String::new, || {
                format!("not UTF-8: invalid byte at offset {}", e.valid_up_to())
            });
            return None;
        }
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.push(Some(line), Category::InvalidJson, String::new, || {
                format!(
                    "invalid JSON: {} at column {}",
                    strip_position(&e.to_string()),
                    e.column()
                )
            });
            return None;
        }
    };
    let Value::Object(obj) = &value else {
        let got = json_type(&value);
        out.push(Some(line), Category::WrongType, String::new, || {
            format!("a line must be one JSON object (an example), not {got}")
        });
        return None;
    };
    let mut cx = Cx {
        line,
        limits,
        out,
        refs,
        tokens: 0,
        images: 0,
        pdfs: 0,
        audio: 0,
        video: 0,
        multimodal: false,
    };
    cx.example(obj);
    Some(Example {
        tokens: cx.tokens,
        multimodal: cx.multimodal,
    })
}

/// `serde_json` appends " at line 1 column N"; the line is ours to tell.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::models::ModelTable;

    fn check(line: &str) -> (Option<Example>, Vec<Finding>) {
        let limits = ModelTable::built_in().resolve("gemini-2.5-flash").limits;
        let mut out = Findings::new(100);
        let ex = check_line(line.as_bytes(), 7, &limits, &mut out, None);
        assert_eq!(out.total(), out.kept.len() as u64);
        (ex, out.kept)
    }

    fn cats(line: &str) -> Vec<(Category, String)> {
        check(line)
            .1
            .into_iter()
            .map(|f| (f.category, f.path))
            .collect()
    }

    const OK: &str = r#"{"contents":[{"role":"user","parts":[{"text":"abcdefgh"}]},{"role":"model","parts":[{"text":"abcd"}]}]}"#;

    #[test]
    fn a_valid_text_example() {
        let (ex, f) = check(OK);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(
            ex,
            Some(Example {
                tokens: 3,
                multimodal: false
            })
        );
        let (_, f) = check(&format!("{OK}\r"));
        assert!(f.is_empty(), "CRLF is fine");
    }

    #[test]
    fn every_rule_names_path_and_category() {
        use Category as C;
        let cases: &[(&str, C, &str)] = &[
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"assistant","parts":[{"text":"b"}]}]}"#,
                C::InvalidRole,
                "contents[1].role",
            ),
            (
                r#"{"contents":[{"role":"model","parts":[{"text":"a"}]},{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::FirstRoleNotUser,
                "contents[0].role",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::RolesNotAlternating,
                "contents[1].role",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"a"}]}]}"#,
                C::LastRoleNotModel,
                "contents[0].role",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::EmptyParts,
                "contents[0].parts",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::PartWithoutData,
                "contents[0].parts[0]",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"a","fileData":{"mimeType":"image/png","fileUri":"gs://b/x.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::PartWithMultipleData,
                "contents[0].parts[0]",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"fileData":{"mimeType":"image/gif","fileUri":"gs://b/x.gif"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::UnsupportedMimeType,
                "contents[0].parts[0].fileData.mimeType",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"fileData":{"mimeType":"image/png","fileUri":"/tmp/x.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::InvalidFileUri,
                "contents[0].parts[0].fileData.fileUri",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"fileData":{"fileUri":"gs://b/x.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::MissingField,
                "contents[0].parts[0].fileData.mimeType",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"fileData":{"mimeType":"application/pdf","fileUri":"gs://b/x.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::MimeTypeMismatch,
                "contents[0].parts[0].fileData.fileUri",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"file_data":{"mimeType":"image/png","fileUri":"gs://b/x.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::SnakeCase,
                "contents[0].parts[0].file_data",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"fileData":{"mime_type":"image/png","fileUri":"gs://b/x.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::SnakeCase,
                "contents[0].parts[0].fileData.mime_type",
            ),
            (
                r#"{"systemInstruction":"be brief","contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::InvalidSystemInstruction,
                "systemInstruction",
            ),
            (
                r#"{"contents":[{"role":"user","parts":"a"},{"role":"model","parts":[{"text":"b"}]}]}"#,
                C::WrongType,
                "contents[0].parts",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"b"}]}],"extra":1}"#,
                C::UnknownField,
                "extra",
            ),
            (r#"{"messages":[]}"#, C::UnknownField, "messages"),
            (r"[1]", C::WrongType, ""),
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"a"}]}"#,
                C::InvalidJson,
                "",
            ),
        ];
        for (line, cat, path) in cases {
            let got = cats(line);
            assert!(
                got.iter().any(|(c, p)| c == cat && p == path),
                "{line}\nexpected {cat:?} at {path:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn one_mistake_one_finding() {
        let got = cats(
            r#"{"contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"assistant","parts":[{"text":"b"}]}]}"#,
        );
        assert_eq!(
            got,
            vec![(Category::InvalidRole, "contents[1].role".into())]
        );
        let got = cats(
            r#"{"contents":[{"role":"user","parts":[{"file_data":{"mime_type":"image/png","file_uri":"gs://b/x.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#,
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|(c, _)| *c == Category::SnakeCase));
    }

    #[test]
    fn media_tokens_and_counts() {
        let part = |mime: &str, uri: &str| {
            format!(r#"{{"fileData":{{"mimeType":"{mime}","fileUri":"{uri}"}}}}"#)
        };
        let line = |parts: Vec<String>| {
            format!(
                r#"{{"contents":[{{"role":"user","parts":[{}]}},{{"role":"model","parts":[{{"text":"ok"}}]}}]}}"#,
                parts.join(",")
            )
        };
        let (ex, f) = check(&line(vec![
            part("image/png", "gs://b/a.png"),
            part("image/jpeg", "https://x.org/b.jpg"),
        ]));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(
            ex,
            Some(Example {
                tokens: 2 * 258 + 1,
                multimodal: true
            })
        );

        let images = (0..31)
            .map(|i| part("image/png", &format!("gs://b/{i}.png")))
            .collect();
        let (_, f) = check(&line(images));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].category, Category::TooManyMedia);
        assert!(f[0].message.contains("31 images"), "{}", f[0].message);

        let (_, f) = check(&line(vec![
            part("video/mp4", "gs://b/a.mp4"),
            part("video/mp4", "gs://b/b.mp4"),
        ]));
        assert_eq!(
            f.iter().map(|f| f.category).collect::<Vec<_>>(),
            vec![Category::TooManyMedia]
        );

        let clip = r#"{"fileData":{"mimeType":"video/mp4","fileUri":"gs://b/a.mp4"},"videoMetadata":{"startOffset":"10s","endOffset":"20s"}}"#;
        let (ex, f) = check(&line(vec![clip.to_owned()]));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(ex.unwrap().tokens, 10 * 263 + 1);
    }

    #[test]
    fn tokens_over_the_limit() {
        let long = "x".repeat(131_072 * 4 + 4);
        let line = format!(
            r#"{{"contents":[{{"role":"user","parts":[{{"text":"{long}"}}]}},{{"role":"model","parts":[{{"text":"b"}}]}}]}}"#
        );
        let (ex, f) = check(&line);
        assert_eq!(ex.unwrap().tokens, 131_074);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].category, Category::TooManyTokens);
        assert_eq!(f[0].line, Some(7));
    }

    #[test]
    fn bad_bytes_and_blank_lines() {
        let limits = ModelTable::built_in().resolve("x").limits;
        let mut out = Findings::new(10);
        assert!(check_line(b"{\"a\":\"\xff\"}", 1, &limits, &mut out, None).is_none());
        assert!(check_line(b"  ", 2, &limits, &mut out, None).is_none());
        let got: Vec<_> = out.kept.iter().map(|f| (f.category, f.line)).collect();
        assert_eq!(
            got,
            vec![(Category::NotUtf8, Some(1)), (Category::EmptyLine, Some(2))]
        );
        assert!(
            out.kept[0].message.contains("offset 6"),
            "{}",
            out.kept[0].message
        );
    }

    #[test]
    fn findings_are_capped_but_counted() {
        let mut out = Findings::new(1);
        for i in 0..5 {
            out.push(Some(i), Category::InvalidJson, String::new, || "x".into());
        }
        assert_eq!((out.total(), out.kept.len()), (5, 1));
        assert_eq!(out.count(Severity::Error), 5);
        assert_eq!(out.count(Severity::Warning), 0);
    }

    #[test]
    fn gs_refs_are_collected_for_lookups() {
        let limits = ModelTable::built_in().resolve("gemini-2.5-flash").limits;
        let mut out = Findings::new(10);
        let mut refs = Vec::new();
        let line = r#"{"contents":[{"role":"user","parts":[{"fileData":{"mimeType":"audio/mp3","fileUri":"gs://b/a.mp3"}},{"fileData":{"mimeType":"image/png","fileUri":"https://x.org/a.png"}}]},{"role":"model","parts":[{"text":"b"}]}]}"#;
        check_line(line.as_bytes(), 3, &limits, &mut out, Some(&mut refs));
        assert!(out.kept.is_empty(), "{:?}", out.kept);
        assert_eq!(refs.len(), 1, "only gs:// objects can be looked up");
        assert_eq!(refs[0].path, "contents[0].parts[0].fileData.fileUri");
        assert_eq!((refs[0].line, refs[0].kind), (3, MediaKind::Audio));
    }
}
