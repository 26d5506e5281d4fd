#!/usr/bin/env bash
# Container check: builds the static binary, builds the runtime image with buildah from a
# context that needs no pull (the Dockerfile's `prebuilt` target), and runs `autotune --help`
# and a dry run on the example bucket inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v buildah >/dev/null || { apt-get update -qq && apt-get install -y -qq buildah >/dev/null; }
command -v musl-gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; }
rustup target add x86_64-unknown-linux-musl >/dev/null

cargo build --release --locked -p autotune --target x86_64-unknown-linux-musl
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/x86_64-unknown-linux-musl/release/autotune"
if ldd "$bin" 2>&1 | grep -q "=>"; then echo "autotune is not static:"; ldd "$bin"; exit 1; fi

ctx=$(mktemp -d)
B="buildah --storage-driver vfs"
ctr=""
cleanup() { [ -n "$ctr" ] && $B rm "$ctr" >/dev/null 2>&1; $B rmi -f autotune:ci >/dev/null 2>&1; rm -rf "$ctx"; }
trap cleanup EXIT
cp "$bin" "$ctx/autotune"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
cp Dockerfile "$ctx/Dockerfile"
$B bud --isolation chroot --target prebuilt -t autotune:ci -f "$ctx/Dockerfile" "$ctx"
size=$($B images --format '{{.Size}}' autotune:ci)
echo "image autotune:ci: $size"
$B inspect --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}' autotune:ci >"$ctx/config"; cat "$ctx/config"; echo
grep -q '^65532:65532 \[/autotune run\]$' "$ctx/config" || { echo "image must run as 65532 with entrypoint autotune run"; exit 1; }

ctr=$($B from autotune:ci)
help=$($B run --isolation chroot "$ctr" /autotune --help)
grep -q "Retrains Gemini" <<<"$help" || { echo "--help failed in the image: $help"; exit 1; }
$B copy --chown 65532:65532 "$ctr" examples/bucket /bucket
$B run --isolation chroot "$ctr" -- /autotune run --bucket-name /bucket --prompt "Classify this request." --quiet-period 0s --log-format json >"$ctx/out.json" 2>"$ctx/log" \
  || { cat "$ctx/log"; exit 1; }
python3 - "$ctx/out.json" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
assert out["status"] == "dry_run", out
assert out["counts"]["pairs"] == 40, out
print("dry run inside the image:", out["status"], out["counts"]["train"], "train /", out["counts"]["validation"], "validation")
PY
echo "container check passed"
