#!/usr/bin/env bash
# Throughput and peak memory of `autotune validate` on a generated ~1 GB text JSONL.
#
#   benches/validate_bench.sh [SIZE_MB]       (default 1024)
#
# Builds the release binary (CARGO_TARGET_DIR is honoured), writes the file into a temporary
# folder (deleted on exit), runs the validation once to warm the page cache and once measured,
# and prints MB/s and the peak RSS. Memory should not depend on SIZE_MB: compare 256 and 1024.
set -euo pipefail

size_mb="${1:-1024}"
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cargo build --release -p autotune --manifest-path "$root/Cargo.toml" >&2
bin="$target/release/autotune"

echo "generating ${size_mb} MB of text examples in $tmp ..." >&2
python3 - "$tmp/train.jsonl" "$size_mb" <<'EOF'
import json, random, sys
path, size_mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
words = ("refund invoice login crash payment delivery account password order shipping "
         "the a of to and is not my was on for with it I have been since yesterday please").split()
lines = []
for i in range(20000):
    question = " ".join(rng.choice(words) for _ in range(rng.randint(20, 600)))
    answer = json.dumps({"category": rng.choice(["billing", "bug", "shipping"]), "id": i})
    ex = {"contents": [{"role": "user", "parts": [{"text": "Classify this ticket: " + question}]},
                       {"role": "model", "parts": [{"text": answer}]}]}
    if i % 10 == 0:
        ex["systemInstruction"] = {"parts": [{"text": "You are a support triage assistant."}]}
    lines.append(json.dumps(ex, separators=(",", ":")))
block = ("\n".join(lines) + "\n").encode()
target = size_mb * 1_000_000
with open(path, "wb") as f:
    written = 0
    while written + len(block) <= target:
        f.write(block)
        written += len(block)
    rest = block[: target - written]
    f.write(rest[: rest.rfind(b"\n") + 1])
EOF
bytes=$(stat -c %s "$tmp/train.jsonl")

# The file is larger than a training file may be (1 GB), which is one finding; the model's
# file limit is raised so the run measures the per-line work on a valid file.
cat > "$tmp/limits.json" <<'EOF'
{"models":[{"name":"bench","max_example_tokens":131072,"max_validation_examples":5000,
 "max_training_examples_text":100000000,"max_training_examples_multimodal":300000,
 "max_training_file_bytes":100000000000,"adapter_sizes":[1,2,4,8,16]}]}
EOF

run() {
  /usr/bin/time -v "$bin" validate "$tmp/train.jsonl" --model bench --model-limits-file "$tmp/limits.json" \
    --output json >"$tmp/report.json" 2>"$tmp/time.txt" || true
}
run # warm-up: page cache
start=$(date +%s.%N)
run
end=$(date +%s.%N)

python3 - "$tmp/report.json" "$tmp/time.txt" "$bytes" "$start" "$end" <<'EOF'
import json, re, sys
report, timing, size, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
r = json.load(open(report))
t = open(timing).read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
cpu = re.search(r"Percent of CPU this job got: (\d+)%", t).group(1)
wall = end - start
print(f"file:            {size / 1e6:.0f} MB, {r['lines']} lines, {r['examples']} examples, {r['errors']} errors")
print(f"wall time:       {wall:.2f} s (process), {r['elapsed_seconds']:.2f} s (validation)")
print(f"throughput:      {size / 1e6 / wall:.0f} MB/s (process), {r['megabytes_per_second']:.0f} MB/s (validation)")
print(f"peak RSS:        {rss_kb / 1024:.1f} MiB")
print(f"CPU:             {cpu}% ({__import__('os').cpu_count()} cores)")
print(f"tokens:          {r['estimate']['train']['tokens']} estimated, max {r['estimate']['train']['max_example_tokens']} per example")
EOF
