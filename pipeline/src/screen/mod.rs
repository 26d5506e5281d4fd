//! Personal data screening before anything is written (PERSONAL_DATA).
//!
//! Every sample read is screened on the rayon worker that converts it, before its line is
//! made: its raw text and its label (a `.txt` label as text; a `.json` label's strings, numbers
//! and keys) are searched by the built-in detectors of [`detect`] (e-mail addresses, phone
//! numbers, Luhn-checked card numbers, mod-97-checked IBANs, IP addresses, and well-known
//! secret formats), which need no cloud account. What a hit does is the [`Mode`]:
//!
//! * `redact` (the default): each value is replaced by a typed placeholder such as
//!   `[EMAIL_ADDRESS]` in what the converter reads, so the written line, the line store and
//!   an evaluation row made from it hold the placeholder; the sample trains.
//! * `reject`: the sample is rejected as `personal_data`, the reason naming the kinds found.
//! * `off`: nothing is screened.
//!
//! The content digest (delta, split, duplicates, the evaluation set) is the digest of the
//! sample as uploaded, so screening changes no sample's identity. Nothing personal is logged,
//! written to a reject or a record: only kinds and counts ([`Tally`]).
//!
//! Media (images, PDFs, audio, video) are never read, so never screened; object names are not
//! screened either.

mod detect;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::convert::{Loaded, Uris};
use crate::sample::{Category, LabelFormat, Reject, Sample};
pub use detect::{Hit, iban_valid, luhn};

/// A kind of personal data or secret, named as Google Sensitive Data Protection names its info
/// type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    EmailAddress,
    PhoneNumber,
    CreditCardNumber,
    IbanCode,
    IpAddress,
    AwsCredentials,
    GcpApiKey,
    AuthToken,
    EncryptionKey,
    JsonWebToken,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::EmailAddress,
        Kind::PhoneNumber,
        Kind::CreditCardNumber,
        Kind::IbanCode,
        Kind::IpAddress,
        Kind::AwsCredentials,
        Kind::GcpApiKey,
        Kind::AuthToken,
        Kind::EncryptionKey,
        Kind::JsonWebToken,
    ];

    /// The name in rejects, records and reports (`EMAIL_ADDRESS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::EmailAddress => "EMAIL_ADDRESS",
            Kind::PhoneNumber => "PHONE_NUMBER",
            Kind::CreditCardNumber => "CREDIT_CARD_NUMBER",
            Kind::IbanCode => "IBAN_CODE",
            Kind::IpAddress => "IP_ADDRESS",
            Kind::AwsCredentials => "AWS_CREDENTIALS",
            Kind::GcpApiKey => "GCP_API_KEY",
            Kind::AuthToken => "AUTH_TOKEN",
            Kind::EncryptionKey => "ENCRYPTION_KEY",
            Kind::JsonWebToken => "JSON_WEB_TOKEN",
        }
    }

    /// What replaces a value of this kind (`[EMAIL_ADDRESS]`).
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::EmailAddress => "[EMAIL_ADDRESS]",
            Kind::PhoneNumber => "[PHONE_NUMBER]",
            Kind::CreditCardNumber => "[CREDIT_CARD_NUMBER]",
            Kind::IbanCode => "[IBAN_CODE]",
            Kind::IpAddress => "[IP_ADDRESS]",
            Kind::AwsCredentials => "[AWS_CREDENTIALS]",
            Kind::GcpApiKey => "[GCP_API_KEY]",
            Kind::AuthToken => "[AUTH_TOKEN]",
            Kind::EncryptionKey => "[ENCRYPTION_KEY]",
            Kind::JsonWebToken => "[JSON_WEB_TOKEN]",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    pub fn insert(&mut self, k: Kind) {
        self.0 |= k.bit();
    }
    pub fn contains(self, k: Kind) -> bool {
        self.0 & k.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    #[must_use]
    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl FromIterator<Kind> for Kinds {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        let mut s = Kinds::default();
        for k in iter {
            s.insert(k);
        }
        s
    }
}

/// `EMAIL_ADDRESS, PHONE_NUMBER`.
impl std::fmt::Display for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, k) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(k.as_str())?;
        }
        Ok(())
    }
}

