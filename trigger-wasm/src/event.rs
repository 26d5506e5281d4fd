//! Decoding the three ways a GCS object event reaches the component
//! (GOOGLE-APIS.md §4):
//!
//! 1. **`CloudEvents` binary mode** (Eventarc → HTTP/Cloud Run target): `ce-*` headers, body is
//!    the `StorageObjectData` JSON. Header values are percent-decoded as the `CloudEvents` HTTP
//!    binding requires (§3.1.3.2: spaces, `"`, `%` and non-ASCII arrive encoded), so
//!    `ce-subject: objects/na%C3%AFve%20caf%C3%A9.txt` names `naïve café.txt`. A `google.cloud.pubsub.topic.v1.messagePublished` event (an
//!    Eventarc Pub/Sub trigger on a GCS notification topic) carries form 3 as its data.
//! 2. **`CloudEvents` structured mode**: `Content-Type: application/cloudevents+json`, attributes
//!    and `data` (or `data_base64`) in one JSON document.
//! 3. **Pub/Sub push envelope** of a GCS notification: `{"message":{"attributes":{eventType,
//!    bucketId, objectId, objectGeneration}, "data": base64(object JSON), "messageId"}, …}`.
//!
//! Every form becomes one [`StorageEvent`]. Anything that is not one of these forms, or is
//! internally inconsistent, is a [`DecodeError`] (answered 400 with its text).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// What happened to the object, normalised across the `CloudEvents` and Pub/Sub vocabularies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Finalize,
    Delete,
    Archive,
    MetadataUpdate,
    /// Any other type, kept verbatim for the "ignored" reason.
    Other(String),
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Finalize => f.write_str("finalize"),
            EventKind::Delete => f.write_str("delete"),
            EventKind::Archive => f.write_str("archive"),
            EventKind::MetadataUpdate => f.write_str("metadata update"),
            EventKind::Other(t) => write!(f, "{t:?}"),
        }
    }
}

/// The delivery form, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    CloudEventBinary,
    CloudEventStructured,
    PubSubPush,
}

/// One storage event, whatever form it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEvent {
    pub form: Form,
    pub kind: EventKind,
    /// `CloudEvent` `id` or Pub/Sub `messageId`: what the job gets as `TRIGGER_EVENT_ID`.
    pub id: String,
    pub bucket: String,
    pub object: String,
    /// Object generation (decimal int64), when the event carries one.
    pub generation: Option<String>,
}

/// Why a body is not a storage event; the text is returned to the caller with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn bad(msg: impl Into<String>) -> DecodeError {
    DecodeError(msg.into())
}

/// Request headers as (lower-case name, value) pairs; values that are not UTF-8 are dropped by
/// the caller, which makes a required header count as missing.
pub type Headers<'a> = &'a [(String, String)];

/// Value of the first header named `name` (lower-case).
pub fn header<'a>(headers: Headers<'a>, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

const CE_STORAGE_PREFIX: &str = "google.cloud.storage.object.v1.";
const CE_PUBSUB_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

/// GCS limits object names to 1024 bytes; event ids are far shorter.
pub const MAX_NAME_BYTES: usize = 1024;

/// Decodes a request into a storage event, choosing the form from the headers, and checks
/// that the values can safely become environment variables of the job.
///
/// An object name is held to Cloud Storage's own rules, not stricter ones: any valid UTF-8 of
/// at most 1024 bytes without a carriage return or line feed. A tab, DEL or a C1 control
/// character is a name GCS stores and the pipeline trains, so its events start the job (they
/// travel as JSON strings, escaped). NUL is refused too: no environment variable can carry it.
/// Event ids and bucket names, which are never made of such characters, keep the strict rule.
pub fn decode(headers: Headers<'_>, body: &[u8]) -> Result<StorageEvent, DecodeError> {
    let ev = decode_form(headers, body)?;
    for (what, v) in [
        ("event id", &ev.id),
        ("bucket", &ev.bucket),
        ("object name", &ev.object),
    ] {
        if v.len() > MAX_NAME_BYTES {
            return Err(bad(format!("{what} longer than {MAX_NAME_BYTES} bytes")));
        }
    }
    for (what, v) in [("event id", &ev.id), ("bucket", &ev.bucket)] {
        if v.chars().any(char::is_control) {
            return Err(bad(format!("{what} contains control characters")));
        }
    }
    if ev.object.contains(['\r', '\n']) {
        return Err(bad(
            "object name contains a carriage return or line feed, which Cloud Storage does not allow",
        ));
    }
    if ev.object.contains('\0') {
        return Err(bad(
            "object name contains a NUL character, which no environment variable of the job can carry",
        ));
    }
    Ok(ev)
}

