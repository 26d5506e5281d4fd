//! Benchmarks of autotune: `cargo bench -p autotune-benches` (criterion, `benches/converter.rs`)
//! and the scripts beside this crate, which use the `gen-bucket` binary to make test buckets.

pub mod planted;