/// What a hit does (PERSONAL_DATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each value is replaced by its kind's placeholder; the sample trains.
    #[default]
    Redact,
    /// The sample is rejected as `personal_data`.
    Reject,
    /// Nothing is screened.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Redact => "redact",
            Mode::Reject => "reject",
            Mode::Off => "off",
        }
    }
}

/// The built-in detectors, compiled once per process.
pub struct Screener {
    detectors: detect::Detectors,
}

impl Screener {
    /// The process's screener (its patterns are compiled on first use).
    pub fn shared() -> &'static Screener {
        static SCREENER: OnceLock<Screener> = OnceLock::new();
        SCREENER.get_or_init(|| Screener {
            detectors: detect::Detectors::new(),
        })
    }

    /// Every value found in `text`, in order, none overlapping.
    pub fn find(&self, text: &str) -> Vec<Hit> {
        self.detectors.find(text)
    }

    /// The kinds found in `text`.
    pub fn kinds(&self, text: &str) -> Kinds {
        self.find(text).into_iter().map(|h| h.kind).collect()
    }

    /// `text` with every value replaced by its placeholder, and the kinds replaced.
    pub fn redact<'a>(&self, text: &'a str) -> (Cow<'a, str>, Kinds) {
        let hits = self.find(text);
        if hits.is_empty() {
            return (Cow::Borrowed(text), Kinds::default());
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut kinds = Kinds::default();
        for h in hits {
            out.push_str(&text[at..h.start]);
            out.push_str(h.kind.placeholder());
            kinds.insert(h.kind);
            at = h.end;
        }
        out.push_str(&text[at..]);
        (Cow::Owned(out), kinds)
    }

    /// The kinds in a JSON label's text: its strings, numbers and keys.
    pub fn json_kinds(&self, text: &str) -> Option<Kinds> {
        if self.json_clean(text) {
            return Some(Kinds::default());
        }
        let mut value: Value = serde_json::from_str(text).ok()?;
        Some(self.redact_value(&mut value, false))
    }

    /// Without an escape, a JSON text's strings are its own substrings, and what stands beside
    /// them (quotes, `:`, `,`, brackets) stands for the string's ends: no candidate in the
    /// whole text means none in any string.
    fn json_clean(&self, text: &str) -> bool {
        !text.contains('\\') && !self.detectors.maybe(text)
    }

    /// Finds (and with `replace`, redacts) the values in a JSON value's strings, numbers and
    /// keys.
    fn redact_value(&self, value: &mut Value, replace: bool) -> Kinds {
        let mut kinds = Kinds::default();
        match value {
            Value::String(s) => {
                let (redacted, found) = self.redact(s);
                if let (true, Cow::Owned(r)) = (replace, redacted) {
                    *s = r;
                }
                kinds = found;
            }
            Value::Number(n) => {
                let text = n.to_string();
                let (redacted, found) = self.redact(&text);
                if let (true, Cow::Owned(r)) = (replace, redacted) {
                    *value = Value::String(r);
                }
                kinds = found;
            }
            Value::Array(items) => {
                for v in items {
                    kinds = kinds.union(self.redact_value(v, replace));
                }
            }
            Value::Object(map) => {
                let keyed = map.keys().any(|k| !self.find(k).is_empty());
                if keyed {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        let (name, found) = self.redact(&k);
                        kinds = kinds.union(found);
                        let name = if replace { name.into_owned() } else { k };
                        map.insert(name, v);
                    }
                }
                for v in map.values_mut() {
                    kinds = kinds.union(self.redact_value(v, replace));
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
        kinds
    }
}

/// What screening found in one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    pub raw: Kinds,
    pub label: Kinds,
}

impl Found {
    pub fn kinds(self) -> Kinds {
        self.raw.union(self.label)
    }
}

/// Screens one loaded sample by `mode`: what was found, and the sample as the converter
/// should read it (redacted when `mode` is `redact`), or its reject (`reject`).
pub fn sample(
    mode: Mode,
    sample: &Sample,
    uris: &Uris,
    loaded: Loaded,
) -> (Result<Loaded, Reject>, Found) {
    if mode == Mode::Off {
        return (Ok(loaded), Found::default());
    }
    let screener = Screener::shared();
    let replace = mode == Mode::Redact;
    let mut found = Found::default();
    let mut out = loaded;
    // A raw text that is not UTF-8 is rejected by the converter (`not_utf8`).
    let mut raw_text = None;
    if let Some(Ok(text)) = out.raw_text.as_deref().map(std::str::from_utf8) {
        let (redacted, kinds) = screener.redact(text);
        found.raw = kinds;
        if let (true, Cow::Owned(r)) = (replace, redacted) {
            raw_text = Some(bytes::Bytes::from(r));
        }
    }
    if raw_text.is_some() {
        out.raw_text = raw_text;
    }
    let label = out.label.clone();
    if let Ok(text) = std::str::from_utf8(&label) {
        let bare = text.strip_prefix('\u{feff}').unwrap_or(text);
        let parsed = match sample.label.format {
            LabelFormat::Json if screener.json_clean(bare) => Some(None),
            LabelFormat::Json => serde_json::from_str::<Value>(bare).ok().map(Some),
            LabelFormat::Text => None,
        };
        match parsed {
            Some(None) => {}
            Some(Some(mut value)) => {
                found.label = screener.redact_value(&mut value, replace);
                if replace && !found.label.is_empty() {
                    let bytes = serde_json::to_vec(&value).expect("a JSON value serialises");
                    out.label = bytes::Bytes::from(bytes);
                }
            }
            // A `.txt` label, or a `.json` one that does not parse (the converter rejects
            // it): screened as text.
            None => {
                let (redacted, kinds) = screener.redact(text);
                found.label = kinds;
                if let (true, Cow::Owned(r)) = (replace, redacted) {
                    out.label = bytes::Bytes::from(r);
                }
            }
        }
    }
    if mode == Mode::Reject && !found.kinds().is_empty() {
        let mut objects = Vec::with_capacity(2);
        let mut places = Vec::with_capacity(2);
        if !found.raw.is_empty() {
            objects.push(uris.raw.clone());
            places.push("the raw text");
        }
        if !found.label.is_empty() {
            objects.push(uris.label.clone());
            places.push("the label");
        }
        let reject = Reject {
            key: sample.key.clone(),
            objects,
            category: Category::PersonalData,
            reason: format!(
                "personal data in {} ({}); PERSONAL_DATA=reject keeps it out of training",
                places.join(" and "),
                found.kinds()
            ),
        };
        return (Err(reject), found);
    }
    (Ok(out), found)
}

/// What a build's screening found, for the run record: counts only, never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// PERSONAL_DATA.
    pub mode: Mode,
    /// Samples read and screened in this run (lines reused from the last run were screened
    /// when they were made).
    pub screened: u64,
    /// Samples whose values were replaced by placeholders.
    pub redacted: u64,
    /// Samples rejected as `personal_data`.
    pub rejected: u64,
    /// Per kind, the samples it was found in.
    pub kinds: BTreeMap<Kind, u64>,
}

