#!/usr/bin/env python3
"""A loopback TCP proxy that adds latency to every HTTP request, for benchmarks.

    latency_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS COUNTS_FILE

Every byte a client sends reaches the upstream DELAY_MS after it arrived (a queue per
connection, so a request is delayed once, not once per chunk, and requests on a kept-alive
connection keep their order); answers flow back at once. That is a round trip's worth of
latency per request, like Cloud Storage seen from a Cloud Run job (about 30 ms a request).
The client's side of each connection is parsed as HTTP/1.1 to count requests by kind (GCS JSON
API: list, read, metadata, upload, delete, other); on SIGTERM or SIGINT the counts are written
to COUNTS_FILE as JSON and the proxy exits. PROXY_TRACE=FILE also writes every request's
arrival time, method and target to FILE, and for an upload the object name its body gives.
"""

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter

LISTEN, UPSTREAM, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
COUNTS_FILE = sys.argv[4]
counts = Counter()
# PROXY_TRACE=FILE: every request's arrival time, method and target (and an upload's object
# name, from its body's metadata), a line each.
TRACE = open(os.environ["PROXY_TRACE"], "w", buffering=1) if os.environ.get("PROXY_TRACE") else None


def kind(method, target):
    path, _, query = target.partition("?")
    if method == "GET" and re.fullmatch(r"/storage/v1/b/[^/]+/o", path):
        return "list"
    if method == "GET" and (path.startswith("/download/") or "alt=media" in query):
        return "read"
    if method == "GET" and "/o/" in path:
        return "metadata"
    if method in ("POST", "PUT") and path.startswith("/upload/"):
        return "upload"
    if method == "DELETE":
        return "delete"
    return "other"


class RequestCounter:
    """Follows the request stream of one connection: heads, then bodies by length or chunks."""

    def __init__(self):
        self.buf = b""
        self.state = "head"
        self.left = 0  # bytes of a body or chunk still to skip
        self.pending = None  # (time, method, target, body so far) of an upload not yet traced

    def trace(self, body=b""):
        t, method, target, _ = self.pending
        self.pending = None
        name = re.search(rb'"name"\s*:\s*"([^"]+)"', body)
        suffix = f" name={name.group(1).decode('latin-1')}" if name else ""
        TRACE.write(f"{t:.3f} {method} {target[:160]}{suffix}\n")

    def feed(self, data):
        self.buf += data
        while True:
            if self.state in ("body", "chunk"):
                n = min(self.left, len(self.buf))
                if self.pending:
                    body = self.pending[3] + self.buf[:n]
                    self.pending = self.pending[:3] + (body,)
                    if len(body) >= 1024 or n == self.left:
                        self.trace(body)
                self.buf, self.left = self.buf[n:], self.left - n
                if self.left:
                    return
                self.state = "head" if self.state == "body" else "chunk-end"
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                return
            line, rest = self.buf[:end], self.buf[end + 2:]
            if self.state == "chunk-end":  # the CRLF after a chunk's data
                self.buf, self.state = rest, "chunk-size"
            elif self.state == "chunk-size":
                size = int(line.split(b";")[0].strip() or b"0", 16)
                self.buf = rest
                self.state, self.left = ("chunk", size) if size else ("trailer", 0)
            elif self.state == "trailer":
                self.buf = rest
                if not line:
                    self.state = "head"
            else:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].decode("latin-1").split("\r\n")
                self.buf = self.buf[end + 4:]
                method, target = (head[0].split(" ") + ["", ""])[:2]
                counts[kind(method, target)] += 1
                if self.pending:  # the last upload's body ended before its metadata
                    self.trace(self.pending[3])
                if TRACE:
                    self.pending = (time.time(), method, target, b"")
                    if method not in ("POST", "PUT"):
                        self.trace()
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    self.state = "chunk-size"
                else:
                    self.left = int(headers.get("content-length", "0") or 0)
                    self.state = "body" if self.left else "head"
                    if self.pending and not self.left:
                        self.trace()


async def delayed(reader, writer):
    """Client to upstream: every chunk leaves DELAY after it arrived."""
    queue = asyncio.Queue()
    parser = [RequestCounter()]

    async def receive():
        while data := await reader.read(1 << 16):
            if parser:
                try:
                    parser[0].feed(data)
                except Exception:  # counting is best effort; forwarding is not
                    parser.clear()
                    counts["unparsed_connections"] += 1
            queue.put_nowait((time.monotonic() + DELAY, data))
        queue.put_nowait((0, b""))

    async def send():
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    await asyncio.gather(receive(), send())


async def straight(reader, writer):
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def handle(client_reader, client_writer):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(delayed(client_reader, up_writer), straight(up_reader, client_writer))
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (client_writer, up_writer):
            w.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN, backlog=1024)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()
    with open(COUNTS_FILE, "w") as f:
        json.dump(dict(counts), f)


asyncio.run(main())
