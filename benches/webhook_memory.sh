#!/usr/bin/env bash
# Peak RSS of `autotune run` whose webhook answers with a flood (issue 20 item 14): a loopback
# receiver answers every POST with `200` and a 3 GiB body (Content-Length announced, zeros sent
# as fast as the socket takes them); the run (a local folder of N (200) pairs, dry-run tuner,
# rehearsal evaluation, so the run sends tuning_submitted, tuning_succeeded, blessed or
# not_blessed and promoted) is measured with and without the webhook. Before issue 20, the
# answer was read whole (3.3 GB RSS for a 3 GiB answer); the README deploys 1 GiB. Prints wall
# time and peak RSS (`/usr/bin/time -f '%e %M'`) of both runs, how many notices reached the
# receiver and the most bytes it got through to one client. BIN=/path/to/autotune measures
# another build.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
cargo build --release -q -p autotune -p autotune-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=${BIN:-$target_dir/release/autotune}
GEN=$target_dir/release/gen-bucket
work=$(mktemp -d)
cleanup() { [ -n "${flood:-}" ] && kill "$flood" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$work/port" "$work/stats" <<'PY' &
import socket, sys, threading
port_file, stats_file = sys.argv[1], sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(64)
open(port_file, "w").write(str(srv.getsockname()[1]))
lock, stats = threading.Lock(), {"posts": 0, "most_sent": 0}
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            return
        data += chunk
    sent, block = 0, b"\0" * (1 << 20)
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % (3 << 30))
        c.settimeout(5)
        while sent < (3 << 30):
            sent += c.send(block)
    except OSError:
        pass
    finally:
        with lock:
            stats["posts"] += 1
            stats["most_sent"] = max(stats["most_sent"], sent)
            open(stats_file, "w").write(f"{stats['posts']} {stats['most_sent']}\n")
        c.close()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
flood=$!
while [ ! -s "$work/port" ]; do sleep 0.1; done
port=$(cat "$work/port")

measure() { # name, extra env...
  local name=$1; shift
  rm -rf "$work/bucket"; mkdir -p "$work/bucket"
  "$GEN" "$work/bucket" "$N" 2000 >/dev/null
  /usr/bin/time -f "%e %M" -o "$work/time" env BUCKET_NAME="$work/bucket" LOG_FORMAT=json \
    MIN_SAMPLES=10 QUIET_PERIOD=0s MAX_CYCLES=1 EVAL_MODEL=rehearsal "$@" \
    "$BIN" run >"$work/out.json" 2>"$work/log" || { tail -5 "$work/log"; cat "$work/out.json"; exit 1; }
  cp "$work/log" "$work/log.$name" 2>/dev/null || true
  read -r wall rss < <(tail -n 1 "$work/time")
  status=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$work/out.json")
  printf '%-22s wall %6.2f s, peak RSS %6.1f MB, status %s\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)" "$status"
}
echo "bucket: $N pairs; load: $(uptime | sed 's/.*load average/load average/')"
measure "no webhook"
measure "webhook, 3 GiB answers" NOTIFY_WEBHOOK="http://127.0.0.1:$port/hook" NOTIFY_WEBHOOK_SECRET=s3cret
# The receiver counts a notice when its client hangs up: give it a moment after the run.
for _ in $(seq 50); do [ -s "$work/stats" ] && break; sleep 0.2; done
read -r posts most < "$work/stats" || { echo "the receiver was never called"; tail -5 "$work/log"; exit 1; }
echo "receiver: $posts notices answered; the most one client took of a 3 GiB answer: $((most / 1048576)) MiB (socket buffers)"