fn decode_form(headers: Headers<'_>, body: &[u8]) -> Result<StorageEvent, DecodeError> {
    let content_type = header(headers, "content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if header(headers, "ce-specversion").is_some() {
        return decode_binary(headers, body);
    }
    if content_type.starts_with("application/cloudevents-batch") {
        return Err(bad(
            "CloudEvents batch mode is not supported; send one event per request",
        ));
    }
    if content_type.starts_with("application/cloudevents") {
        return decode_structured(body);
    }
    let value = parse_json(body, "request body")?;
    if value.get("message").is_some() {
        return decode_pubsub(&value, Form::PubSubPush, None);
    }
    if value.get("specversion").is_some() {
        // A structured CloudEvent sent with a generic JSON content type.
        return decode_structured(body);
    }
    Err(bad(
        "not a storage event: expected CloudEvents binary mode (ce-* headers), structured mode \
         (Content-Type: application/cloudevents+json) or a Pub/Sub push envelope ({\"message\":…})",
    ))
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value, DecodeError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("{what} is not valid JSON: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(bad(format!("{what} must be a JSON object")))
    }
}

/// `StorageObjectData`: only the fields the trigger needs. int64 fields arrive as strings in
/// real deliveries but as numbers in Google's test data, so both are accepted.
#[derive(Deserialize, Default)]
struct ObjectData {
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generation: Option<Value>,
}

fn object_data(v: Value, what: &str) -> Result<(ObjectData, Option<String>), DecodeError> {
    if !v.is_object() {
        return Err(bad(format!("{what} must be a JSON object")));
    }
    let d: ObjectData = serde_json::from_value(v)
        .map_err(|e| bad(format!("{what} is not a storage object: {e}")))?;
    let generation = d
        .generation
        .as_ref()
        .map(|g| int64(g, &format!("{what}.generation")))
        .transpose()?;
    Ok((d, generation))
}

/// An int64 given as a JSON string or number, returned as its decimal text.
fn int64(v: &Value, what: &str) -> Result<String, DecodeError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad(format!("{what} must be an int64 (string or number)"))),
    };
    if s.parse::<i64>().is_ok_and(|n| n >= 0) {
        Ok(s)
    } else {
        Err(bad(format!("{what} {s:?} is not a non-negative int64")))
    }
}

/// Bucket name from a `CloudEvent` source `//storage.googleapis.com/projects/_/buckets/{bucket}`.
fn bucket_from_source(source: &str) -> Option<&str> {
    source
        .strip_prefix("//storage.googleapis.com/projects/_/buckets/")
        .filter(|b| !b.is_empty() && !b.contains('/'))
}

fn ce_kind(t: &str) -> EventKind {
    match t.strip_prefix(CE_STORAGE_PREFIX) {
        Some("finalized") => EventKind::Finalize,
        Some("deleted") => EventKind::Delete,
        Some("archived") => EventKind::Archive,
        Some("metadataUpdated") => EventKind::MetadataUpdate,
        _ => EventKind::Other(t.to_owned()),
    }
}

/// `CloudEvent` context attributes common to both modes.
struct CeAttrs<'a> {
    specversion: &'a str,
    id: &'a str,
    ty: &'a str,
    source: &'a str,
    subject: Option<&'a str>,
    /// The `ce-subject` header as sent, before percent-decoding (binary mode only): a sender
    /// that predates the binding's encoding rule sends the object name unencoded.
    subject_as_sent: Option<&'a str>,
}

fn check_attrs(a: &CeAttrs<'_>, prefix: &str) -> Result<(), DecodeError> {
    if a.specversion != "1.0" {
        return Err(bad(format!(
            "unsupported CloudEvents {prefix}specversion {:?} (expected \"1.0\")",
            a.specversion
        )));
    }
    for (name, v) in [("id", a.id), ("type", a.ty), ("source", a.source)] {
        if v.is_empty() {
            return Err(bad(format!("CloudEvent {prefix}{name} is empty")));
        }
    }
    Ok(())
}

