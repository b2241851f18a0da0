#!/usr/bin/env python3
"""The cost of the WebSocket fallback, and how fast a joining viewer sees its first frame.

1. Fan-out over WebSocket vs QUIC: this relay (instrumented, as `ours` in bench.py) carrying one
   2 Mbit/s and one 250 kbit/s point, the same load tool (`moq publish` + one `moq watch
   --viewers N`) over `http://` (WebTransport) and over `ws://` (qmux over a WebSocket on the
   relay's TCP port). Reported: relay CPU per frame delivered, latency p50/p99, loss.
2. Time to first frame of a joining viewer: with a broadcast live, 100 viewers join one after the
   other (`moq watch --groups 2 --target-latency 0s`, a fresh process and connection each) and
   each reports its startup time: connect start (before the QUIC/TCP handshake) to the first
   frame, `player.startup_ms_max` with no playout buffer. p50/p99 per
   transport (raw QUIC, WebTransport, WebSocket) for this relay, and raw QUIC / WebTransport for
   the reference moq-relay 0.17.10 (built without WebSocket support in this repo's cache).

Reuses bench.py's relay launcher, load tool and measurement; writes docs/bench-transports.json.
"""
import argparse, json, os, signal, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

from bench import BIN, DEVNULL, Relay, client_env, fmt, stop  # noqa: E402


def fanout_point(transport, profile, viewers, warmup, window, sink):
    """One fan-out point of this relay over `transport` (`webtransport` or `websocket`)."""
    scheme = "ws" if transport == "websocket" else "http"
    r = bench.run_relay_point("ours", profile, viewers, warmup, window, sink, scheme=scheme)
    return {"transport": transport, **{k: r[k] for k in ("profile", "viewers", "frames", "expected_frames", "lost",
                                                          "late", "p50_ms", "p99_ms", "cpu_pct", "cpu_us_per_frame",
                                                          "ok")}}


def joins(subject, transport, count, sink):
    """`count` sequential joins to a live broadcast; their startup times in ms."""
    relay = Relay(subject, sink)
    scheme = {"quic": "moqt", "webtransport": "http", "websocket": "ws"}[transport]
    url = f"{scheme}://127.0.0.1:{relay.port}/"
    http_url = f"http://127.0.0.1:{relay.port}/"
    pub = subprocess.Popen([f"{BIN}/moq", "publish", "--url", http_url, "--broadcast", "bench/join",
                            "--audio-bitrate", "0"], stdout=DEVNULL, stderr=DEVNULL, env=client_env())
    startups, failures = [], 0
    try:
        time.sleep(1.5)
        for _ in range(count):
            # Target latency 0: playback starts at the first frame, so startup = time to first frame.
            # Two groups: the cached one can arrive whole before the player's first tick, and a
            # viewer that exits then has no startup figure.
            cmd = [f"{BIN}/moq", "watch", "--url", url, "--broadcast", "bench/join", "--groups", "2",
                   "--target-latency", "0s", "--json", "--stats-interval", "0s", "--timeout", "10s"]
            if transport == "quic":
                cmd.append("--tls-insecure")
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=DEVNULL, env=client_env(), timeout=30)
            try:
                summary = json.loads(out.stdout.decode().strip().splitlines()[-1])
                startup = summary["player"]["startup_ms_max"]
                if not startup:  # no figure (never played): a failed join, not a 0 ms one
                    raise ValueError("no startup")
                startups.append(startup)
            except (ValueError, IndexError, KeyError, TypeError):
                failures += 1
    finally:
        stop(pub, signal.SIGINT)
        relay.close()
    q = statistics.quantiles(startups, n=100, method="inclusive") if len(startups) > 1 else [None] * 99
    return {"subject": subject, "transport": transport, "joins": len(startups), "failures": failures,
            "p50_ms": q[49], "p99_ms": q[98], "max_ms": max(startups, default=None)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers-2mbps", type=int, default=200)
    ap.add_argument("--viewers-250kbps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--joins", type=int, default=100)
    ap.add_argument("--json-out", default=os.path.join(bench.ROOT, "docs", "bench-transports.json"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--parts", default="fanout,joins", help="fanout, joins or both; a part not run is "
                    "taken from --json-out's previous run")
    a = ap.parse_args()
    parts = a.parts.split(",")
    previous = {}
    if parts != ["fanout", "joins"] and os.path.exists(a.json_out):
        with open(a.json_out) as f:
            previous = json.load(f)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "moq-relay", "-p", "moq-cli"], cwd=bench.ROOT,
                       check=True)
    sink_port = bench.free_port()
    sink = subprocess.Popen([sys.executable, os.path.join(bench.ROOT, "scripts", "otlp_sink.py"), "--listen",
                             f"127.0.0.1:{sink_port}"], stdout=DEVNULL)
    fanout, join = [], []
    try:
        fanout = previous.get("fanout", []) if "fanout" not in parts else fanout
        join = previous.get("joins", []) if "joins" not in parts else join
        for profile, viewers in (("2mbps", a.viewers_2mbps), ("250kbps", a.viewers_250kbps)) if "fanout" in parts else ():
            for rep in range(a.repeats):
                order = ["webtransport", "websocket"] if rep % 2 == 0 else ["websocket", "webtransport"]
                for transport in order:
                    r = fanout_point(transport, profile, viewers, a.warmup, a.window, sink_port)
                    r["repeat"] = rep
                    fanout.append(r)
                    print(f"{profile:8} {viewers:4} viewers {transport:12} p50/p99 {fmt(r['p50_ms'])}/"
                          f"{fmt(r['p99_ms'])} ms lost {r['lost']} cpu {fmt(r['cpu_pct'])}% "
                          f"{fmt(r['cpu_us_per_frame'])} us/frame", flush=True)
        for subject, transport in (("ours", "quic"), ("ours", "webtransport"), ("ours", "websocket"),
                                   ("reference", "quic"), ("reference", "webtransport")) if "joins" in parts else ():
            r = joins(subject, transport, a.joins, sink_port)
            join.append(r)
            print(f"joins {subject:9} {transport:12} {r['joins']} ok, {r['failures']} failed: "
                  f"p50 {fmt(r['p50_ms'])} ms p99 {fmt(r['p99_ms'])} ms", flush=True)
    finally:
        stop(sink)

    lines = ["| profile | viewers | transport | p50 ms | p99 ms | lost | relay CPU % | µs CPU / frame |",
             "|---|---|---|---|---|---|---|---|"]
    for profile in ("2mbps", "250kbps"):
        for transport in ("webtransport", "websocket"):
            rs = [r for r in fanout if r["profile"] == profile and r["transport"] == transport]
            med = lambda k: statistics.median([r[k] for r in rs if r[k] is not None]) if rs else None  # noqa: E731
            lines.append(f"| {profile} | {rs[0]['viewers']} | {transport} | {fmt(med('p50_ms'))} | {fmt(med('p99_ms'))} | "
                         f"{max(r['lost'] for r in rs)} | {fmt(med('cpu_pct'))} | {fmt(med('cpu_us_per_frame'))} |")
    lines += ["", "| relay | transport | joins | p50 ms to first frame | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for r in join:
        lines.append(f"| {r['subject']} | {r['transport']} | {r['joins']} ({r['failures']} failed) | "
                     f"{fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['max_ms'])} |")
    with open(a.json_out, "w") as f:
        json.dump({"command": " ".join(sys.argv), "machine": bench.machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
                   "fanout": fanout, "joins": join}, f, indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
