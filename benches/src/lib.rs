//! Benchmarks live in `benches/` (criterion) and in the shell scripts beside this crate.
