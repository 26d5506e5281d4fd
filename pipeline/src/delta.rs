//! Gate 3: enough new or changed samples since the last successful run.
//!
//! Each successful run stores a manifest of its samples (key, raw and label versions, content
//! digest, the file each went into), zstd-compressed JSON lines (gzip in earlier versions, still
//! read), beside its record. The delta
//! is the number of current samples that are absent from that manifest or whose raw or label
//! version changed; once the build has read them, only those whose content digest changed
//! count (a re-upload of the same bytes is no change). Content that was ever on the validation
//! side stays there, whatever its name or the split ratio (`Comparison::validation`). Content that
//! ever trained is remembered the same way, deleted or not (keyless `t` entries carried from run
//! to run), so that it is never picked into a new evaluation set. The seed compared sample
//! counts, so deleting five samples hid five additions; a deletion changes nothing here.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::sample::Sample;
use crate::storage::{self, Store, StoreError};

#[derive(Debug, Serialize, Deserialize)]
struct Entry<'a> {
    key: std::borrow::Cow<'a, str>,
    raw: std::borrow::Cow<'a, str>,
    label: std::borrow::Cow<'a, str>,
    /// SHA-256 of the sample's content (hex), when the run read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<std::borrow::Cow<'a, str>>,
    /// `t` or `v`: the file the sample went into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    side: Option<char>,
}

/// What a previous run knew of one sample: its raw and label versions, in one allocation (a
/// manifest of 100,000 samples holds 100,000 of these), and its content digest.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    /// The raw file's version, then the label's.
    versions: Box<str>,
    raw_len: usize,
    pub digest: Option<[u8; 32]>,
}

impl Known {
    pub(crate) fn new(raw: &str, label: &str, digest: Option<[u8; 32]>) -> Self {
        Self {
            versions: [raw, label].concat().into_boxed_str(),
            raw_len: raw.len(),
            digest,
        }
    }

    /// The raw file's version (generation).
    pub(crate) fn raw(&self) -> &str {
        &self.versions[..self.raw_len]
    }

    /// The label's version (generation).
    pub(crate) fn label(&self) -> &str {
        &self.versions[self.raw_len..]
    }
}

/// A previous run's samples, by key.
pub(crate) type Manifest = HashMap<Box<str>, Known>;

/// A set of content digests, sorted: 32 bytes a digest, looked up by binary search (every
/// digest that ever trained is carried from run to run, so it must stay compact).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests(Box<[[u8; 32]]>);

impl Digests {
    pub fn contains(&self, d: &[u8; 32]) -> bool {
        self.0.binary_search(d).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.0.iter()
    }
}

impl FromIterator<[u8; 32]> for Digests {
    fn from_iter<I: IntoIterator<Item = [u8; 32]>>(iter: I) -> Self {
        let mut v: Vec<[u8; 32]> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v.into_boxed_slice())
    }
}

/// What a manifest carries beyond its samples: content that ever validated, and content that
/// ever trained, under any key or none.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    pub validation: HashSet<[u8; 32]>,
    pub trained: Digests,
}

/// What a run did with one sample, for the manifest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// The content digest, when the sample was read.
    pub digest: Option<[u8; 32]>,
    /// The file it went into: `Some(true)` validation, `Some(false)` training.
    pub validation: Option<bool>,
}

/// The current samples against a previous run's manifest, aligned with the samples.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// New, or a version changed since (the listing's view: a re-upload of the same bytes is
    /// changed here, and unchanged once its content digest is known).
    pub changed: Vec<bool>,
    /// The content digest the previous run took of the same key.
    pub previous: Vec<Option<[u8; 32]>>,
    /// Content digests that were ever on the validation side: they stay there, whatever their
    /// name or the current split ratio.
    pub validation: HashSet<[u8; 32]>,
    /// Content digests the previous run read and did not validate, under any key (renamed
    /// or deleted since included), and every content that ever trained: never picked for a new
    /// evaluation set.
    pub trained: Digests,
    /// Content that ever trained (carried into the next manifest).
    pub ever_trained: Digests,
}

impl Comparison {
    /// What the next manifest carries forward.
    pub fn carried(&self) -> Carried {
        Carried {
            validation: self.validation.clone(),
            trained: self.ever_trained.clone(),
        }
    }
}

