//! `gen-bucket URL N [BYTES] [START]`: writes N text samples (raw `.txt` of about BYTES bytes
//! and a `.json` label), numbered from START (0), under `raw_training_data/` of any store URL,
//! 64 writes at a time.

use std::sync::Arc;

use autotune::storage::{self, PutMode};
use bytes::Bytes;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: gen-bucket URL N [BYTES] [START]";
    let url = args.next().ok_or(usage)?;
    let n: usize = args.next().ok_or(usage)?.parse()?;
    let bytes: usize = args.next().map_or(Ok(200), |b| b.parse())?;
    let start: usize = args.next().map_or(Ok(0), |s| s.parse())?;
    let store = storage::open(&url)?;
    let filler = "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1);
    let results = futures::stream::iter(start..start + n)
        .map(|i| {
            let store = Arc::clone(&store);
            let raw = format!("ticket {i}: {}", &filler[..bytes.min(filler.len())]);
            async move {
                let key = format!("raw_training_data/b{:03}/s{i:07}", i % 500);
                store
                    .put(&format!("{key}.txt"), Bytes::from(raw), PutMode::Overwrite)
                    .await?;
                let label = format!(
                    "{{\"category\":\"c{}\",\"priority\":\"p{}\"}}",
                    i % 7,
                    i % 3
                );
                store
                    .put(
                        &format!("{key}.json"),
                        Bytes::from(label),
                        PutMode::Overwrite,
                    )
                    .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        r?;
    }
    eprintln!("wrote {n} samples to {url}");
    Ok(())
}
