//! `--check-files`: looks up the `gs://` objects that `fileData` parts name, so that a missing
//! or oversized file is found before Vertex finds it hours into a job.
//!
//! Lookups are I/O, so they run on the async side, a bounded number at a time, fed in file
//! order by the merger through a bounded channel (which slows the validation down to the
//! lookups rather than buffering them). Each URI is looked up once; the set of URIs seen is
//! bounded and forgotten when full, which may repeat a lookup but never grows memory without
//! bound. `https://` URLs are not looked up: Vertex fetches them, and so would we, in full.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::rules::{Category, FileRef, Findings};
use crate::storage::{self, Store, StoreError};

/// Lookups at once.
const CONCURRENCY: usize = 16;
/// URIs remembered for de-duplication.
const SEEN_MAX: usize = 100_000;

/// Receives references until the channel closes; returns the findings.
pub async fn check(mut rx: mpsc::Receiver<FileRef>, cap: usize) -> Findings {
    let mut seen: HashSet<String> = HashSet::new();
    let mut stores: HashMap<String, Arc<dyn Store>> = HashMap::new();
    let mut pending = FuturesUnordered::new();
    let mut out = Findings::new(cap);
    let mut open = true;
    loop {
        tokio::select! {
            r = rx.recv(), if open && pending.len() < CONCURRENCY => {
                let Some(r) = r else {
                    open = false;
                    continue;
                };
                if seen.len() >= SEEN_MAX {
                    seen.clear();
                }
                if seen.insert(r.uri.clone()) {
                    let store = store_for(&mut stores, &r.uri);
                    pending.push(lookup(r, store));
                }
            }
            Some((r, result)) = pending.next(), if !pending.is_empty() => record(&mut out, &r, result),
            else => break,
        }
    }
    out.kept.sort_by_key(|f| f.line);
    out
}

/// The store of a `gs://bucket/object` URI's bucket, opened once per bucket.
fn store_for(
    stores: &mut HashMap<String, Arc<dyn Store>>,
    uri: &str,
) -> Result<(Arc<dyn Store>, String), StoreError> {
    let rest = uri.strip_prefix("gs://").unwrap_or(uri);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let store = if let Some(s) = stores.get(bucket) {
        Arc::clone(s)
    } else {
        let s = storage::open(&format!("gs://{bucket}"))?;
        stores.insert(bucket.to_owned(), Arc::clone(&s));
        s
    };
    Ok((store, key.to_owned()))
}

async fn lookup(
    r: FileRef,
    store: Result<(Arc<dyn Store>, String), StoreError>,
) -> (FileRef, Result<u64, StoreError>) {
    let size = match store {
        Ok((store, key)) => store.head(&key).await.map(|m| m.size),
        Err(e) => Err(e),
    };
    (r, size)
}

fn record(out: &mut Findings, r: &FileRef, result: Result<u64, StoreError>) {
    let line = Some(r.line);
    let path = || r.path.clone();
    match result {
        Ok(size) => {
            let max = r.kind.modality().max_bytes().unwrap_or(u64::MAX);
            if size > max {
                out.push(line, Category::MediaTooLarge, path, || {
                    format!(
                        "{} is {size} bytes; Vertex allows {max} per {:?} file",
                        r.uri,
                        r.kind.modality()
                    )
                });
            }
        }
        Err(e) if e.is_not_found() => {
            out.push(line, Category::MediaNotFound, path, || {
                format!("{} does not exist", r.uri)
            });
        }
        Err(e) => out.push(line, Category::MediaNotChecked, path, || {
            format!("cannot look up {}: {e}", r.uri)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::rules::MediaKind;

    fn r(kind: MediaKind) -> FileRef {
        FileRef {
            line: 9,
            path: "contents[0].parts[0].fileData.fileUri".into(),
            uri: "gs://b/x".into(),
            kind,
        }
    }

    #[test]
    fn sizes_and_failures_become_findings() {
        let mut out = Findings::new(10);
        record(&mut out, &r(MediaKind::Image), Ok(20_000_000));
        record(&mut out, &r(MediaKind::Video), Ok(100_000_000));
        assert_eq!(out.total(), 0, "at the limit is allowed");
        record(&mut out, &r(MediaKind::Image), Ok(20_000_001));
        record(
            &mut out,
            &r(MediaKind::Pdf),
            Err(StoreError::NotFound {
                uri: "gs://b/x".into(),
            }),
        );
        record(
            &mut out,
            &r(MediaKind::Audio),
            Err(StoreError::Auth("no credentials".into())),
        );
        let got: Vec<_> = out.kept.iter().map(|f| (f.category, f.line)).collect();
        assert_eq!(
            got,
            vec![
                (Category::MediaTooLarge, Some(9)),
                (Category::MediaNotFound, Some(9)),
                (Category::MediaNotChecked, Some(9)),
            ]
        );
        assert!(
            out.kept[0].message.contains("20000001 bytes"),
            "{}",
            out.kept[0].message
        );
        assert!(
            out.kept[2].message.contains("no credentials"),
            "{}",
            out.kept[2].message
        );
    }
}