/// Combines `CloudEvent` attributes and object data into an event, cross-checking both.
fn storage_event(
    form: Form,
    a: &CeAttrs<'_>,
    data: Option<Value>,
) -> Result<StorageEvent, DecodeError> {
    let kind = ce_kind(a.ty);
    let (d, generation) = match data {
        Some(v) => object_data(v, "event data")?,
        None => (ObjectData::default(), None),
    };
    let src_bucket = bucket_from_source(a.source);
    let bucket = match (d.bucket.as_deref(), src_bucket) {
        (Some(b), Some(s)) if b != s => {
            return Err(bad(format!(
                "data.bucket {b:?} disagrees with the CloudEvent source bucket {s:?}"
            )));
        }
        (Some(b), _) | (None, Some(b)) => b.to_owned(),
        (None, None) => {
            // Not a storage event at all (other source): ignorable by type, not malformed.
            if matches!(kind, EventKind::Other(_)) {
                String::new()
            } else {
                return Err(bad(
                    "storage event without a bucket (no data.bucket, source is not \
                     //storage.googleapis.com/projects/_/buckets/…)",
                ));
            }
        }
    };
    let subj_object = a.subject.and_then(|s| s.strip_prefix("objects/"));
    let subj_as_sent = a.subject_as_sent.and_then(|s| s.strip_prefix("objects/"));
    let object = match (d.name.as_deref(), subj_object) {
        (Some(n), Some(s)) if n != s && subj_as_sent != Some(n) => {
            return Err(bad(format!(
                "data.name {n:?} disagrees with the CloudEvent subject object {s:?}"
            )));
        }
        (Some(n), _) | (None, Some(n)) => n.to_owned(),
        (None, None) => {
            if matches!(kind, EventKind::Other(_)) {
                String::new()
            } else {
                return Err(bad(
                    "storage event without an object name (no data.name, subject is not objects/…)",
                ));
            }
        }
    };
    if !matches!(kind, EventKind::Other(_)) && (object.is_empty() || bucket.is_empty()) {
        return Err(bad("storage event with an empty bucket or object name"));
    }
    Ok(StorageEvent {
        form,
        kind,
        id: a.id.to_owned(),
        bucket,
        object,
        generation,
    })
}

/// A `ce-*` header value decoded as the HTTP protocol binding says (§3.1.3.2): a double-quoted
/// string (older versions of the binding) is unescaped first, then one round of
/// percent-decoding, accepting lower-case and needlessly encoded octets but refusing bytes that
/// are not UTF-8.
fn header_value(name: &str, raw: &str) -> Result<String, DecodeError> {
    let unquoted;
    let v = match raw.strip_prefix('"') {
        Some(inner) => {
            unquoted = unquote(inner).ok_or_else(|| {
                bad(format!(
                    "{name} starts with a double quote but is not a quoted string"
                ))
            })?;
            unquoted.as_str()
        }
        None => raw,
    };
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| {
            bad(format!(
                "{name} is not UTF-8 once percent-decoded (CloudEvents HTTP binding 3.1.3.2)"
            ))
        })
}

/// The content of an RFC 7230 quoted-string after its opening quote, backslash escapes
/// resolved; `None` unless the closing quote ends the value.
fn unquote(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.next().is_none().then_some(out),
            c => out.push(c),
        }
    }
    None
}

fn decode_binary(headers: Headers<'_>, body: &[u8]) -> Result<StorageEvent, DecodeError> {
    let raw = |n: &str| header(headers, n).map(str::trim);
    let get = |n: &str| raw(n).map(|v| header_value(n, v)).transpose();
    let (specversion, id, ty, source, subject) = (
        get("ce-specversion")?,
        get("ce-id")?,
        get("ce-type")?,
        get("ce-source")?,
        get("ce-subject")?,
    );
    let attrs = CeAttrs {
        specversion: specversion.as_deref().unwrap_or(""),
        id: id.as_deref().unwrap_or(""),
        ty: ty.as_deref().unwrap_or(""),
        source: source.as_deref().unwrap_or(""),
        subject: subject.as_deref(),
        subject_as_sent: raw("ce-subject"),
    };
    check_attrs(&attrs, "ce-")?;
    if let Some(ct) = raw("content-type") {
        let ct = ct.to_ascii_lowercase();
        if !(ct.starts_with("application/json") || ct.contains("+json")) {
            return Err(bad(format!(
                "CloudEvent data content type {ct:?} is not JSON"
            )));
        }
    }
    if attrs.ty == CE_PUBSUB_PUBLISHED {
        let v = parse_json(body, "messagePublished data")?;
        return decode_pubsub(&v, Form::CloudEventBinary, Some(attrs.id));
    }
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(body, "CloudEvent data")?)
    };
    storage_event(Form::CloudEventBinary, &attrs, data)
}

