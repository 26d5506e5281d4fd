#!/usr/bin/env bash
# Peak RSS of `autotune run` while it evaluates (issue 20 item 14): a local folder of N (1,150)
# text pairs of about SIZE (100,000) bytes of varied words, EVAL_RATIO=0.5, so that the frozen
# evaluation set holds about 570 rows of ~100 KB (~57 MB, under set::MAX_WRITE_BYTES); the
# dry-run tuner with the rehearsal evaluation (EVAL_MODEL=rehearsal) answers every row for the
# candidate and the champion, and the answers are stored under eval_responses/. One cycle
# (MAX_CYCLES=1). Prints wall time, peak RSS (`/usr/bin/time -f '%e %M'`), the run's status,
# the evaluation set's rows and the verdict. BIN=/path/to/autotune measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1150}
SIZE=${SIZE:-100000}
cargo build --release -q -p autotune -p autotune-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=${BIN:-$target_dir/release/autotune}
GEN=$target_dir/release/gen-bucket
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/bucket"
GEN_TEXT=varied "$GEN" "$work/bucket" "$N" "$SIZE" >/dev/null
echo "bucket: $N pairs of ~$SIZE B, $(du -sh "$work/bucket" | cut -f1) on disk; load: $(uptime | sed 's/.*load average/load average/')"
/usr/bin/time -f "%e %M" -o "$work/time" env BUCKET_NAME="$work/bucket" LOG_FORMAT=json \
  MIN_SAMPLES=10 QUIET_PERIOD=0s MAX_CYCLES=1 EVAL_MODEL=rehearsal EVAL_RATIO=0.5 \
  "$BIN" run >"$work/out.json" 2>"$work/log" || { tail -5 "$work/log"; cat "$work/out.json"; exit 1; }
# The last line: time(1) puts "Command exited with non-zero status" first when it fails.
read -r wall rss < <(tail -n 1 "$work/time")
set_bytes=$(du -cb "$work"/bucket/trained_model/eval/*.jsonl | tail -n 1 | cut -f1)
python3 - "$wall" "$rss" "$set_bytes" "$work/out.json" <<'PY'
import json, sys
wall, rss, set_bytes, out = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4]))
ev = out.get("evaluation") or {}
print(f"wall {wall:.2f} s, peak RSS {rss / 1024:.1f} MB, status {out['status']}, "
      f"evaluation set {out['counts'].get('eval')} rows ({set_bytes / 1e6:.1f} MB), "
      f"verdict {ev.get('verdict')}, rows scored {ev.get('rows')}")
PY
