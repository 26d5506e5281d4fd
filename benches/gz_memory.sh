#!/usr/bin/env bash
# Peak RSS of `autotune run` on `.gz` samples that inflate far beyond their size on disk
# (issue 9, item 17): N (300) pairs whose `.txt.gz` inflates to SIZE (4,000,000) bytes, about
# 16 KB each on disk, with a few MAX_BYTES_IN_FLIGHT values. At 4 MB a sample is more tokens
# than Vertex takes, so the run ends `failed` (all rejected, after reading and converting
# everything); SIZE=480000 makes samples that convert.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-300}
SIZE=${SIZE:-4000000}
BUDGETS=${BUDGETS:-"67108864 16777216"}
cargo build --release -q -p autotune
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=${BIN:-$target_dir/release/autotune}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/bucket" "$N" "$SIZE" <<'PY'
import gzip, os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = os.path.join(root, "raw_training_data")
os.makedirs(d, exist_ok=True)
for i in range(n):
    line = f"sample {i}: the quick brown fox jumps over the lazy dog {i * 7919 % 1000}\n".encode()
    text = (line * (size // len(line) + 1))[:size]
    with open(os.path.join(d, f"s{i:04}.txt.gz"), "wb") as f:
        f.write(gzip.compress(text, 6))
    with open(os.path.join(d, f"s{i:04}.json.gz"), "wb") as f:
        f.write(gzip.compress(f'{{"answer":"a{i}"}}'.encode(), 6))
PY
echo "bucket: $N pairs, $(du -sh "$work/bucket" | cut -f1) on disk, each .txt.gz inflating to $SIZE bytes"
printf '%-22s %10s %10s %14s\n' MAX_BYTES_IN_FLIGHT wall_s peak_rss_MB status
for budget in $BUDGETS; do
  rm -rf "$work/bucket/training_datasets" "$work/bucket/trained_model"
  /usr/bin/time -f "%e %M" -o "$work/time" env MAX_BYTES_IN_FLIGHT="$budget" \
    "$BIN" run --bucket-name "$work/bucket" --log-format json >"$work/out.json" 2>/dev/null || true
  # The last line: time(1) puts "Command exited with non-zero status" first when it fails.
  read -r wall rss < <(tail -n 1 "$work/time")
  status=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$work/out.json")
  printf '%-22s %10s %10s %14s\n' "$budget" "$wall" "$(awk -v kb="$rss" 'BEGIN { printf "%.1f", kb / 1024 }')" "$status"
done