pub(crate) use crate::storage::hex;

pub(crate) fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Encodes the manifest of `samples` and what the run did with each (`outcomes`, aligned; may
/// be empty when nothing was built). Validation digests of `previous` that no current sample
/// carries are kept, so a deleted validation sample re-uploaded later still validates; so are
/// the digests that ever trained, so deleted and restored content is never picked into an
/// evaluation set.
pub(crate) async fn encode(samples: &[Sample], outcomes: &[Outcome], previous: &Carried) -> Bytes {
    let mut enc = crate::compress::encoder(Vec::new());
    let mut carried: HashSet<[u8; 32]> = previous.validation.clone();
    let trained_now: Digests = outcomes
        .iter()
        .filter(|o| o.validation == Some(false))
        .filter_map(|o| o.digest)
        .collect();
    let write = async |e: &Entry<'_>, enc: &mut crate::compress::Encoder| {
        let mut line = serde_json::to_vec(e).expect("an entry serialises");
        line.push(b'\n');
        enc.write_all(&line).await.expect("writing to memory");
    };
    for (i, s) in samples.iter().enumerate() {
        let o = outcomes.get(i).copied().unwrap_or_default();
        if let Some(d) = o.digest {
            carried.remove(&d);
        }
        let e = Entry {
            key: s.key.as_str().into(),
            raw: s.raw.meta.generation.as_str().into(),
            label: s.label.meta.generation.as_str().into(),
            digest: o.digest.map(|d| hex(&d).into()),
            side: o.validation.map(|v| if v { 'v' } else { 't' }),
        };
        write(&e, &mut enc).await;
    }
    // Validation content no longer present under any key: remembered without a key.
    let mut carried: Vec<[u8; 32]> = carried.into_iter().collect();
    carried.sort_unstable();
    for d in carried {
        let e = Entry {
            key: "".into(),
            raw: "".into(),
            label: "".into(),
            digest: Some(hex(&d).into()),
            side: Some('v'),
        };
        write(&e, &mut enc).await;
    }
    // Content that trained before and is not training under a key now: remembered without one.
    for d in previous.trained.iter().filter(|d| !trained_now.contains(d)) {
        let e = Entry {
            key: "".into(),
            raw: "".into(),
            label: "".into(),
            digest: Some(hex(d).into()),
            side: Some('t'),
        };
        write(&e, &mut enc).await;
    }
    enc.shutdown().await.expect("writing to memory");
    Bytes::from(enc.into_inner())
}

