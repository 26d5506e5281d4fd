//! Near-duplicate fingerprints per second (`Fingerprint::of`, one core) for texts of 200 B and
//! 1.5 KB of varied words, and admitting them into an index.

use std::fmt::Write as _;

use autotune::fingerprint::{DEFAULT_THRESHOLD, Fingerprint, Index};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Varied words, as gen-bucket's `GEN_TEXT=varied` writes them: a text of about `bytes` bytes.
fn text(i: usize, bytes: usize) -> String {
    let mut out = format!("ticket {i}:");
    let mut state = i as u64 + 1;
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let _ = write!(out, " w{}", state % 20_000);
    }
    out
}

fn fingerprints(c: &mut Criterion) {
    for (bytes, name) in [(200, "200B"), (1500, "1.5KB")] {
        let texts: Vec<String> = (0..1000).map(|i| text(i, bytes)).collect();
        let mut group = c.benchmark_group(format!("fingerprint_{name}"));
        group.throughput(Throughput::Elements(texts.len() as u64));
        group.bench_function("of", |b| {
            b.iter(|| texts.iter().filter_map(|t| Fingerprint::of(t)).count());
        });
        let prints: Vec<Fingerprint> = texts.iter().filter_map(|t| Fingerprint::of(t)).collect();
        group.bench_function("admit", |b| {
            b.iter(|| {
                let mut index = Index::new(DEFAULT_THRESHOLD);
                for (i, f) in prints.iter().enumerate() {
                    index.admit(i, f.clone());
                }
                index.len()
            });
        });
        group.finish();
    }
}

criterion_group!(benches, fingerprints);
criterion_main!(benches);
