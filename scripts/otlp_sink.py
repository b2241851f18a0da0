#!/usr/bin/env python3
"""A local OTLP/HTTP sink for benchmarks: accepts /v1/traces, /v1/logs and /v1/metrics exports,
answers 200 with an empty (valid) protobuf response and counts requests and bytes per signal.
`GET /stats` returns the counts as JSON. Not a collector: nothing is decoded or stored."""
import argparse, json, signal, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        with LOCK:
            s = STATS.setdefault(self.path, {"requests": 0, "bytes": 0})
            s["requests"] += 1
            s["bytes"] += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        with LOCK:
            body = json.dumps(STATS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:4318")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"otlp sink listening on {a.listen}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