/// Reads a manifest, streaming and decompressing it.
pub(crate) async fn read(store: &dyn Store, key: &str) -> Result<(Manifest, Carried), StoreError> {
    let uri = store.uri(key);
    let got = store.get(key).await?;
    let bad = |e: String| StoreError::Io {
        uri: uri.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let decoded = crate::compress::decoder(storage::into_async_read(got.body))
        .await
        .map_err(|e| bad(e.to_string()))?;
    let mut lines = tokio::io::BufReader::new(decoded).lines();
    let mut manifest = Manifest::new();
    let mut validation = HashSet::new();
    let mut trained = Vec::new();
    while let Some(line) = lines.next_line().await.map_err(|e| bad(e.to_string()))? {
        let e: Entry = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let digest = e.digest.as_deref().and_then(unhex);
        let is_validation = e.side == Some('v');
        if let (Some(d), true) = (digest, is_validation) {
            validation.insert(d);
        }
        if let (Some(d), Some('t')) = (digest, e.side) {
            trained.push(d);
        }
        if e.key.is_empty() {
            continue;
        }
        manifest.insert(e.key.into(), Known::new(&e.raw, &e.label, digest));
    }
    Ok((
        manifest,
        Carried {
            validation,
            trained: trained.into_iter().collect(),
        },
    ))
}

/// Compares the current samples with a previous run's manifest.
pub(crate) fn compare(samples: &[Sample], previous: &Manifest, carried: Carried) -> Comparison {
    let Carried {
        validation,
        trained: ever_trained,
    } = carried;
    let trained = previous
        .values()
        .filter_map(|k| k.digest)
        .filter(|d| !validation.contains(d))
        .chain(ever_trained.iter().copied())
        .collect();
    let mut c = Comparison {
        validation,
        trained,
        ever_trained,
        ..Comparison::default()
    };
    for s in samples {
        let known = previous.get(s.key.as_str());
        c.changed.push(known.is_none_or(|k| {
            k.raw() != s.raw.meta.generation || k.label() != s.label.meta.generation
        }));
        c.previous.push(known.and_then(|k| k.digest));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modality::Modality;
    use crate::sample::{LabelFile, LabelFormat, RawFile};
    use crate::storage::{ObjectMeta, PutMode, memory::MemoryStore};

    fn sample(key: &str, raw_gen: &str) -> Sample {
        let meta = |g: &str| ObjectMeta {
            key: format!("{key}.x"),
            size: 1,
            generation: g.to_owned(),
            checksum: None,
        };
        Sample {
            key: key.to_owned(),
            raw: RawFile {
                meta: meta(raw_gen),
                modality: Modality::Text,
                ext: "txt".into(),
                gzip: false,
            },
            label: LabelFile {
                meta: meta("L"),
                format: LabelFormat::Json,
                gzip: false,
            },
        }
    }

    #[tokio::test]
    async fn deletions_do_not_hide_additions() {
        let before: Vec<_> = (0..20).map(|i| sample(&format!("s{i}"), "1")).collect();
        let store = MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        store
            .put(
                "m.jsonl.gz",
                encode(&before, &[], &Carried::default()).await,
                PutMode::Create,
            )
            .await
            .unwrap();
        let (manifest, validation) = read(&store, "m.jsonl.gz").await.unwrap();
        assert_eq!(manifest.len(), 20);
        // Delete 5, add 12, change 1: the sample count grows by 7, but 13 are new or changed.
        let mut now: Vec<_> = before[5..].iter().map(|s| sample(&s.key, "1")).collect();
        now.extend((100..112).map(|i| sample(&format!("s{i}"), "1")));
        now[0] = sample("s5", "2");
        let count = |s: &[Sample]| {
            compare(s, &manifest, validation.clone())
                .changed
                .iter()
                .filter(|&&c| c)
                .count()
        };
        assert_eq!(count(&now), 13);
        assert_eq!(count(&before), 0);
    }

    #[tokio::test]
    async fn a_gzip_manifest_of_an_earlier_version_is_read() {
        let before: Vec<_> = (0..3).map(|i| sample(&format!("s{i}"), "1")).collect();
        let zstd = encode(&before, &[], &Carried::default()).await;
        let gz = crate::compress::as_gzip(&zstd).await;
        let store = MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        store
            .put("old.jsonl.gz", Bytes::from(gz), PutMode::Create)
            .await
            .unwrap();
        let (manifest, _) = read(&store, "old.jsonl.gz").await.unwrap();
        assert_eq!(manifest.len(), 3);
    }

    /// Issue 20 item 3: what trained is remembered through any number of runs without it,
    /// 32 bytes a digest.
    #[tokio::test]
    async fn content_that_trained_is_remembered_after_it_is_deleted() {
        let store = MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        let before: Vec<_> = (0..4).map(|i| sample(&format!("s{i}"), "1")).collect();
        let outcomes: Vec<Outcome> = (0..4u8)
            .map(|i| Outcome {
                digest: Some([i; 32]),
                validation: Some(i == 3),
            })
            .collect();
        let mut carried = Carried::default();
        let mut body = encode(&before, &outcomes, &carried).await;
        // Three runs in which none of them is present.
        for _ in 0..3 {
            store
                .put("m.jsonl.gz", body, PutMode::Overwrite)
                .await
                .unwrap();
            let (manifest, read_back) = read(&store, "m.jsonl.gz").await.unwrap();
            let c = compare(&[], &manifest, read_back);
            carried = c.carried();
            for i in 0..3u8 {
                assert!(c.trained.contains(&[i; 32]), "{i} is not picked");
                assert!(carried.trained.contains(&[i; 32]), "{i} is carried");
            }
            assert!(
                !carried.trained.contains(&[3; 32]),
                "validated, not trained"
            );
            assert!(carried.validation.contains(&[3; 32]));
            body = encode(&[], &[], &carried).await;
        }
        assert_eq!(carried.trained.len(), 3);
        assert_eq!(std::mem::size_of_val(&*carried.trained.0), 3 * 32);
    }
}
