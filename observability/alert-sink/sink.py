#!/usr/bin/env python3
"""A webhook receiver for Alertmanager that prints what it gets (Python 3 standard library only).

    sink.py [--listen HOST:PORT] [--out FILE]      (default --listen 0.0.0.0:8080)

POST (any path): an Alertmanager webhook payload. One line per alert goes to stdout:

    /critical firing RelayDown severity=critical instance=relay-1:9101 broadcast=- summary=...

The payload is appended to --out as one JSON line, and the answer is 200 (400 if the body is not
JSON, so nothing is recorded).
GET /: every payload received so far, as a JSON array. GET /<path>: those POSTed to /<path>.
GET /health: "ok".
SIGTERM and SIGINT stop it cleanly (exit 0).
"""

import argparse
import collections
import json
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Payloads kept for GET; enough for any test, bounded for a long-running stack.
MAX_KEPT = 10000


class Store:
    def __init__(self, out_path):
        self.lock = threading.Lock()
        self.payloads = collections.deque(maxlen=MAX_KEPT)  # (path, payload)
        self.out = open(out_path, "a", encoding="utf-8") if out_path else None

    def add(self, path, payload):
        with self.lock:
            self.payloads.append((path, payload))
            if self.out:
                self.out.write(json.dumps(payload, separators=(",", ":")) + "\n")
                self.out.flush()

    def list(self, path=None):
        with self.lock:
            return [p for (at, p) in self.payloads if path is None or at == path]

    def close(self):
        with self.lock:
            if self.out:
                self.out.close()
                self.out = None


def one_line(text):
    return " ".join(str(text).split()) or "-"


def describe(path, payload):
    """The stdout lines for one webhook payload, one per alert."""
    lines = []
    alerts = payload.get("alerts") if isinstance(payload, dict) else None
    if not isinstance(alerts, list) or not alerts:
        status = payload.get("status", "-") if isinstance(payload, dict) else "-"
        return [f"{path} {one_line(status)} - (payload without alerts)"]
    for alert in alerts:
        if not isinstance(alert, dict):
            continue
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        status = alert.get("status") or payload.get("status") or "-"
        lines.append(
            f"{path} {one_line(status)} {one_line(labels.get('alertname', '-'))}"
            f" severity={one_line(labels.get('severity', '-'))}"
            f" instance={one_line(labels.get('instance', '-'))}"
            f" broadcast={one_line(labels.get('broadcast', '-'))}"
            f" summary={one_line(annotations.get('summary', '-'))}"
        )
    return lines


class Handler(BaseHTTPRequestHandler):
    server_version = "moq-alert-sink/1"

    def reply(self, code, body, content_type="application/json"):
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            payload = json.loads(body)
        except ValueError as e:
            print(f"{path} invalid JSON ({len(body)} bytes): {e}", file=sys.stderr, flush=True)
            self.reply(400, json.dumps({"error": "body is not JSON"}))
            return
        self.server.store.add(path, payload)
        with self.server.print_lock:
            for line in describe(path, payload):
                print(line, flush=True)
        self.reply(200, "{}")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.reply(200, "ok\n", "text/plain")
        elif path == "/":
            self.reply(200, json.dumps(self.server.store.list()))
        else:
            self.reply(200, json.dumps(self.server.store.list(path)))

    def log_message(self, format, *args):
        pass  # stdout carries only alert lines


def parse_listen(value):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def main():
    parser = argparse.ArgumentParser(description="Print Alertmanager webhook notifications.")
    parser.add_argument("--listen", type=parse_listen, default=("0.0.0.0", 8080), metavar="HOST:PORT")
    parser.add_argument("--out", metavar="FILE", help="append each payload to FILE as one JSON line")
    args = parser.parse_args()

    host, port = args.listen
    server_class = ThreadingHTTPServer
    if ":" in host:
        server_class = type("Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), Handler)
    server.daemon_threads = True
    server.store = Store(args.out)
    server.print_lock = threading.Lock()

    def stop(signum, _frame):
        # shutdown() waits for serve_forever() to return, so it cannot run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print(f"alert sink listening on {host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        server.store.close()
    print("alert sink stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
