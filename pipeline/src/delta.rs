//! Gate 3: enough new or changed samples since the last successful run.
//!
//! Each successful run stores a manifest of its samples (key, raw and label versions),
//! gzip-compressed JSON lines, beside its record. The delta is the number of current samples
//! that are absent from that manifest or whose raw or label version changed. The seed compared
//! sample counts, so deleting five samples hid five additions; a deletion changes nothing here.

use std::collections::HashMap;

use async_compression::tokio::bufread::GzipDecoder;
use async_compression::tokio::write::GzipEncoder;
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
}

/// Versions of a previous run's samples, by key.
pub type Manifest = HashMap<String, (String, String)>;

/// Encodes the manifest of `samples`.
pub async fn encode(samples: &[Sample]) -> Bytes {
    let mut enc = GzipEncoder::new(Vec::new());
    for s in samples {
        let e = Entry {
            key: s.key.as_str().into(),
            raw: s.raw.meta.generation.as_str().into(),
            label: s.label.meta.generation.as_str().into(),
        };
        let mut line = serde_json::to_vec(&e).expect("an entry serialises");
        line.push(b'\n');
        enc.write_all(&line).await.expect("writing to memory");
    }
    enc.shutdown().await.expect("writing to memory");
    Bytes::from(enc.into_inner())
}

/// Reads a manifest, streaming and decompressing it.
pub async fn read(store: &dyn Store, key: &str) -> Result<Manifest, StoreError> {
    let uri = store.uri(key);
    let got = store.get(key).await?;
    let reader = tokio::io::BufReader::new(storage::into_async_read(got.body));
    let mut lines = tokio::io::BufReader::new(GzipDecoder::new(reader)).lines();
    let mut manifest = Manifest::new();
    let bad = |e: String| StoreError::Io {
        uri: uri.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    while let Some(line) = lines.next_line().await.map_err(|e| bad(e.to_string()))? {
        let e: Entry = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        manifest.insert(
            e.key.into_owned(),
            (e.raw.into_owned(), e.label.into_owned()),
        );
    }
    Ok(manifest)
}

/// Which samples are new or changed relative to `previous`, in the order of `samples`.
pub fn changed(samples: &[Sample], previous: &Manifest) -> Vec<bool> {
    samples
        .iter()
        .map(|s| {
            previous.get(&s.key).is_none_or(|(raw, label)| {
                *raw != s.raw.meta.generation || *label != s.label.meta.generation
            })
        })
        .collect()
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
            .put("m.jsonl.gz", encode(&before).await, PutMode::Create)
            .await
            .unwrap();
        let manifest = read(&store, "m.jsonl.gz").await.unwrap();
        assert_eq!(manifest.len(), 20);
        // Delete 5, add 12, change 1: the sample count grows by 7, but 13 are new or changed.
        let mut now: Vec<_> = before[5..].iter().map(|s| sample(&s.key, "1")).collect();
        now.extend((100..112).map(|i| sample(&format!("s{i}"), "1")));
        now[0] = sample("s5", "2");
        let count = |s: &[Sample]| changed(s, &manifest).iter().filter(|&&c| c).count();
        assert_eq!(count(&now), 13);
        assert_eq!(count(&before), 0);
    }
}
