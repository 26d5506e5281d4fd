//! The planted corpus of the personal-data screening ([`autotune_benches::planted`]):
//!
//! * `planted report [N]`: screens N texts (20,000) of the committed seed, a quarter with one
//!   planted value, and prints the recall and the share of clean texts flagged;
//! * `planted bucket URL N [SHARE]`: writes N samples (0.01 planted) under
//!   `raw_training_data/` of any store URL, for `benches/personal_data.sh`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: it prints its figures"
)]

use std::sync::Arc;

use autotune::storage::{self, PutMode};
use autotune_benches::planted::{self, SEED};
use bytes::Bytes;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: planted report [N] | planted bucket URL N [SHARE]";
    match args.first().map(String::as_str) {
        Some("report") => {
            let n = args.get(1).map_or(Ok(20_000), |n| n.parse())?;
            let (f, misses) = planted::measure(&planted::corpus(SEED, n, 0.25));
            for m in misses.iter().take(10) {
                eprintln!("{m}");
            }
            println!(
                "seed {SEED}: {} planted, {} found (recall {:.4}); {} clean, {} flagged ({:.4}%)",
                f.planted,
                f.found,
                f.recall(),
                f.clean,
                f.clean_flagged,
                f.flagged() * 100.0
            );
        }
        Some("bucket") => {
            let url = args.get(1).ok_or(usage)?;
            let n: usize = args.get(2).ok_or(usage)?.parse()?;
            let share: f64 = args.get(3).map_or(Ok(0.01), |s| s.parse())?;
            let store = storage::open(url)?;
            let texts = planted::corpus(SEED, n, share);
            let results = futures::stream::iter(texts.into_iter().enumerate())
                .map(|(i, t)| {
                    let store = Arc::clone(&store);
                    async move {
                        let key = format!("raw_training_data/b{:03}/s{i:07}", i % 500);
                        store
                            .put(
                                &format!("{key}.txt"),
                                Bytes::from(t.text),
                                PutMode::Overwrite,
                            )
                            .await?;
                        let label = format!("{{\"category\":\"c{}\"}}", i % 7);
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
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
