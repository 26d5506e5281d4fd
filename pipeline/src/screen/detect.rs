//! The built-in detectors: one pattern per kind of personal data or secret, found in one pass of
//! a [`RegexSet`] over a text, then each candidate checked in code (checksums, lengths, ranges,
//! what stands beside it), so that a number in ordinary prose is not taken for a phone number
//! or a card.
//!
//! | kind | what is found | checked in code |
//! | --- | --- | --- |
//! | `EMAIL_ADDRESS` | `local@domain.tld` | — |
//! | `PHONE_NUMBER` | `+CC …` (8–15 digits), North American `(212) 555-0142`, `212-555-0142`, `212.555.0142`, and national numbers that start with a trunk 0 and have separators (`020 7946 0958`, `01 23 45 67 89`, `030/1234567`) | digit counts; NANP area and exchange codes start with 2–9 |
//! | `CREDIT_CARD_NUMBER` | 13–19 digits, whole or grouped as cards are printed (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4) by spaces or dashes | Luhn; a card network's first digits (2221–2720, 3, 4, 5, 6) |
//! | `IBAN_CODE` | country code, check digits, account, optionally in groups of four | the country's length; ISO 7064 mod-97 |
//! | `IP_ADDRESS` | dotted IPv4, IPv6 | each octet ≤ 255 without leading zeros; IPv6 parses, with at least 4 hex digits (not `::1`) |
//! | `AWS_CREDENTIALS` | AWS access key ids (`AKIA`, `ASIA`, `ABIA`, `ACCA` + 16) | — |
//! | `GCP_API_KEY` | Google API keys (`AIza` + 35) | — |
//! | `AUTH_TOKEN` | GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), Slack tokens (`xoxb-`, `xoxp-`, …) | — |
//! | `ENCRYPTION_KEY` | PEM private key blocks (`-----BEGIN … PRIVATE KEY-----` to its end, or to the end of its body when cut) | — |
//! | `JSON_WEB_TOKEN` | `eyJ….eyJ….…` | the header decodes to a JSON object with `alg` |
//!
//! The names are Google Sensitive Data Protection's info type names for the same things.
//! Every candidate must stand alone: no letter, digit or `_` right before or after it (and for
//! numbers, no `.`, `,`, `-` or `/` joining it to more digits).

use base64::Engine;
use regex::{Regex, RegexSet};

use super::Kind;

/// A detector: its kind, its pattern, and the check of a candidate.
struct Detector {
    kind: Kind,
    pattern: &'static str,
    /// Numbers must not be joined to more digits by `.`, `,`, `-` or `/`.
    numeric: bool,
    /// The candidate's length that holds, or `None` when it is no such value.
    check: fn(&str) -> Option<usize>,
}

const DETECTORS: &[Detector] = &[
    // Secrets first: where candidates overlap, the earlier detector wins a tie.
    Detector {
        kind: Kind::EncryptionKey,
        pattern: r"-----BEGIN[A-Z ]{0,40} PRIVATE KEY(?: BLOCK)?-----(?:(?s:.)*?-----END[A-Z ]{0,40} PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s]*)",
        numeric: false,
        check: whole,
    },
    Detector {
        kind: Kind::JsonWebToken,
        pattern: r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",
        numeric: false,
        check: jwt,
    },
    Detector {
        kind: Kind::AwsCredentials,
        pattern: r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",
        numeric: false,
        check: whole,
    },
    Detector {
        kind: Kind::GcpApiKey,
        pattern: r"AIza[0-9A-Za-z_\-]{35}",
        numeric: false,
        check: whole,
    },
    Detector {
        kind: Kind::AuthToken,
        pattern: r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}|xox[abposr]-[0-9A-Za-z\-]{10,250}",
        numeric: false,
        check: whole,
    },
    Detector {
        kind: Kind::EmailAddress,
        pattern: r"(?i)[a-z0-9][a-z0-9._%+\-]{0,63}@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}",
        numeric: false,
        check: whole,
    },
    Detector {
        kind: Kind::IbanCode,
        pattern: r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        numeric: false,
        check: iban,
    },
    Detector {
        kind: Kind::CreditCardNumber,
        pattern: r"[0-9](?:[ \-]?[0-9]){12,18}",
        numeric: true,
        check: card,
    },
    Detector {
        kind: Kind::IpAddress,
        pattern: r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}",
        numeric: true,
        check: ipv4,
    },
    Detector {
        kind: Kind::IpAddress,
        pattern: r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}",
        numeric: false,
        check: ipv6,
    },
    Detector {
        kind: Kind::PhoneNumber,
        pattern: r"\+[0-9]{1,3}(?:[ .\-]?\(?[0-9]{1,5}\)?){2,6}|(?:1[ .\-])?\(?[2-9][0-9]{2}\)?[ .\-]?[2-9][0-9]{2}[ .\-][0-9]{4}|0[1-9][0-9]{0,4}(?:[ .\-/][0-9]{2,8}){1,4}",
        numeric: true,
        check: phone,
    },
];

