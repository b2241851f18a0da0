#!/usr/bin/env python3
"""Cluster benchmark (docs/CLUSTER.md): what a mesh saves the origin, and what a hop costs.

1. Fan-out, the same N viewers (default 200 at the 2 Mbit/s profile of bench.py) served
     single  by one relay, or
     split   by two edges (N/2 each) fed by one origin (the edges dial it: `--cluster-connect`).
   One `moq publish` (video only) on the relay / the origin; one `moq watch --viewers N/2
   --viewers-per-socket 10 --verify header` per edge (bench.py's load tool). Over the window after
   the warm-up: CPU seconds of each relay (utime+stime from /proc), its egress (UDP payload bytes
   on the wire, `moq_relay_quic_udp_bytes_total{direction="tx"}`, and frame payload bytes,
   `moq_relay_bytes_sent_total`, from its /metrics), RSS, and the viewers' latency and loss.
2. Latency per hop: an origin and one edge; K viewers (default 10) on the origin and K on the
   edge at once, light load; the hop adds edge p50/p99 - origin p50/p99 (each frame's latency from
   its capture timestamp, as `moq watch` reports it). Without added delay, and with DELAY ms
   (default 20) each way on the origin<->edge link: `tc netem` on a veth link when the kernel has
   netem (the edge in a network namespace, needs root), else a user-space UDP/TCP delay proxy the
   edge dials through (`delay_method` in the output says which; with the proxy, a run through it
   without delay shows what the proxy itself adds).

Everything shares this machine's cores: compare the origin's figures between cases, not the sum.
Writes docs/bench-cluster.json and prints a table.
"""
import argparse, asyncio, collections, json, os, signal, subprocess, sys, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

from bench import BIN, DEVNULL, PROFILES, client_env, cpu_seconds, fmt, free_port, rss_bytes, stop  # noqa: E402


def scrape(ops_url):
    """{series: value} of a relay's /metrics."""
    out = {}
    for line in urllib.request.urlopen(ops_url, timeout=3).read().decode().splitlines():
        if line and not line.startswith("#") and " " in line:
            series, value = line.rsplit(" ", 1)
            try:
                out[series] = float(value)
            except ValueError:
                pass
    return out


def total(metrics, prefix, *contains):
    return sum(v for k, v in metrics.items() if k.startswith(prefix) and all(c in k for c in contains))