fn decode_structured(body: &[u8]) -> Result<StorageEvent, DecodeError> {
    let v = parse_json(body, "structured CloudEvent")?;
    let s = |k: &str| -> Result<Option<&str>, DecodeError> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(format!("CloudEvent attribute {k} must be a string"))),
        }
    };
    let attrs = CeAttrs {
        specversion: s("specversion")?.unwrap_or(""),
        id: s("id")?.unwrap_or(""),
        ty: s("type")?.unwrap_or(""),
        source: s("source")?.unwrap_or(""),
        subject: s("subject")?,
        subject_as_sent: None,
    };
    check_attrs(&attrs, "")?;
    if let Some(ct) = s("datacontenttype")? {
        let ct = ct.to_ascii_lowercase();
        if !(ct.starts_with("application/json") || ct.contains("+json")) {
            return Err(bad(format!(
                "CloudEvent datacontenttype {ct:?} is not JSON"
            )));
        }
    }
    let data = match (v.get("data"), s("data_base64")?) {
        (Some(_), Some(_)) => {
            return Err(bad("CloudEvent has both data and data_base64"));
        }
        (Some(Value::Null) | None, None) => None,
        (Some(d), None) => Some(d.clone()),
        (None, Some(b64)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("CloudEvent data_base64 is not base64: {e}")))?;
            Some(parse_json(&bytes, "decoded data_base64")?)
        }
    };
    if attrs.ty == CE_PUBSUB_PUBLISHED {
        let d = data.ok_or_else(|| bad("messagePublished CloudEvent without data"))?;
        return decode_pubsub(&d, Form::CloudEventStructured, Some(attrs.id));
    }
    storage_event(Form::CloudEventStructured, &attrs, data)
}

#[derive(Deserialize)]
struct PushEnvelope {
    message: PushMessage,
}

#[derive(Deserialize)]
struct PushMessage {
    #[serde(default)]
    attributes: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_legacy: Option<String>,
}

fn pubsub_kind(t: &str) -> EventKind {
    match t {
        "OBJECT_FINALIZE" => EventKind::Finalize,
        "OBJECT_DELETE" => EventKind::Delete,
        "OBJECT_ARCHIVE" => EventKind::Archive,
        "OBJECT_METADATA_UPDATE" => EventKind::MetadataUpdate,
        other => EventKind::Other(other.to_owned()),
    }
}

