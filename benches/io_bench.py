#!/usr/bin/env python3
"""I/O benchmark of `autotune run` (dry-run tuner) on fake-gcs-server, with and without a
latency proxy (benches/latency_proxy.py). Run it through benches/io_bench.sh, which builds the
binaries; `BIN=/path/to/autotune` measures another build (say, main's) on the same cases.

Cases (each on a fresh bucket unless said):
  1k+30ms      1,000 pairs, every request delayed 30 ms (first run: everything is read)
  10k          10,000 pairs on the emulator directly
  10k+1k+30ms  the 10k bucket after its run, plus 1,000 new pairs, every request delayed 30 ms:
               objects read, wall time, and the time the listing alone took (the log's
               "inventory taken", from the process start)
For each: wall time of the process, the time to the end of its first run (`run_s`: after a run
the job lists again for data that arrived meanwhile, MAX_CYCLES), peak RSS, the time to the
first "inventory taken" (`listing_s`), lines reused, and requests by kind (proxied cases).
"""

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN, GEN, FGS = os.environ["BIN"], os.environ["GEN"], os.environ["FGS"]
HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.environ.get("CASES", "1k+30ms,10k,10k+1k+30ms").split(",")
DELAY_MS = int(os.environ.get("DELAY_MS", "30"))
work = tempfile.mkdtemp(prefix="io-bench-")
children = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def start_emulator():
    port = free_port()
    root = tempfile.mkdtemp(dir=work)
    p = subprocess.Popen(
        [FGS, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "filesystem",
         "-filesystem-root", root, "-public-host", f"127.0.0.1:{port}",
         "-external-url", f"http://127.0.0.1:{port}", "-log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children.append(p)
    wait_port(port)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/storage/v1/b?project=bench",
                                 data=b'{"name":"bench-bucket"}', method="POST")
    urllib.request.urlopen(req).read()
    return port


def generate(port, n, start=0):
    subprocess.run([GEN, "gs://bench-bucket", str(n), "200", str(start)], check=True,
                   env={**os.environ, "STORAGE_EMULATOR_HOST": f"127.0.0.1:{port}"},
                   stderr=subprocess.DEVNULL)


class Proxy:
    def __init__(self, upstream, delay_ms):
        self.port = free_port()
        self.counts = os.path.join(work, f"counts-{self.port}.json")
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "latency_proxy.py"),
                                   str(self.port), str(upstream), str(delay_ms), self.counts],
                                  stderr=subprocess.DEVNULL)
        children.append(self.p)
        wait_port(self.port)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait()
        with open(self.counts) as f:
            return json.load(f)


def run(port, name, extra_env=None):
    """Runs autotune against the emulator (or a proxy) on `port`; wall, RSS, listing time."""
    timing = os.path.join(work, "time")
    log = os.path.join(work, f"log-{name}")
    env = {**os.environ, "BUCKET_NAME": "gs://bench-bucket", "STORAGE_EMULATOR_HOST": f"127.0.0.1:{port}",
           "LOG_FORMAT": "json", "MIN_SAMPLES": "10", "QUIET_PERIOD": "0s", **(extra_env or {})}
    started = datetime.datetime.now(datetime.timezone.utc)
    with open(log, "w") as err:
        out = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", timing, BIN, "run"],
                             env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if out.returncode != 0:
        print(open(log).read()[-3000:], out.stdout, file=sys.stderr)
        raise SystemExit(f"{name}: autotune exited {out.returncode}")
    result = json.loads(out.stdout)
    assert result["status"] == "dry_run", result
    wall, rss = open(timing).read().split()
    listed = finished = None
    for line in open(log):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        t = entry.get("time")
        if not t:
            continue
        since = (datetime.datetime.fromisoformat(t[:26].rstrip("Z") + "+00:00") - started).total_seconds()
        if entry.get("message") == "inventory taken" and listed is None:
            listed = since
        if entry.get("message") == "run finished" and finished is None:
            finished = since
    return {"case": name, "pairs": result["counts"]["pairs"], "wall_s": float(wall),
            "peak_rss_mb": round(int(rss) / 1024, 1), "listing_s": listed, "run_s": finished,
            "reused": result["counts"].get("reused")}


def show(r, counts=None):
    listing = f"{r['listing_s']:.2f}" if r["listing_s"] is not None else "-"
    first = f"{r['run_s']:.2f}" if r["run_s"] is not None else "-"
    reqs = " ".join(f"{k}={v}" for k, v in sorted((counts or {}).items())) or "-"
    print(f"{r['case']:<14} {r['pairs']:>7} {r['wall_s']:>8.2f} {first:>7} {r['peak_rss_mb']:>9.1f} {listing:>10} "
          f"{str(r['reused']):>7}  {reqs}", flush=True)


def main():
    print(f"binary: {BIN}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} at start")
    print(f"{'case':<14} {'pairs':>7} {'wall_s':>8} {'run_s':>7} {'rss_MB':>9} {'listing_s':>10} {'reused':>7}  requests")
    if "1k+30ms" in CASES:
        port = start_emulator()
        generate(port, 1000)
        proxy = Proxy(port, DELAY_MS)
        r = run(proxy.port, "1k+30ms")
        show(r, proxy.stop())
    if "10k" in CASES or "10k+1k+30ms" in CASES:
        port = start_emulator()
        generate(port, 10000)
        r = run(port, "10k")
        show(r)
        if "10k+1k+30ms" in CASES:
            generate(port, 1000, 10000)
            proxy = Proxy(port, DELAY_MS)
            r = run(proxy.port, "10k+1k+30ms")
            show(r, proxy.stop())
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} at end")


if __name__ == "__main__":
    try:
        main()
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
        if os.environ.get("KEEP"):
            print(f"logs kept in {work}")
        else:
            subprocess.run(["rm", "-rf", work])