impl Tally {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// Counts one sample screened.
    pub fn add(&mut self, kinds: Kinds, rejected: bool) {
        self.screened += 1;
        if kinds.is_empty() {
            return;
        }
        if rejected {
            self.rejected += 1;
        } else {
            self.redacted += 1;
        }
        for k in kinds.iter() {
            *self.kinds.entry(k).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_of(text: &str) -> Vec<Kind> {
        Screener::shared()
            .find(text)
            .iter()
            .map(|h| h.kind)
            .collect()
    }

    /// Planted values of every kind, each alone in a sentence, are found as that kind and
    /// nothing else.
    #[test]
    fn every_kind_is_found() {
        let cases: &[(&str, Kind)] = &[
            ("alice.smith+tag@example.co.uk", Kind::EmailAddress),
            ("Bob_99@mail.example.org", Kind::EmailAddress),
            ("+44 20 7946 0958", Kind::PhoneNumber),
            ("+1 212 555 0142", Kind::PhoneNumber),
            ("+49 30 1234567", Kind::PhoneNumber),
            ("+33 1 23 45 67 89", Kind::PhoneNumber),
            ("(212) 555-0142", Kind::PhoneNumber),
            ("212-555-0142", Kind::PhoneNumber),
            ("212.555.0142", Kind::PhoneNumber),
            ("020 7946 0958", Kind::PhoneNumber),
            ("01 23 45 67 89", Kind::PhoneNumber),
            ("030/1234567", Kind::PhoneNumber),
            ("4111 1111 1111 1111", Kind::CreditCardNumber),
            ("5555-5555-5555-4444", Kind::CreditCardNumber),
            ("378282246310005", Kind::CreditCardNumber),
            ("6011111111111117", Kind::CreditCardNumber),
            ("2223003122003222", Kind::CreditCardNumber),
            ("DE89 3704 0044 0532 0130 00", Kind::IbanCode),
            ("GB82WEST12345698765432", Kind::IbanCode),
            ("FR1420041010050500013M02606", Kind::IbanCode),
            ("NL91ABNA0417164300", Kind::IbanCode),
            ("192.168.1.20", Kind::IpAddress),
            ("2001:db8::8a2e:370:7334", Kind::IpAddress),
            ("fe80::1ff:fe23:4567:890a", Kind::IpAddress),
            ("AKIAIOSFODNN7EXAMPLE", Kind::AwsCredentials),
            ("AIzaSyA-1234567890abcdefghijklmnopqrstu", Kind::GcpApiKey),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", Kind::AuthToken),
            ("xoxb-123456789012-abcdefghijkl", Kind::AuthToken),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nq4l5Xj\n-----END RSA PRIVATE KEY-----",
                Kind::EncryptionKey,
            ),
            (
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                Kind::JsonWebToken,
            ),
        ];
        for &(value, kind) in cases {
            let text = format!("Here: {value}. Thanks");
            let hits = Screener::shared().find(&text);
            assert_eq!(
                hits.iter().map(|h| h.kind).collect::<Vec<_>>(),
                [kind],
                "{value}"
            );
            assert_eq!(&text[hits[0].start..hits[0].end], value);
        }
    }

    #[test]
    fn checksums_and_ranges_decide() {
        for text in [
            // Luhn fails.
            "card 4111 1111 1111 1112",
            // mod-97 fails; a country's length is wrong.
            "iban DE89 3704 0044 0532 0130 01",
            "iban DE89 3704 0044 0532 0130",
            // Octets over 255, leading zeros, the loopback's few digits.
            "ip 999.1.1.1 and 10.01.2.3 and ::1",
            // A NANP area code starts with 2-9.
            "id 123-456-7890",
        ] {
            assert_eq!(kinds_of(text), [], "{text}");
        }
        assert!(luhn("79927398713"));
        assert!(!luhn("79927398710"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("GB82WEST12345698765433"));
    }

    /// Numbers of ordinary prose are not personal data.
    #[test]
    fn prose_numbers_are_not_flagged() {
        for text in [
            "The meeting is on 2024-01-15 at 10:30, room 204.",
            "Order #123456 shipped; invoice 2024-0042, total 1,234.56 EUR.",
            "Call 911 or dial 555-0142 from a hotel phone.",
            "Version 1.2.3 released; see RFC 5322 section 3.4.1.",
            "Pi is 3.14159265358979323846 and e is 2.718281828459045.",
            "The ISBN is 978-3-16-148410-0.",
            "Timestamps 12:30:45 and 23:59:59; C++ std::vector<int> and a::b.",
            "Product ids 1234567890123 and 9876543210, batch 20240115.",
            "Dates 07.05.2024 14:30 and 07/05/2024 09:15.",
            "Population 8 000 000 000 and 1 200 300 people.",
            "MAC 00:1a:2b:3c:4d:5e, hash deadbeef, SHA 9f86d081884c7d65.",
            "user at example dot com; @handle; foo@bar",
        ] {
            assert_eq!(kinds_of(text), [], "{text}");
        }
    }

    #[test]
    fn redaction_puts_typed_placeholders() {
        let (out, kinds) = Screener::shared()
            .redact("Mail alice@example.com or call +44 20 7946 0958, card 4111-1111-1111-1111.");
        assert_eq!(
            out,
            "Mail [EMAIL_ADDRESS] or call [PHONE_NUMBER], card [CREDIT_CARD_NUMBER]."
        );
        assert_eq!(
            kinds.to_string(),
            "EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD_NUMBER"
        );
        // Redacting again finds nothing: placeholders are no values.
        let (again, none) = Screener::shared().redact(&out);
        assert_eq!(again, out);
        assert!(none.is_empty());
    }

    fn text_sample(format: LabelFormat) -> (Sample, Uris) {
        use crate::sample::{LabelFile, RawFile};
        use crate::storage::ObjectMeta;
        let meta = |key: &str| ObjectMeta {
            key: key.into(),
            size: 1,
            generation: "1".into(),
            checksum: None,
        };
        let sample = Sample {
            key: "k".into(),
            raw: RawFile {
                meta: meta("raw/k.txt"),
                modality: crate::modality::Modality::Text,
                ext: "txt".into(),
                gzip: false,
            },
            label: LabelFile {
                meta: meta("raw/k.json"),
                format,
                gzip: false,
            },
        };
        let uris = Uris {
            raw: "mem://b/raw/k.txt".into(),
            label: "mem://b/raw/k.json".into(),
        };
        (sample, uris)
    }

    fn loaded(raw: &str, label: &str) -> Loaded {
        Loaded {
            raw_text: Some(bytes::Bytes::from(raw.to_owned())),
            label: bytes::Bytes::from(label.to_owned()),
        }
    }

    #[test]
    fn a_json_label_is_redacted_in_its_strings_numbers_and_keys() {
        let (s, u) = text_sample(LabelFormat::Json);
        let label = r#"{"answer": "write to bob@example.com", "card": 4111111111111111, "alice@example.com": "x", "n": 42, "escaped": "tel\n+44 20 7946 0958"}"#;
        let (got, found) = sample(Mode::Redact, &s, &u, loaded("from 10.0.0.1", label));
        let got = got.unwrap();
        assert_eq!(got.raw_text.as_deref(), Some(&b"from [IP_ADDRESS]"[..]));
        let value: Value = serde_json::from_slice(&got.label).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "answer": "write to [EMAIL_ADDRESS]",
                "card": "[CREDIT_CARD_NUMBER]",
                "[EMAIL_ADDRESS]": "x",
                "n": 42,
                "escaped": "tel\n[PHONE_NUMBER]",
            })
        );
        assert_eq!(found.raw.to_string(), "IP_ADDRESS");
        assert_eq!(
            found.label.to_string(),
            "EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD_NUMBER"
        );
    }

    #[test]
    fn a_clean_sample_is_left_byte_for_byte() {
        let (s, u) = text_sample(LabelFormat::Json);
        let label = "{\"b\": 1,   \"a\": \"2024-01-15\"}";
        let (got, found) = sample(Mode::Redact, &s, &u, loaded("Hello, 12:30", label));
        let got = got.unwrap();
        assert_eq!(&got.label[..], label.as_bytes());
        assert_eq!(got.raw_text.as_deref(), Some(&b"Hello, 12:30"[..]));
        assert_eq!(found, Found::default());
    }

    #[test]
    fn reject_names_the_kinds_and_objects_never_the_values() {
        let (s, u) = text_sample(LabelFormat::Text);
        let (got, found) = sample(
            Mode::Reject,
            &s,
            &u,
            loaded("key AKIAIOSFODNN7EXAMPLE", "mail carol@example.net"),
        );
        let r = got.unwrap_err();
        assert_eq!(r.category, Category::PersonalData);
        assert_eq!(r.objects, [u.raw.clone(), u.label.clone()]);
        assert_eq!(
            r.reason,
            "personal data in the raw text and the label (EMAIL_ADDRESS, AWS_CREDENTIALS); PERSONAL_DATA=reject keeps it out of training"
        );
        assert!(!r.reason.contains("carol") && !r.reason.contains("AKIA"));
        assert_eq!(found.kinds().iter().count(), 2);
        // Off: nothing is looked at.
        let (got, found) = sample(Mode::Off, &s, &u, loaded("carol@example.net", "x"));
        assert_eq!(
            got.unwrap().raw_text.as_deref(),
            Some(&b"carol@example.net"[..])
        );
        assert!(found.kinds().is_empty());
    }

    #[test]
    fn the_tally_counts_samples_per_kind() {
        let mut t = Tally::new(Mode::Redact);
        t.add(
            [Kind::EmailAddress, Kind::PhoneNumber]
                .into_iter()
                .collect(),
            false,
        );
        t.add([Kind::EmailAddress].into_iter().collect(), false);
        t.add(Kinds::default(), false);
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({
                "mode": "redact", "screened": 3, "redacted": 2, "rejected": 0,
                "kinds": {"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1},
            })
        );
    }
}
