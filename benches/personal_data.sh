#!/usr/bin/env bash
# Cost of the personal-data screening (issue 24): `autotune run` (dry-run tuner, one cycle, no
# evaluation) over LOCAL_N (100,000) local text pairs of the planted corpus (1% with a planted
# value; `planted bucket`), with PERSONAL_DATA=off, redact and reject, each ROUNDS (2) times in
# turn. Prints wall time and peak RSS of each run. PROFILE=release (default: profiling, the
# release code without LTO, which builds in a fraction of the time; both binaries of one
# comparison are the same build). BIN=/path/to/autotune measures another build; SKIP_BUILD=1
# uses the binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCAL_N=${LOCAL_N:-100000}
ROUNDS=${ROUNDS:-2}
PROFILE=${PROFILE:-profiling}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" -q -p autotune -p autotune-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=${BIN:-$target_dir/$PROFILE/autotune}
GEN=$target_dir/$PROFILE/planted
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$work/b"
"$GEN" bucket "$work/b" "$LOCAL_N" 0.01 2>/dev/null
printf '%-10s %10s %10s %12s %10s %10s\n' mode samples wall_s peak_rss_MB redacted rejected
for round in $(seq "$ROUNDS"); do
  for mode in off redact reject; do
    rm -rf "$work/b/training_datasets" "$work/b/trained_model"
    /usr/bin/time -f "%e %M" -o "$work/time" env PERSONAL_DATA=$mode BUCKET_NAME="$work/b" LOG_FORMAT=json \
      MIN_SAMPLES=10 QUIET_PERIOD=0s EVAL_MODEL=off MAX_CYCLES=1 MAX_REJECTED_RATIO=0.5 \
      "$BIN" run >"$work/out.json" 2>"$work/log" || { tail -5 "$work/log"; cat "$work/out.json"; exit 1; }
    read -r wall rss <"$work/time"
    record=$(ls "$work/b/trained_model"/model_metadata_*.json | tail -1)
    python3 - "$mode" "$wall" "$rss" "$work/out.json" "$record" <<'PY'
import json, sys
mode, wall, rss, out, record = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4])), json.load(open(sys.argv[5]))
assert out["status"] == "dry_run", out
p = record.get("personal_data") or {}
print(f"{mode:<10} {out['counts']['pairs']:>10} {wall:>10.2f} {rss / 1024:>12.1f} {p.get('redacted', '-'):>10} {p.get('rejected', '-'):>10}")
PY
  done
done
