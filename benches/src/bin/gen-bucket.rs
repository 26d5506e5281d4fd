//! `gen-bucket URL N [BYTES] [START]`: writes N text samples (raw `.txt` of about BYTES bytes
//! and a `.json` label), numbered from START (0), under `raw_training_data/` of any store URL,
//! 64 writes at a time.

#![allow(
    clippy::print_stderr,
    reason = "a command-line tool: its messages go to stderr"
)]

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
    // GEN_TEXT=varied: words drawn from a vocabulary, as real tickets compress (gzip ~3:1);
    // the default repeats one phrase, which compresses ~30:1 and hides a slow codec.
    let varied = std::env::var("GEN_TEXT").is_ok_and(|v| v == "varied");
    let filler = "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1);
    let results = futures::stream::iter(start..start + n)
        .map(|i| {
            let store = Arc::clone(&store);
            let text = if varied {
                words(i as u64, bytes)
            } else {
                filler[..bytes.min(filler.len())].to_owned()
            };
            let raw = format!("ticket {i}: {text}");
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

/// About `bytes` of words for sample `i`: a vocabulary of 4,096 made-up words, 2 to 10
/// letters, chosen by a xorshift generator seeded by `i` (the same text every time).
fn words(i: u64, bytes: usize) -> String {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let word = |w: u64| -> String {
        let mut x = w.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        let len = 2 + (x % 9) as usize;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    };
    let mut out = String::with_capacity(bytes + 12);
    while out.len() < bytes {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word(next() % 4096));
    }
    out
}