/// One value found: its kind and its byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// The detectors, compiled once.
pub(super) struct Detectors {
    set: RegexSet,
    each: Vec<Regex>,
}

impl Detectors {
    pub(super) fn new() -> Self {
        let patterns: Vec<&str> = DETECTORS.iter().map(|d| d.pattern).collect();
        Self {
            set: RegexSet::new(&patterns).expect("the detectors' patterns compile"),
            each: patterns
                .iter()
                .map(|p| Regex::new(p).expect("a detector's pattern compiles"))
                .collect(),
        }
    }

    /// Whether any detector's pattern matches somewhere (a candidate, not yet checked).
    pub(super) fn maybe(&self, text: &str) -> bool {
        self.set.is_match(text)
    }

    /// Every checked value in `text`, in order, none overlapping (where two overlap, the one
    /// that starts first wins, then the longer, then the earlier detector).
    pub(super) fn find(&self, text: &str) -> Vec<Hit> {
        let matched = self.set.matches(text);
        if !matched.matched_any() {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for i in &matched {
            let d = &DETECTORS[i];
            let mut at = 0;
            while let Some(m) = self.each[i].find_at(text, at) {
                let start = m.start();
                match (d.check)(m.as_str()) {
                    Some(len) if alone(text, start, start + len, d.numeric) => {
                        hits.push((
                            Hit {
                                kind: d.kind,
                                start,
                                end: start + len,
                            },
                            i,
                        ));
                        at = start + len;
                    }
                    // Not a value here; one may start further in.
                    _ => at = next_char(text, start),
                }
                if at >= text.len() {
                    break;
                }
            }
        }
        hits.sort_by_key(|&(h, i)| (h.start, std::cmp::Reverse(h.end), i));
        let mut out: Vec<Hit> = Vec::with_capacity(hits.len());
        for (h, _) in hits {
            if out.last().is_none_or(|last| h.start >= last.end) {
                out.push(h);
            }
        }
        out
    }
}

/// The byte index of the character after the one at `i`.
fn next_char(text: &str, i: usize) -> usize {
    text[i..]
        .chars()
        .next()
        .map_or(text.len(), |c| i + c.len_utf8())
}

fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `text[start..end]` stands alone: no word character beside it, and for a number no
/// `.`, `,`, `-` or `/` joining it to more digits.
fn alone(text: &str, start: usize, end: usize, numeric: bool) -> bool {
    let mut before = text[..start].chars().rev();
    let mut after = text[end..].chars();
    let (b, a) = (before.next(), after.next());
    if b.is_some_and(word) || a.is_some_and(word) {
        return false;
    }
    if numeric {
        // `12.05.2024 14:30`, `1,234`, `v1.2.3.4`: a number goes on past the candidate.
        let joins = |c: Option<char>, next: Option<char>| {
            c.is_some_and(|c| matches!(c, '.' | ',' | '-' | '/' | '+' | ':'))
                && next.is_some_and(|n| n.is_ascii_digit())
        };
        // Nor does one start inside a run of digit groups (`0044 0532 0130 01`).
        let b2 = before.next();
        if joins(b, b2) || (b == Some(' ') && b2.is_some_and(|c| c.is_ascii_digit())) {
            return false;
        }
        if joins(a, after.next()) {
            return false;
        }
    }
    true
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "a detector's check: every one has this signature"
)]
fn whole(candidate: &str) -> Option<usize> {
    Some(candidate.len())
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(|c| c.to_digit(10))
}

