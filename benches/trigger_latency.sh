#!/usr/bin/env bash
# Latency of the trigger-wasm component served by `wasmtime serve` on loopback (issue 4):
# p50/p99 for accepted events (including the calls to the local fake of the metadata server,
# JWKS and Run Admin API) and for ignored events, plus the .wasm size.
# Targets: p99 < 5 ms accepted, < 1 ms ignored.
#
# Usage: benches/trigger_latency.sh [requests-per-row]   (default 2000)
# Needs wasmtime 48.0.8 (WASMTIME, PATH or ~/.cargo/bin) and the wasm32-wasip2 target.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
n="${1:-2000}"

command -v wasmtime >/dev/null || [ -n "${WASMTIME:-}" ] || {
  echo "wasmtime not found: cargo install wasmtime-cli --locked --version 48.0.8" >&2; exit 1; }

cargo build --quiet --target wasm32-wasip2 --release -p trigger-wasm
target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
wasm="$target_dir/wasm32-wasip2/release/trigger_wasm.wasm"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
echo "wasmtime: $(${WASMTIME:-wasmtime} --version)"
echo "wasm size: $(wc -c <"$wasm") bytes"
TRIGGER_WASM="$wasm" cargo run --quiet --release -p trigger-wasm --example trigger_latency -- "$n"
