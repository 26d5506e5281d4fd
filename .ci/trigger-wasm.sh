#!/usr/bin/env bash
# CI for the Spin component (issue 4): tools, build, size and interface checks, native and
# end-to-end tests. Idempotent; exits non-zero on the first failure. Called by .ci/run.
#
# Uses CARGO_TARGET_DIR when set, else the workspace's target/.
set -euo pipefail

cd "$(dirname "$0")/.."
WASMTIME_VERSION=48.0.8
MAX_BYTES=400000
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step() { printf '\n== trigger-wasm: %s\n' "$*"; }
fail() { printf 'trigger-wasm CI FAILED: %s\n' "$*" >&2; exit 1; }

step "tools"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ "$(wasmtime --version 2>/dev/null | awk '{print $2}')" != "$WASMTIME_VERSION" ]; then
  # ~11 minutes cold on 2 cores; newer releases need a newer rustc (SPIN-WASM.md §4).
  cargo install wasmtime-cli --locked --version "$WASMTIME_VERSION"
fi
command -v wasm-tools >/dev/null || cargo install wasm-tools --locked --version 1.263.0
wasmtime --version
wasm-tools --version

step "build the component"
cargo build --target wasm32-wasip2 --release -p trigger-wasm
target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
wasm="$target_dir/wasm32-wasip2/release/trigger_wasm.wasm"
[ -f "$wasm" ] || fail "component not found at $wasm"

step "size"
size=$(wc -c <"$wasm")
echo "$wasm: $size bytes (limit $MAX_BYTES)"
[ "$size" -lt "$MAX_BYTES" ] || fail "component is $size bytes, over the $MAX_BYTES-byte budget"

step "interfaces (wasm-tools component wit)"
wit=$(wasm-tools component wit "$wasm")
echo "$wit" | grep -E '^\s*(import|export) '
if echo "$wit" | grep -E '^\s*import (spin|fermyon):' ; then
  fail "the component imports a Spin-specific interface; it must only use WASI (config from env)"
fi
echo "$wit" | grep -qE '^\s*export wasi:http/incoming-handler@0\.2\.0;' \
  || fail "the component does not export wasi:http/incoming-handler@0.2.0"
wasm-tools validate --features all "$wasm"

if [ -z "${TRIGGER_WASM_SKIP_TESTS:-}" ]; then
  step "tests (native unit tests + end to end under wasmtime serve)"
  TRIGGER_WASM="$wasm" WASMTIME="$(command -v wasmtime)" cargo test -p trigger-wasm
fi

echo "trigger-wasm CI passed"