/// The Luhn check of a digit string.
pub fn luhn(s: &str) -> bool {
    let ds: Vec<u32> = digits(s).collect();
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    !ds.is_empty() && sum.is_multiple_of(10)
}

fn card(candidate: &str) -> Option<usize> {
    // One kind of separator at most.
    let spaces = candidate.contains(' ');
    let dashes = candidate.contains('-');
    if spaces && dashes {
        return None;
    }
    // Grouped as cards are printed: 4-4-4-4, 4-4-4-4-3, 4-6-5 (Amex), 4-6-4 (Diners).
    if spaces || dashes {
        let groups: Vec<usize> = candidate.split([' ', '-']).map(str::len).collect();
        if ![&[4, 4, 4, 4][..], &[4, 4, 4, 4, 3], &[4, 6, 5], &[4, 6, 4]].contains(&&groups[..]) {
            return None;
        }
    }
    let ds: String = candidate.chars().filter(char::is_ascii_digit).collect();
    if !(13..=19).contains(&ds.len()) {
        return None;
    }
    let network = match ds.as_bytes()[0] {
        b'3' | b'4' | b'5' | b'6' => true,
        b'2' => ds[..4]
            .parse::<u32>()
            .is_ok_and(|p| (2221..=2720).contains(&p)),
        _ => false,
    };
    // A run of one digit is a filler, not a card.
    let filler = ds.bytes().all(|b| b == ds.as_bytes()[0]);
    (network && !filler && luhn(&ds)).then_some(candidate.len())
}

/// IBAN lengths by country (the IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// The ISO 7064 mod-97 check of an IBAN without spaces.
pub fn iban_valid(iban: &str) -> bool {
    let b = iban.as_bytes();
    if b.len() < 5 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn iban(candidate: &str) -> Option<usize> {
    let country = candidate.get(..2)?;
    let &(_, len) = IBAN_LENGTHS.iter().find(|(c, _)| *c == country)?;
    // The candidate up to the country's length (a word after it may have been taken in).
    let mut compact = String::with_capacity(len);
    let mut end = 0;
    for (i, c) in candidate.char_indices() {
        if c == ' ' {
            continue;
        }
        compact.push(c);
        end = i + c.len_utf8();
        if compact.len() == len {
            break;
        }
    }
    (compact.len() == len && iban_valid(&compact)).then_some(end)
}

fn ipv4(candidate: &str) -> Option<usize> {
    let ok = candidate
        .split('.')
        .all(|o| o.parse::<u16>().is_ok_and(|v| v <= 255) && (o == "0" || !o.starts_with('0')));
    ok.then_some(candidate.len())
}

fn ipv6(candidate: &str) -> Option<usize> {
    let hex = candidate.chars().filter(char::is_ascii_hexdigit).count();
    (hex >= 4 && candidate.parse::<std::net::Ipv6Addr>().is_ok()).then_some(candidate.len())
}

fn phone(candidate: &str) -> Option<usize> {
    // A trailing `(` or separator is not part of the number.
    let trimmed = candidate.trim_end_matches(|c: char| !c.is_ascii_digit());
    let n = digits(trimmed).count();
    let opens = trimmed.matches('(').count();
    if opens != trimmed.matches(')').count() || opens > 1 {
        return None;
    }
    let ok = if trimmed.starts_with('+') {
        (8..=15).contains(&n)
    } else if trimmed.starts_with('0') {
        // National: with separators, 9 to 11 digits, and not a date with more after it.
        (9..=11).contains(&n) && !dated(trimmed)
    } else {
        // North American: 10 digits, or 11 with the leading 1.
        n == 10 || (n == 11 && trimmed.starts_with('1'))
    };
    ok.then_some(trimmed.len())
}

/// Whether a number opens like a date: `dd.mm.yyyy`, `dd/mm/yyyy`, `dd-mm-yyyy`.
fn dated(s: &str) -> bool {
    let groups: Vec<usize> = s
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(str::len)
        .collect();
    groups == [2, 2, 4]
}

fn jwt(candidate: &str) -> Option<usize> {
    let header = candidate.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?;
    Some(candidate.len())
}