class Relay:
    """This relay (release build), ops listener on, warn logs; `wrapper` runs it in a namespace;
    `host` is where it listens (besides 127.0.0.1 in its namespace) and is reached."""

    def __init__(self, name, dial=(), host="127.0.0.1", wrapper=(), extra=()):
        self.name, self.host, self.port, self.ops = name, host, free_port(), free_port()
        hosts = ["127.0.0.1"] + ([host] if host != "127.0.0.1" else []) + list(extra)
        args = [*wrapper, f"{BIN}/moq-relay", "--tls-generate", ",".join(["localhost"] + hosts),
                "--auth-public", "**", "--limit-sessions-per-address", "1000000",
                "--limit-session-rate-per-address", "1000000", "--drain-timeout", "1s",
                "--ops-listen", f"{host}:{self.ops}", "--cluster-node", name]
        for h in hosts:
            args += ["--listen", f"{h}:{self.port}"]
        for url in dial:
            args += ["--cluster-connect", url]
        self.proc = subprocess.Popen(args, stdout=DEVNULL, stderr=DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
        bench.wait_for(lambda: bench.http_ok(f"http://{host}:{self.port}/health"), f"relay {name}")
        self.metrics_url = f"http://{host}:{self.ops}/metrics"

    def url(self, host=None):
        return f"http://{host or self.host}:{self.port}/"

    def wait_peered(self, timeout=20):
        bench.wait_for(lambda: any(k.startswith("moq_relay_cluster_peer_up") and 'direction="outbound"' in k and v == 1
                                   for k, v in scrape(self.metrics_url).items()), f"{self.name} peering", timeout)

    def reading(self):
        m = scrape(self.metrics_url)
        return {"cpu_s": cpu_seconds(self.proc.pid), "t": time.time(),
                "udp_tx_bytes": total(m, "moq_relay_quic_udp_bytes_total", 'direction="tx"'),
                "payload_tx_bytes": total(m, "moq_relay_bytes_sent_total")}

    def close(self):
        stop(self.proc)


def window_figures(relay, first, last):
    dt = last["t"] - first["t"]
    cpu = last["cpu_s"] - first["cpu_s"]
    return {"relay": relay.name, "cpu_s": cpu, "cpu_pct": 100 * cpu / dt,
            "egress_udp_mbps": (last["udp_tx_bytes"] - first["udp_tx_bytes"]) * 8 / dt / 1e6,
            "egress_payload_mbps": (last["payload_tx_bytes"] - first["payload_tx_bytes"]) * 8 / dt / 1e6,
            "rss_mb": rss_bytes(relay.proc.pid) / 2**20}


def publisher(url, p, broadcast="bench/cluster"):
    return subprocess.Popen([f"{BIN}/moq", "publish", "--url", url, "--broadcast", broadcast, "--video-bitrate",
                             str(p["bitrate"]), "--fps", str(p["fps"]), "--gop", str(p["gop"]), "--audio-bitrate", "0"],
                            stdout=DEVNULL, stderr=DEVNULL, env=client_env())


def watcher(url, viewers, warmup, window, broadcast="bench/cluster"):
    return subprocess.Popen([f"{BIN}/moq", "watch", "--url", url, "--broadcast", broadcast, "--viewers", str(viewers),
                             "--viewers-per-socket", "10", "--all-renditions", "--verify", "header", "--late-after",
                             "100ms", "--warmup", f"{warmup}s", "--duration", f"{warmup + window}s", "--timeout", "30s",
                             "--json", "--stats-interval", "0s"], stdout=subprocess.PIPE, stderr=DEVNULL,
                            env=client_env())


def summary_of(proc):
    out, _ = proc.communicate(timeout=120)
    lines = out.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def viewer_figures(summary, viewers, p, window):
    video = summary.get("tracks", {}).get("video", {})
    expected = viewers * p["fps"] * window
    frames = video.get("frames", 0)
    return {"viewers": viewers, "frames": frames, "expected_frames": expected,
            "lost": video.get("gaps", 0) + video.get("corrupt", 0) + max(0, round(0.99 * expected) - frames),
            "late": video.get("late", 0), "p50_ms": video.get("latency_ms_p50"),
            "p99_ms": video.get("latency_ms_p99"), "ok": summary.get("exit_code") == 0,
            "errors": summary.get("errors", [])[:3]}


def measure(relays, watchers, warmup, window):
    """Waits out the warm-up, reads every relay over the window, collects the viewers' summaries."""
    time.sleep(warmup)
    first = [r.reading() for r in relays]
    time.sleep(window)
    last = [r.reading() for r in relays]
    figures = [window_figures(r, a, b) for r, a, b in zip(relays, first, last)]
    return figures, [summary_of(w) for w in watchers]


def fanout(mode, p, profile, viewers, warmup, window):
    relays, procs = [], []
    try:
        if mode == "single":
            origin = Relay("relay")
            relays = [origin]
            homes = [origin]
        else:
            origin = Relay("origin")
            edges = [Relay(f"edge-{i}", dial=[origin.url()]) for i in (1, 2)]
            for e in edges:
                e.wait_peered()
            relays = [origin, *edges]
            homes = edges
        procs.append(publisher(origin.url(), p))
        time.sleep(1.0)
        shares = [viewers // len(homes) + (1 if i < viewers % len(homes) else 0) for i in range(len(homes))]
        watchers = [watcher(h.url(), n, warmup, window) for h, n in zip(homes, shares)]
        procs += watchers
        figures, summaries = measure(relays, watchers, warmup, window)
    finally:
        for proc in procs:
            stop(proc, signal.SIGINT)
        for r in relays:
            r.close()
    views = [viewer_figures(s, n, p, window) for s, n in zip(summaries, shares)]
    return {"case": f"fanout-{mode}", "profile": profile, "viewers": viewers, "window_s": window,
            "relays": figures, "origin": figures[0], "viewer_groups": views,
            "lost": sum(v["lost"] for v in views), "p50_ms": max((v["p50_ms"] or 0) for v in views),
            "p99_ms": max((v["p99_ms"] or 0) for v in views), "ok": all(v["ok"] for v in views),
            "total_cpu_s": sum(f["cpu_s"] for f in figures)}


class DelayProxy:
    """A user-space link with `delay_ms` each way: UDP datagrams (QUIC) and TCP connections (the
    fingerprint fetch) to 127.0.0.1:`listen` go to 127.0.0.1:`target`, in order, each datagram held
    `delay_ms` in both directions. Runs an asyncio loop on a thread."""

    def __init__(self, target, delay_ms):
        self.target, self.delay, self.port = target, delay_ms / 1000, free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self):
        loop = self.loop
        proxy = self

        class Line:
            """One direction: datagrams released in arrival order `delay` after they arrived."""

            def __init__(self, send):
                self.send, self.queue, self.task = send, collections.deque(), None

            def push(self, data):
                self.queue.append((loop.time() + proxy.delay, data))
                if self.task is None or self.task.done():
                    self.task = loop.create_task(self.drain())

            async def drain(self):
                while self.queue:
                    at, data = self.queue[0]
                    wait = at - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    self.queue.popleft()
                    self.send(data)

        class Upstream(asyncio.DatagramProtocol):
            def __init__(self, back):
                self.back = back

            def datagram_received(self, data, addr):
                self.back.push(data)

        class Front(asyncio.DatagramProtocol):
            def __init__(self):
                self.flows = {}

            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                flow = self.flows.get(addr)
                if flow is None:
                    flow = self.flows[addr] = {"pending": [data]}
                    loop.create_task(self.open(addr, flow))
                elif "out" not in flow:
                    flow["pending"].append(data)
                else:
                    flow["out"].push(data)

            async def open(self, addr, flow):
                back = Line(lambda d: self.transport.sendto(d, addr))
                up, _ = await loop.create_datagram_endpoint(lambda: Upstream(back),
                                                            remote_addr=("127.0.0.1", proxy.target))
                flow["out"] = Line(up.sendto)
                for d in flow.pop("pending"):
                    flow["out"].push(d)

        await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", self.port))

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except Exception:
                pass
            finally:
                writer.close()

        async def tcp(reader, writer):
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", proxy.target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

        self.server = await asyncio.start_server(tcp, "127.0.0.1", self.port)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


class Namespace:
    """The edge's network namespace, laid out as the test kit's NetNs (rs/moq-interop/src/cluster.rs):
    a veth link 10.199.X.0/30 (root end .1, namespace end .2) whose two ends get `tc netem delay`,
    through which the edge dials the origin at .1; and an undelayed side link 10.199.X.4/30 where
    its viewers and scrapes reach it at .6."""

    def __init__(self, delay_ms):
        pid = os.getpid()
        self.name = f"moqb-{pid}"
        self.links = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.ip("-n", self.name, "link", "set", "lo", "up")
            for kind, base in (("l", 0), ("s", 4)):
                outer, inner = f"mb{pid:x}{kind}o", f"mb{pid:x}{kind}i"
                o_ip, i_ip = f"10.199.{pid % 250}.{base + 1}", f"10.199.{pid % 250}.{base + 2}"
                self.ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                self.links.append(outer)
                self.ip("link", "set", inner, "netns", self.name)
                self.ip("addr", "add", f"{o_ip}/30", "dev", outer)
                self.ip("-n", self.name, "addr", "add", f"{i_ip}/30", "dev", inner)
                self.ip("link", "set", outer, "up")
                self.ip("-n", self.name, "link", "set", inner, "up")
                if kind == "l":
                    self.origin_ip, self.link = o_ip, (outer, inner)
                else:
                    self.edge_ip = i_ip
            outer, inner = self.link
            for cmd in (["tc", "qdisc", "replace", "dev", outer, "root", "netem", "delay", f"{delay_ms}ms"],
                        ["tc", "-n", self.name, "qdisc", "replace", "dev", inner, "root", "netem", "delay",
                         f"{delay_ms}ms"]):
                subprocess.run(cmd, check=True, capture_output=True)
        except Exception:
            self.close()
            raise

    @staticmethod
    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def wrapper(self):
        return ["ip", "netns", "exec", self.name]

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        for outer in self.links:
            subprocess.run(["ip", "link", "del", outer], capture_output=True)


def netem_works():
    """Whether this kernel has netem and we may use it (root, iproute2)."""
    probe = f"mbprobe{os.getpid() % 10000}"
    try:
        if subprocess.run(["ip", "link", "add", probe, "type", "veth", "peer", "name", probe + "p"],
                          capture_output=True).returncode != 0:
            return False
        return subprocess.run(["tc", "qdisc", "add", "dev", probe, "root", "netem", "delay", "1ms"],
                              capture_output=True).returncode == 0
    except FileNotFoundError:
        return False
    finally:
        subprocess.run(["ip", "link", "del", probe], capture_output=True)


def hop(p, profile, viewers, delay_ms, method, warmup, window):
    relays, procs, cleanup = [], [], []
    try:
        origin_extra = []
        if method == "netem":
            ns = Namespace(delay_ms)
            cleanup.append(ns.close)
            origin_extra = [ns.origin_ip]
            origin = Relay("origin", extra=origin_extra)
            edge = Relay("edge", dial=[origin.url(ns.origin_ip)], host=ns.edge_ip, wrapper=ns.wrapper())
        else:
            origin = Relay("origin")
            target = origin.port
            if method == "proxy":
                proxy = DelayProxy(origin.port, delay_ms)
                cleanup.append(proxy.close)
                target = proxy.port
            edge = Relay("edge", dial=[f"http://127.0.0.1:{target}/"])
        relays = [origin, edge]
        edge.wait_peered()
        procs.append(publisher(origin.url("127.0.0.1"), p))
        time.sleep(1.0)
        watchers = [watcher(origin.url("127.0.0.1"), viewers, warmup, window), watcher(edge.url(), viewers, warmup, window)]
        procs += watchers
        figures, summaries = measure(relays, watchers, warmup, window)
    finally:
        for proc in procs:
            stop(proc, signal.SIGINT)
        for r in relays:
            r.close()
        for c in cleanup:
            c()
    on_origin, on_edge = (viewer_figures(s, viewers, p, window) for s in summaries)
    added = lambda k: None if on_origin[k] is None or on_edge[k] is None else on_edge[k] - on_origin[k]  # noqa: E731
    return {"case": f"hop-{delay_ms}ms-{method}", "profile": profile, "delay_ms_each_way": delay_ms,
            "delay_method": method, "relays": figures, "on_origin": on_origin,
            "on_edge": on_edge, "added_p50_ms": added("p50_ms"), "added_p99_ms": added("p99_ms"),
            "ok": on_origin["ok"] and on_edge["ok"]}


def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=200, help="viewers of the fan-out cases")
    ap.add_argument("--profile", default="2mbps", choices=sorted(PROFILES))
    ap.add_argument("--hop-viewers", type=int, default=10, help="viewers on the origin and on the edge, each")
    ap.add_argument("--delay-ms", type=int, default=20, help="added delay each way on the origin<->edge link")
    ap.add_argument("--delay-method", default="auto", choices=["auto", "netem", "proxy"])
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=10, help="measured window per case")
    ap.add_argument("--json-out", default=os.path.join(bench.ROOT, "docs", "bench-cluster.json"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", default=BIN, help="where moq-relay and moq are (default target/release)")
    a = ap.parse_args()
    BIN = a.bin_dir
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "moq-relay", "-p", "moq-cli"], cwd=bench.ROOT,
                       check=True)
    method = a.delay_method
    if method == "auto":
        method = "netem" if netem_works() else "proxy"
    p = PROFILES[a.profile]
    results = []
    for mode in ("single", "split"):
        r = fanout(mode, p, a.profile, a.viewers, a.warmup, a.seconds)
        results.append(r)
        print(f"{r['case']:14} {a.viewers} viewers: origin cpu {fmt(r['origin']['cpu_s'], '.2f')} s "
              f"egress {fmt(r['origin']['egress_udp_mbps'])} Mbit/s; viewers p50/p99 {fmt(r['p50_ms'])}/"
              f"{fmt(r['p99_ms'])} ms lost {r['lost']}", flush=True)
    # Without delay, directly; through the proxy without delay (its own cost, when it is used); with
    # the delay.
    for delay, how in [(0, "none")] + ([(0, "proxy")] if method == "proxy" else []) + [(a.delay_ms, method)]:
        r = hop(p, a.profile, a.hop_viewers, delay, how, a.warmup, a.seconds)
        results.append(r)
        print(f"{r['case']:14} ({r['delay_method']}): origin p50/p99 {fmt(r['on_origin']['p50_ms'])}/"
              f"{fmt(r['on_origin']['p99_ms'])} ms, edge {fmt(r['on_edge']['p50_ms'])}/{fmt(r['on_edge']['p99_ms'])} ms: "
              f"added {fmt(r['added_p50_ms'])}/{fmt(r['added_p99_ms'])} ms", flush=True)

    single, split = results[0], results[1]
    lines = [f"Fan-out, {a.viewers} viewers at {a.profile}, {a.seconds} s window:", "",
             "| case | relay | CPU s | CPU % | egress Mbit/s (UDP) | payload Mbit/s | RSS MB |", "|---|---|---|---|---|---|---|"]
    for r in (single, split):
        for f in r["relays"]:
            lines.append(f"| {r['case']} | {f['relay']} | {fmt(f['cpu_s'], '.2f')} | {fmt(f['cpu_pct'])} | "
                         f"{fmt(f['egress_udp_mbps'])} | {fmt(f['egress_payload_mbps'])} | {fmt(f['rss_mb'])} |")
    lines += ["", "| case | viewers p50 ms | p99 ms | lost | all relays CPU s |", "|---|---|---|---|---|"]
    for r in (single, split):
        lines.append(f"| {r['case']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {r['lost']} | {fmt(r['total_cpu_s'], '.2f')} |")
    lines += ["", f"Latency per hop ({a.hop_viewers} viewers on the origin and {a.hop_viewers} on the edge):", "",
              "| link delay each way | method | origin p50/p99 ms | edge p50/p99 ms | added p50 ms | added p99 ms |",
              "|---|---|---|---|---|---|"]
    for r in results[2:]:
        lines.append(f"| {r['delay_ms_each_way']} ms | {r['delay_method']} | {fmt(r['on_origin']['p50_ms'])}/"
                     f"{fmt(r['on_origin']['p99_ms'])} | {fmt(r['on_edge']['p50_ms'])}/{fmt(r['on_edge']['p99_ms'])} | "
                     f"{fmt(r['added_p50_ms'])} | {fmt(r['added_p99_ms'])} |")
    with open(a.json_out, "w") as f:
        json.dump({"command": " ".join(sys.argv), "machine": bench.machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
                   "delay_method": method, "results": results}, f, indent=1)
    print("\n".join(lines))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