/// Pub/Sub envelope of a GCS notification. `ce_id`, when the envelope came as the data of an
/// Eventarc `messagePublished` `CloudEvent`, is the fallback event id.
fn decode_pubsub(v: &Value, form: Form, ce_id: Option<&str>) -> Result<StorageEvent, DecodeError> {
    let env: PushEnvelope = serde_json::from_value(v.clone())
        .map_err(|e| bad(format!("not a Pub/Sub push envelope: {e}")))?;
    let m = env.message;
    let attrs = m.attributes.unwrap_or_default();
    let attr = |k: &str| attrs.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let event_type = attr("eventType").ok_or_else(|| {
        bad("Pub/Sub message has no eventType attribute: not a Cloud Storage notification")
    })?;
    let bucket = attr("bucketId")
        .ok_or_else(|| bad("Cloud Storage notification without bucketId attribute"))?;
    let object = attr("objectId")
        .ok_or_else(|| bad("Cloud Storage notification without objectId attribute"))?;
    let generation = attr("objectGeneration")
        .map(|g| int64(&Value::from(g), "objectGeneration attribute"))
        .transpose()?;
    let id = m
        .message_id
        .or(m.message_id_legacy)
        .filter(|s| !s.is_empty())
        .or_else(|| ce_id.map(str::to_owned))
        .ok_or_else(|| bad("Pub/Sub message without messageId"))?;

    // The attributes are authoritative; a JSON_API_V1 payload must agree with them.
    if let Some(data) = m.data.as_deref().filter(|d| !d.is_empty())
        && attr("payloadFormat") == Some("JSON_API_V1")
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| bad(format!("Pub/Sub message data is not base64: {e}")))?;
        let (d, gen_data) = object_data(
            parse_json(&bytes, "Pub/Sub message data")?,
            "Pub/Sub message data",
        )?;
        for (what, a, b) in [
            ("bucket", Some(bucket), d.bucket.as_deref()),
            ("name", Some(object), d.name.as_deref()),
            ("generation", generation.as_deref(), gen_data.as_deref()),
        ] {
            if let (Some(a), Some(b)) = (a, b)
                && a != b
            {
                return Err(bad(format!(
                    "Pub/Sub data {what} {b:?} disagrees with the attributes ({a:?})"
                )));
            }
        }
    }
    Ok(StorageEvent {
        form,
        kind: pubsub_kind(event_type),
        id,
        bucket: bucket.to_owned(),
        object: object.to_owned(),
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn binary_headers(ty: &str) -> Vec<(String, String)> {
        h(&[
            ("content-type", "application/json; charset=utf-8"),
            ("ce-specversion", "1.0"),
            ("ce-id", "1096434104173400"),
            ("ce-type", ty),
            (
                "ce-source",
                "//storage.googleapis.com/projects/_/buckets/ml-bucket",
            ),
            (
                "ce-subject",
                "objects/raw_training_data/batch-7/sample_001.png",
            ),
        ])
    }

    const FINALIZED: &str = "google.cloud.storage.object.v1.finalized";

    #[test]
    fn binary_mode_with_int64_strings() {
        let ev = decode(
            &binary_headers(FINALIZED),
            &fixture("storage_object_strings.json"),
        )
        .unwrap();
        assert_eq!(
            ev,
            StorageEvent {
                form: Form::CloudEventBinary,
                kind: EventKind::Finalize,
                id: "1096434104173400".into(),
                bucket: "ml-bucket".into(),
                object: "raw_training_data/batch-7/sample_001.png".into(),
                generation: Some("1732442400123456".into()),
            }
        );
    }

    #[test]
    fn binary_mode_with_int64_numbers() {
        let mut headers = binary_headers(FINALIZED);
        headers[5].1 = "objects/raw_training_data/batch-7/sample_001.json".into();
        let ev = decode(&headers, &fixture("storage_object_numbers.json")).unwrap();
        assert_eq!(ev.generation.as_deref(), Some("1732442400123457"));
        assert_eq!(ev.object, "raw_training_data/batch-7/sample_001.json");
    }

    #[test]
    fn binary_mode_kinds() {
        let body = fixture("storage_object_strings.json");
        for (suffix, kind) in [
            ("deleted", EventKind::Delete),
            ("archived", EventKind::Archive),
            ("metadataUpdated", EventKind::MetadataUpdate),
        ] {
            let ty = format!("google.cloud.storage.object.v1.{suffix}");
            assert_eq!(decode(&binary_headers(&ty), &body).unwrap().kind, kind);
        }
        let other = decode(&binary_headers("com.example.other"), &body).unwrap();
        assert_eq!(other.kind, EventKind::Other("com.example.other".into()));
    }

    /// `objects/raw_training_data/naïve café 100%.txt` as a spec-following `CloudEvents` SDK
    /// sends it in `ce-subject`: space, `"`, `%` and non-ASCII percent-encoded (HTTP protocol
    /// binding §3.1.3.2).
    const ENCODED_SUBJECT: &str = "objects/raw_training_data/na%C3%AFve%20caf%C3%A9%20100%25.txt";
    const DECODED_NAME: &str = "raw_training_data/naïve café 100%.txt";

    #[test]
    fn binary_mode_percent_decodes_header_values_per_the_binding() {
        let mut headers = binary_headers(FINALIZED);
        headers[5].1 = ENCODED_SUBJECT.into();
        let body = serde_json::json!({"bucket": "ml-bucket", "name": DECODED_NAME}).to_string();
        let ev = decode(&headers, body.as_bytes()).unwrap();
        assert_eq!(ev.object, DECODED_NAME);
        // Without data, the decoded subject is the object name.
        assert_eq!(decode(&headers, b"{}").unwrap().object, DECODED_NAME);
        // Lower-case hex digits and needlessly encoded characters are accepted.
        headers[5].1 = "objects/raw_training_data/na%c3%afve%20caf%c3%a9%20100%25.t%78t".into();
        assert_eq!(
            decode(&headers, body.as_bytes()).unwrap().object,
            DECODED_NAME
        );
        // Every attribute is decoded, not only the subject.
        headers[2].1 = "ev%201".into();
        headers[4].1 = "//storage.googleapis.com/projects/_/buckets/ml%2Dbucket".into();
        let ev = decode(&headers, b"{}").unwrap();
        assert_eq!((ev.id.as_str(), ev.bucket.as_str()), ("ev 1", "ml-bucket"));
        // A double-quoted value (older versions of the binding) is unescaped first.
        let quoted = binary_headers(FINALIZED)
            .into_iter()
            .map(|(k, v)| {
                if k == "ce-subject" {
                    (
                        k,
                        r#""objects/raw_training_data/a \"b\" 5%25.txt""#.to_owned(),
                    )
                } else {
                    (k, v)
                }
            })
            .collect::<Vec<_>>();
        assert_eq!(
            decode(&quoted, b"{}").unwrap().object,
            r#"raw_training_data/a "b" 5%.txt"#
        );
    }

    #[test]
    fn header_values_that_do_not_decode_are_refused_by_name() {
        for (at, header, value) in [
            // An overlong encoding of a space: invalid UTF-8, which the binding says to reject.
            (5, "ce-subject", "objects/raw_training_data/%C0%A0.txt"),
            (5, "ce-subject", "objects/raw_training_data/%FF.txt"),
            (2, "ce-id", "%E2%82"),
            (5, "ce-subject", "\"objects/unterminated"),
            (5, "ce-subject", "\"objects/x\\\""),
        ] {
            let mut headers = binary_headers(FINALIZED);
            headers[at].1 = value.into();
            let e = decode(&headers, b"{}").unwrap_err();
            assert!(e.0.contains(header), "{value}: {e}");
        }
    }

    #[test]
    fn a_subject_sent_without_percent_encoding_still_matches_data_name() {
        // Senders that predate the encoding rule send the name as it is; data.name, which is
        // authoritative, then equals the subject verbatim rather than decoded.
        let mut headers = binary_headers(FINALIZED);
        headers[5].1 = "objects/raw_training_data/a%20b.txt".into();
        let body = br#"{"bucket": "ml-bucket", "name": "raw_training_data/a%20b.txt"}"#;
        assert_eq!(
            decode(&headers, body).unwrap().object,
            "raw_training_data/a%20b.txt"
        );
        // A subject that matches neither way is still an inconsistency.
        headers[5].1 = "objects/raw_training_data/a%20c.txt".into();
        assert!(decode(&headers, body).unwrap_err().0.contains("disagrees"));
    }

    #[test]
    fn binary_mode_falls_back_to_source_and_subject() {
        let ev = decode(&binary_headers(FINALIZED), b"{}").unwrap();
        assert_eq!(ev.bucket, "ml-bucket");
        assert_eq!(ev.object, "raw_training_data/batch-7/sample_001.png");
        assert_eq!(ev.generation, None);
    }

    #[test]
    fn binary_mode_errors_name_the_problem() {
        type Case = (Vec<(String, String)>, Vec<u8>, &'static str);
        let body = fixture("storage_object_strings.json");
        let cases: Vec<Case> = vec![
            (
                {
                    let mut x = binary_headers(FINALIZED);
                    x[1].1 = "0.3".into();
                    x
                },
                body.clone(),
                "specversion",
            ),
            (
                {
                    let mut x = binary_headers(FINALIZED);
                    x.retain(|(k, _)| k != "ce-id");
                    x
                },
                body.clone(),
                "id is empty",
            ),
            (
                {
                    let mut x = binary_headers(FINALIZED);
                    x[5].1 = "objects/other.png".into();
                    x
                },
                body.clone(),
                "disagrees with the CloudEvent subject",
            ),
            (
                {
                    let mut x = binary_headers(FINALIZED);
                    x[4].1 = "//storage.googleapis.com/projects/_/buckets/other".into();
                    x
                },
                body.clone(),
                "disagrees with the CloudEvent source",
            ),
            (
                {
                    let mut x = binary_headers(FINALIZED);
                    x[0].1 = "text/plain".into();
                    x
                },
                body.clone(),
                "not JSON",
            ),
            (
                binary_headers(FINALIZED),
                b"{\"name\":".to_vec(),
                "not valid JSON",
            ),
            (binary_headers(FINALIZED), b"[1,2]".to_vec(), "JSON object"),
            (
                binary_headers(FINALIZED),
                br#"{"generation": -5}"#.to_vec(),
                "non-negative int64",
            ),
            (
                binary_headers(FINALIZED),
                br#"{"generation": true}"#.to_vec(),
                "int64",
            ),
            (
                binary_headers(FINALIZED),
                br#"{"name": 5}"#.to_vec(),
                "not a storage object",
            ),
        ];
        for (headers, body, want) in cases {
            let e = decode(&headers, &body).unwrap_err();
            assert!(e.0.contains(want), "want {want:?}, got {e}");
        }
    }

    #[test]
    fn structured_mode_with_data_and_data_base64() {
        let ct = h(&[(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let ev = decode(&ct, &fixture("structured_finalized.json")).unwrap();
        assert_eq!(ev.form, Form::CloudEventStructured);
        assert_eq!(ev.kind, EventKind::Finalize);
        assert_eq!(ev.object, "raw_training_data/batch-7/sample_001.png");
        assert_eq!(ev.generation.as_deref(), Some("1732442400123456"));
        let ev = decode(&ct, &fixture("structured_finalized_base64.json")).unwrap();
        assert_eq!(ev.id, "1096434104173401");
        assert_eq!(ev.bucket, "ml-bucket");
        // A structured event posted as plain JSON is still recognised.
        let ev = decode(
            &h(&[("content-type", "application/json")]),
            &fixture("structured_finalized.json"),
        )
        .unwrap();
        assert_eq!(ev.form, Form::CloudEventStructured);
    }

    #[test]
    fn structured_message_published_wraps_a_notification() {
        let ct = h(&[("content-type", "application/cloudevents+json")]);
        let ev = decode(&ct, &fixture("structured_message_published.json")).unwrap();
        assert_eq!(ev.form, Form::CloudEventStructured);
        assert_eq!(ev.kind, EventKind::Finalize);
        assert_eq!(ev.id, "2070443601311540");
        assert_eq!(ev.object, "raw_training_data/batch-7/sample_001.png");
    }

    #[test]
    fn structured_mode_errors() {
        let ct = h(&[("content-type", "application/cloudevents+json")]);
        let mut v: Value = serde_json::from_slice(&fixture("structured_finalized.json")).unwrap();
        v["data_base64"] = Value::from("AAAA");
        assert!(
            decode(&ct, v.to_string().as_bytes())
                .unwrap_err()
                .0
                .contains("both")
        );
        let mut v: Value = serde_json::from_slice(&fixture("structured_finalized.json")).unwrap();
        v["id"] = Value::from(5);
        assert!(
            decode(&ct, v.to_string().as_bytes())
                .unwrap_err()
                .0
                .contains("must be a string")
        );
        let mut v: Value =
            serde_json::from_slice(&fixture("structured_finalized_base64.json")).unwrap();
        v["data_base64"] = Value::from("!!!");
        assert!(
            decode(&ct, v.to_string().as_bytes())
                .unwrap_err()
                .0
                .contains("base64")
        );
        let batch = h(&[("content-type", "application/cloudevents-batch+json")]);
        assert!(decode(&batch, b"[]").unwrap_err().0.contains("batch"));
    }

    #[test]
    fn pubsub_push_envelopes() {
        let ct = h(&[("content-type", "application/json")]);
        let ev = decode(&ct, &fixture("pubsub_finalize.json")).unwrap();
        assert_eq!(
            ev,
            StorageEvent {
                form: Form::PubSubPush,
                kind: EventKind::Finalize,
                id: "2070443601311540".into(),
                bucket: "ml-bucket".into(),
                object: "raw_training_data/batch-7/sample_001.png".into(),
                generation: Some("1732442400123456".into()),
            }
        );
        let ev = decode(&ct, &fixture("pubsub_finalize_no_payload.json")).unwrap();
        assert_eq!(ev.object, "labels/sample_001.json");
        assert_eq!(
            decode(&ct, &fixture("pubsub_delete.json")).unwrap().kind,
            EventKind::Delete
        );
        assert_eq!(
            decode(&ct, &fixture("pubsub_metadata_update.json"))
                .unwrap()
                .kind,
            EventKind::MetadataUpdate
        );
        // No content type at all (Pub/Sub sends application/json, but be lenient).
        assert!(decode(&[], &fixture("pubsub_finalize.json")).is_ok());
    }

    #[test]
    fn pubsub_errors_name_the_problem() {
        let base: Value = serde_json::from_slice(&fixture("pubsub_finalize.json")).unwrap();
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            decode(&[], v.to_string().as_bytes()).unwrap_err().0
        };
        assert!(
            mutate(&|v| {
                v["message"]["attributes"]
                    .as_object_mut()
                    .unwrap()
                    .remove("eventType");
            })
            .contains("eventType")
        );
        assert!(
            mutate(&|v| {
                v["message"]["attributes"]
                    .as_object_mut()
                    .unwrap()
                    .remove("bucketId");
            })
            .contains("bucketId")
        );
        assert!(
            mutate(&|v| {
                v["message"]["attributes"]
                    .as_object_mut()
                    .unwrap()
                    .remove("objectId");
            })
            .contains("objectId")
        );
        assert!(
            mutate(&|v| v["message"]["attributes"]["objectGeneration"] = Value::from("12x"))
                .contains("objectGeneration")
        );
        assert!(
            mutate(&|v| v["message"]["attributes"]["objectId"] =
                Value::from("raw_training_data/other.png"))
            .contains("disagrees")
        );
        assert!(mutate(&|v| v["message"]["data"] = Value::from("%%%")).contains("base64"));
        assert!(
            mutate(&|v| {
                v["message"].as_object_mut().unwrap().remove("messageId");
                v["message"].as_object_mut().unwrap().remove("message_id");
            })
            .contains("messageId")
        );
        assert!(mutate(&|v| v["message"] = Value::from("x")).contains("Pub/Sub push envelope"));
        assert!(
            mutate(&|v| v["message"]["attributes"]["bucketId"] = Value::from(3))
                .contains("Pub/Sub push envelope")
        );
    }

    #[test]
    fn control_characters_and_overlong_names_are_rejected() {
        let ct = h(&[("content-type", "application/cloudevents+json")]);
        let mut v: Value = serde_json::from_slice(&fixture("structured_finalized.json")).unwrap();
        v["id"] = Value::from("a\u{0}b");
        assert!(
            decode(&ct, v.to_string().as_bytes())
                .unwrap_err()
                .0
                .contains("control")
        );
        let mut v: Value = serde_json::from_slice(&fixture("structured_finalized.json")).unwrap();
        let long = format!("raw_training_data/{}.png", "x".repeat(MAX_NAME_BYTES));
        v["data"]["name"] = Value::from(long.clone());
        v["subject"] = Value::from(format!("objects/{long}"));
        assert!(
            decode(&ct, v.to_string().as_bytes())
                .unwrap_err()
                .0
                .contains("longer")
        );
    }

    /// GCS allows any Unicode in a name but CR and LF (and the pipeline trains such names):
    /// a tab, DEL or a C1 control character is a name like another, in every form.
    #[test]
    fn names_with_tab_del_or_c1_characters_are_accepted_as_gcs_allows_them() {
        let ct = h(&[("content-type", "application/cloudevents+json")]);
        for name in [
            "raw_training_data/a\tb.txt",
            "raw_training_data/del\u{7f}.txt",
            "raw_training_data/c1\u{85}next-line.txt",
            "raw_training_data/c1\u{9f}.txt",
            "raw_training_data/\u{1b}[31mred.txt",
        ] {
            let mut v: Value =
                serde_json::from_slice(&fixture("structured_finalized.json")).unwrap();
            v["data"]["name"] = Value::from(name);
            v["subject"] = Value::from(format!("objects/{name}"));
            let ev =
                decode(&ct, v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert_eq!(ev.object, name);
            // Binary mode: the subject percent-encoded as the binding says.
            let mut headers = binary_headers(FINALIZED);
            let encoded: String =
                percent_encoding::utf8_percent_encode(name, percent_encoding::CONTROLS).collect();
            headers[5].1 = format!("objects/{encoded}");
            let body = serde_json::json!({"bucket": "ml-bucket", "name": name}).to_string();
            let ev = decode(&headers, body.as_bytes())
                .unwrap_or_else(|e| panic!("binary {name:?}: {e}"));
            assert_eq!(ev.object, name);
        }
        // What GCS itself refuses is refused: CR and LF; NUL cannot reach the job either.
        for name in [
            "raw_training_data/a\rb.txt",
            "raw_training_data/a\nb.txt",
            "raw_training_data/a\u{0}b.txt",
        ] {
            let mut v: Value =
                serde_json::from_slice(&fixture("structured_finalized.json")).unwrap();
            v["data"]["name"] = Value::from(name);
            v["subject"] = Value::from(format!("objects/{name}"));
            let e = decode(&ct, v.to_string().as_bytes()).unwrap_err();
            assert!(e.0.contains("object name"), "{name:?}: {e}");
        }
        // Event ids and bucket names keep the strict rule (GCS bucket names are [a-z0-9-_.]).
        let mut v: Value = serde_json::from_slice(&fixture("structured_finalized.json")).unwrap();
        v["id"] = Value::from("a\tb");
        assert!(
            decode(&ct, v.to_string().as_bytes())
                .unwrap_err()
                .0
                .contains("event id")
        );
    }

    #[test]
    fn unknown_forms_are_rejected() {
        let e = decode(&[], br#"{"hello":"world"}"#).unwrap_err();
        assert!(e.0.contains("not a storage event"), "{e}");
        assert!(decode(&[], b"").unwrap_err().0.contains("not valid JSON"));
        assert!(
            decode(&[], b"\"str\"")
                .unwrap_err()
                .0
                .contains("JSON object")
        );
        let deep = "[".repeat(100_000);
        assert!(decode(&[], deep.as_bytes()).is_err());
    }
}
