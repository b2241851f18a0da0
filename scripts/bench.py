#!/usr/bin/env python3
"""Fan-out benchmark: one publisher, a sweep of viewer counts, several relays side by side.

For every profile (video-like track: bitrate, fps, GOP) and viewer count, each subject runs for a
fixed window on loopback and is measured the same way:

  ours       this relay with all instrumentation on: /metrics scraped every second, traces and
             logs exported over OTLP/HTTP to a local sink, info logs; one worker thread per CPU,
             new connections filling worker 0 until it is half busy (--worker-spill-at)
  ours-1t    as `ours`, with one worker thread (--worker-threads 1)
  ours-off   this relay with instrumentation off: no recorder (--ops-listen off), no OTLP, warn logs
  ours-off-1t  as `ours-off`, single-threaded
  reference  the reference moq-relay (cargo install moq-relay 0.17.10), same load tool over lite-04
  floor      a bare quinn sender (quinn-floor): one uni stream per group, the same frames, N
             connections, no relay logic, on a current-thread runtime (its cheapest); its CPU per
             frame is the floor
  floor-mt   the same sender on Tokio's work-stealing multi-threaded runtime (the relay's
             runtime until the tenth round of docs/BENCHMARKS.md), its send loop on a worker: what
             bare quinn pays for spreading one fan-out over two cores
  floor-mimalloc  `floor` built with mimalloc as its allocator, as the relay is: `ours /
             floor-mimalloc` shows what is left of the relay's cost once the allocator's gain,
             which bare quinn gets too, is taken out

Load: `moq publish` (video only) and one `moq watch --viewers N --viewers-per-socket 10` process
(header checks, latency from each frame's capture timestamp). After a warm-up (joins, cached catch-up), the window is
measured: delivered throughput, frames lost (index gaps, missing groups, short viewers) and late
(> 100 ms), latency p50/p99/p99.9, relay CPU (utime+stime from /proc), CPU per frame delivered, RSS.
A point passes when p99 <= 100 ms with no loss; capacity is the largest passing viewer count.
"""
import argparse, json, os, platform, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
REF = os.path.expanduser(os.environ.get("MOQ_REF_DIR", "~/.cache/moq-ref")) + "/moq-relay-0.17.10/bin/moq-relay"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DEVNULL = subprocess.DEVNULL

PROFILES = {
    "2mbps": {"bitrate": 2_000_000, "fps": 30, "gop": 30},
    "250kbps": {"bitrate": 250_000, "fps": 30, "gop": 30},
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u.bind(("127.0.0.1", port))
        return port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def http_ok(url):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except Exception:
        return False


def wait_for(cond, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up")


def stop(proc, sig=signal.SIGTERM, timeout=10):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Relay:
    """One relay process for one point; `tick()` is called every second during the window."""

    def __init__(self, kind, sink, wrapper=()):
        self.kind, self.port, self.ops = kind, free_port(), free_port()
        env = dict(os.environ)
        if kind == "reference":
            args = [REF, "--listen", f"127.0.0.1:{self.port}", "--listen-tls-generate", "localhost,127.0.0.1",
                    "--web-http-listen", f"127.0.0.1:{self.port}", "--auth-public", "**", "--drain-timeout", "1s"]
            ready = f"http://127.0.0.1:{self.port}/certificate.sha256"
        else:
            # Benchmarks open everything, and lift the per-address limits: every load client is on 127.0.0.1.
            args = [*wrapper, f"{BIN}/moq-relay", "--listen", f"127.0.0.1:{self.port}", "--tls-generate", "localhost,127.0.0.1",
                    "--drain-timeout", "1s", "--auth-public", "**", "--limit-sessions-per-address", "1000000",
                    "--limit-session-rate-per-address", "1000000"]
            if kind.endswith("-1t"):
                args += ["--worker-threads", "1"]
            if kind in ("ours", "ours-1t"):
                args += ["--ops-listen", f"127.0.0.1:{self.ops}", "--otlp-endpoint", f"http://127.0.0.1:{sink}",
                         "--otlp-protocol", "http/protobuf"]
                env.pop("RUST_LOG", None)
            else:
                args += ["--ops-listen", "off"]
                env["RUST_LOG"] = "warn"
            ready = f"http://127.0.0.1:{self.port}/health"
        self.proc = subprocess.Popen(args, stdout=DEVNULL, stderr=DEVNULL, env=env)
        wait_for(lambda: http_ok(ready), f"{kind} relay", timeout=60 if wrapper else 20)
        self.scrapes = 0

    def tick(self):
        """Scrapes /metrics (instrumented subjects only) and returns the packet counters in it."""
        if self.kind in ("ours", "ours-1t"):
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.ops}/metrics", timeout=2).read().decode()
            self.scrapes += 1
            return packet_counters(text)
        return None

    def close(self):
        stop(self.proc)


def packet_counters(text):
    """Datagrams sent, send calls and frames sent, summed from a relay's exposition text: the same
    quinn counters `quinn-floor send` prints, so both sides' packets per frame compare."""
    want = {'moq_relay_quic_udp_datagrams_total{direction="tx"}': "udp_tx_datagrams",
            "moq_relay_quic_udp_transmits_total": "udp_tx_transmits"}
    out = {"udp_tx_datagrams": 0.0, "udp_tx_transmits": 0.0, "frames_sent": 0.0, "worker_connections": {}}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        if series.startswith('moq_relay_worker_connections{worker="'):
            out["worker_connections"][int(series.split('"')[1])] = int(float(value))
        elif series in want:
            out[want[series]] += float(value)
        elif series.startswith("moq_relay_frames_sent_total"):
            out["frames_sent"] += float(value)
    return out


def packets_per_frame(first, last):
    """Datagrams and send calls per frame sent between two readings of the packet counters."""
    if not first or not last or last["frames_sent"] <= first["frames_sent"]:
        return {"datagrams_per_frame": None, "transmits_per_frame": None}
    frames = last["frames_sent"] - first["frames_sent"]
    return {"datagrams_per_frame": (last["udp_tx_datagrams"] - first["udp_tx_datagrams"]) / frames,
            "transmits_per_frame": (last["udp_tx_transmits"] - first["udp_tx_transmits"]) / frames}


def client_env():
    return dict(os.environ, RUST_LOG="warn")


def start_load(url, p, viewers, warmup, window, timeout):
    """One `moq publish` of profile `p` and one `moq watch` of `viewers` measuring after `warmup`
    for `window` seconds (its JSON summary on stdout)."""
    pub = subprocess.Popen([f"{BIN}/moq", "publish", "--url", url, "--broadcast", "bench/live",
                            "--video-bitrate", str(p["bitrate"]), "--fps", str(p["fps"]), "--gop", str(p["gop"]),
                            "--audio-bitrate", "0"], stdout=DEVNULL, stderr=DEVNULL, env=client_env())
    time.sleep(1.0)
    watch = subprocess.Popen([f"{BIN}/moq", "watch", "--url", url, "--broadcast", "bench/live", "--viewers",
                              str(viewers), "--viewers-per-socket", "10", "--all-renditions", "--verify", "header",
                              "--late-after", "100ms", "--warmup", f"{warmup}s", "--duration", f"{warmup + window}s",
                              "--timeout", timeout, "--json", "--stats-interval", "0s"], stdout=subprocess.PIPE,
                             stderr=DEVNULL, env=client_env())
    return pub, watch


def run_relay_point(kind, profile, viewers, warmup, window, sink, scheme="http"):
    """One point of relay `kind`; `scheme` is how the load tool connects (`http`: WebTransport,
    `ws`: qmux over a WebSocket)."""
    p = PROFILES[profile]
    relay = Relay(kind, sink)
    url = f"{scheme}://127.0.0.1:{relay.port}/"
    pub = watch = None
    try:
        pub, watch = start_load(url, p, viewers, warmup, window, timeout="30s")
        time.sleep(warmup)
        cpu0, t0 = cpu_seconds(relay.proc.pid), time.time()
        first = last = None
        while time.time() < t0 + window - 0.05:
            last = relay.tick()
            first = first or last
            time.sleep(max(0.0, min(1.0, t0 + window - time.time())))
        cpu = cpu_seconds(relay.proc.pid) - cpu0
        elapsed = time.time() - t0
        rss = rss_bytes(relay.proc.pid)
        out, _ = watch.communicate(timeout=120)
        summary = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        for proc in (watch, pub):
            if proc is not None:
                stop(proc, signal.SIGINT)
        relay.close()
    video = summary["tracks"].get("video", {})
    expected = viewers * p["fps"] * window
    frames = video.get("frames", 0)
    min_per_viewer = video.get("frames_min_per_viewer", 0)
    # Window edges move a frame or two either way: a viewer short by more than 3 % lost frames.
    short_viewers = min_per_viewer < 0.97 * p["fps"] * window
    lost = video.get("gaps", 0) + video.get("corrupt", 0) + max(0, round(0.99 * expected) - frames)
    return {
        "subject": kind, "profile": profile, "viewers": viewers, "window_s": round(elapsed, 2),
        "frames": frames, "expected_frames": expected, "delivered_ratio": frames / expected if expected else 0,
        "throughput_mbps": video.get("bytes", 0) * 8 / window / 1e6,
        "lost": lost, "gaps": video.get("gaps", 0), "short_viewers": short_viewers, "late": video.get("late", 0),
        "p50_ms": video.get("latency_ms_p50"), "p99_ms": video.get("latency_ms_p99"),
        "p999_ms": video.get("latency_ms_p999"), "max_ms": video.get("latency_ms_max"),
        "cpu_s": cpu, "cpu_pct": 100 * cpu / window, "cpu_us_per_frame": 1e6 * cpu / frames if frames else None,
        "rss_mb": rss / 2**20, "scrapes": relay.scrapes, "errors": summary.get("errors", [])[:3],
        "ok": summary.get("exit_code") == 0, **packets_per_frame(first, last),
        # Where the relay placed its connections (publisher included), read at the window's end.
        "worker_connections": [c for _, c in sorted((last or {}).get("worker_connections", {}).items())],
    }


def publisher_frame_sizes(bitrate, fps, gop):
    """(key, delta) frame sizes in bytes that `moq publish` writes for a video track, its 24-byte
    media header included: the same arithmetic as `Source::new` in rs/moq-cli/src/publish.rs (a key
    frame four times the average, the deltas sharing the rest of the GOP's budget)."""
    avg = max(int(bitrate / 8 / fps), 24)
    if gop <= 1:
        return avg, avg
    key = avg * 4
    return key, max((avg * gop - key) // (gop - 1), 24)


def varint_len(n):
    return 1 if n < 1 << 6 else 2 if n < 1 << 14 else 4 if n < 1 << 30 else 8


def floor_payload(frame_size):
    """quinn-floor payload bytes that put a frame of `frame_size` on the wire in as many bytes as the
    relay sends: moq-lite prefixes a frame with its size as a varint, the floor with a 28-byte
    header. Equal bytes per frame mean equal packets per frame, which is much of a frame's cost."""
    return max(frame_size + varint_len(frame_size) - 28, 0)


def floor_shape_args(p):
    """quinn-floor send arguments for a profile's traffic shape: rate, GOP and the publisher's sizes."""
    key, delta = publisher_frame_sizes(p["bitrate"], p["fps"], p["gop"])
    return ["--fps", str(p["fps"]), "--gop", str(p["gop"]), "--frame-bytes", str(floor_payload(delta)),
            "--key-frame-bytes", str(floor_payload(key))]


def run_floor_point(profile, viewers, warmup, window, socket_buffer, threads=1, binary="quinn-floor"):
    p = PROFILES[profile]
    key, delta = publisher_frame_sizes(p["bitrate"], p["fps"], p["gop"])
    port = free_port()
    # Its progress lines (one a second, with packet counters) go to a file: a pipe nobody reads
    # during the window could fill and stall the sender.
    progress = tempfile.TemporaryFile()
    send = subprocess.Popen([f"{BIN}/{binary}", "send", "--listen", f"127.0.0.1:{port}", *floor_shape_args(p),
                             "--socket-buffer", str(socket_buffer), "--threads", str(threads)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=progress)
    recv = None
    try:
        time.sleep(0.5)
        recv = subprocess.Popen([f"{BIN}/quinn-floor", "recv", "--connect", f"127.0.0.1:{port}", "--connections",
                                 str(viewers), "--seconds", str(warmup + window), "--socket-buffer",
                                 str(socket_buffer), "--endpoints", str(max(1, viewers // 10)), "--json"], stdout=subprocess.PIPE, stderr=DEVNULL)
        time.sleep(warmup)
        cpu0 = cpu_seconds(send.pid)
        lines_before = len(progress_lines(progress))
        time.sleep(window)
        cpu = cpu_seconds(send.pid) - cpu0
        window_lines = progress_lines(progress)[max(0, lines_before - 1):]
        rss = rss_bytes(send.pid)
        out, _ = recv.communicate(timeout=60)
        r = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if recv is not None and recv.poll() is None:
            recv.kill()
        stop(send)
        progress.close()
    frames = viewers * p["fps"] * window  # sent at a fixed rate to every connection during the window
    packets = packets_per_frame(window_lines[0], window_lines[-1]) if window_lines else packets_per_frame(None, None)
    return {
        "subject": ("floor" if socket_buffer else "floor-default-buffers") + ("-mt" if threads != 1 else "")
        + binary.removeprefix("quinn-floor"), "profile": profile, "viewers": viewers,
        "window_s": window, "frames": frames, "expected_frames": frames, "delivered_ratio": None,
        "throughput_mbps": viewers * (key + (p["gop"] - 1) * delta) / p["gop"] * p["fps"] * 8 / 1e6,
        "lost": r.get("frames_lost"),
        "p50_ms": r.get("latency_ms", {}).get("p50"), "p99_ms": r.get("latency_ms", {}).get("p99"),
        "p999_ms": r.get("latency_ms", {}).get("p999"), "max_ms": r.get("latency_ms", {}).get("max"), "cpu_s": cpu, "cpu_pct": 100 * cpu / window,
        "cpu_us_per_frame": 1e6 * cpu / frames, "rss_mb": rss / 2**20, "late": None, "ok": True, **packets,
    }


def progress_lines(f):
    """The JSON progress lines `quinn-floor send` has written to `f` so far."""
    f.seek(0)
    out = []
    for line in f.read().decode(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # its start-up messages are text
    return [o for o in out if isinstance(o, dict) and "udp_tx_datagrams" in o]


def idle_memory(kind, viewers, sink):
    """RSS growth of a relay per connected viewer that subscribes to nothing (waits for a broadcast
    that never comes): the cost of a session, its control streams and its telemetry."""
    relay = Relay(kind, sink)
    try:
        time.sleep(1)
        base = rss_bytes(relay.proc.pid)
        watch = subprocess.Popen([f"{BIN}/moq", "watch", "--url", f"http://127.0.0.1:{relay.port}/", "--broadcast",
                                  "idle/none", "--viewers", str(viewers), "--timeout", "60s", "--duration", "25s",
                                  "--stats-interval", "0s"], stdout=DEVNULL, stderr=DEVNULL, env=client_env())
        time.sleep(20)
        loaded = rss_bytes(relay.proc.pid)
        stop(watch, signal.SIGINT)
        return {"subject": kind, "viewers": viewers, "rss_base_mb": base / 2**20, "rss_loaded_mb": loaded / 2**20,
                "kib_per_idle_viewer": (loaded - base) / viewers / 1024}
    finally:
        relay.close()


def passes(r):
    return (r["subject"].startswith("floor") or r["ok"]) and r["p99_ms"] is not None and r["p99_ms"] <= 100 \
        and not r["lost"] and not r.get("short_viewers")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".1f"):
    return "–" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", default="2mbps,250kbps")
    ap.add_argument("--sweep-2mbps", default="100,200,250,300,350,400,600")
    ap.add_argument("--sweep-250kbps", default="250,500,750,1000,1500")
    ap.add_argument("--subjects", default="ours,ours-off,ours-1t,reference,floor,floor-mt,floor-mimalloc")
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--idle-viewers", type=int, default=500, help="0 skips the idle-memory measurement")
    ap.add_argument("--socket-buffer", type=int, default=4 << 20)
    ap.add_argument("--json-out", default=os.path.join(ROOT, "docs", "bench.json"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--report-from", help="print the report of a saved JSON file instead of measuring")
    a = ap.parse_args()
    subjects = a.subjects.split(",")
    if a.report_from:
        with open(a.report_from) as f:
            saved = json.load(f)
        subjects = [s for s in subjects if any(r["subject"] == s for r in saved["runs"])]  # older runs had fewer
        print(summarize(saved["runs"], saved["idle"], subjects, a)["markdown"])
        return 0
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "moq-relay", "-p", "moq-cli", "-p", "moq-bench"],
                       cwd=ROOT, check=True)
    if "reference" in subjects and not os.path.exists(REF):
        subprocess.run([os.path.join(ROOT, "scripts", "install-test-deps.sh")], check=True)
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "otlp_sink.py"), "--listen",
                             f"127.0.0.1:{sink_port}"], stdout=DEVNULL)
    results, idle = [], []
    started = time.time()
    try:
        for profile in a.profiles.split(","):
            sweep = [int(v) for v in getattr(a, "sweep_" + profile).split(",")]
            for viewers in sweep:
                for rep in range(a.repeats):
                    order = subjects if rep % 2 == 0 else list(reversed(subjects))
                    for s in order:
                        try:
                            if s == "floor":
                                r = run_floor_point(profile, viewers, 2, a.window, a.socket_buffer)
                            elif s == "floor-mt":
                                r = run_floor_point(profile, viewers, 2, a.window, a.socket_buffer, threads=0)
                            elif s == "floor-mimalloc":
                                r = run_floor_point(profile, viewers, 2, a.window, a.socket_buffer,
                                                    binary="quinn-floor-mimalloc")
                            elif s == "floor-default-buffers":
                                r = run_floor_point(profile, viewers, 2, a.window, 0)
                            else:
                                r = run_relay_point(s, profile, viewers, a.warmup, a.window, sink_port)
                        except Exception as e:  # a collapsed point is a result, not a crash
                            r = {"subject": s, "profile": profile, "viewers": viewers, "error": str(e), "ok": False,
                                 "p99_ms": None, "lost": None, "cpu_us_per_frame": None}
                        r["repeat"] = rep
                        results.append(r)
                        print(f"[{time.time() - started:6.0f}s] {profile:8} {viewers:5} viewers {s:10} "
                              f"thr {fmt(r.get('throughput_mbps'))} Mbit/s  p50/p99/p99.9 {fmt(r.get('p50_ms'))}/"
                              f"{fmt(r.get('p99_ms'))}/{fmt(r.get('p999_ms'))} ms  lost {r.get('lost')} "
                              f"late {r.get('late')}  cpu {fmt(r.get('cpu_pct'))}%  "
                              f"{fmt(r.get('cpu_us_per_frame'))} us/frame  rss {fmt(r.get('rss_mb'))} MB"
                              f"{'  ' + r['error'] if r.get('error') else ''}", flush=True)
        if a.idle_viewers:
            for s in [s for s in subjects if s in ("ours", "reference")]:
                idle.append(idle_memory(s, a.idle_viewers, sink_port))
                print(f"idle: {idle[-1]}", flush=True)
    finally:
        stop(sink)
    report = summarize(results, idle, subjects, a)
    with open(a.json_out, "w") as f:
        json.dump({"command": " ".join(sys.argv), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
                   "warmup_s": a.warmup, "window_s": a.window, "repeats": a.repeats, "summary": report["summary"],
                   "points": report["points"], "idle": idle, "runs": results}, f, indent=1)
    print(report["markdown"])
    return 0


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "mem_gib": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1)}


def repeat_ratios(results, profile, viewers, mine, other):
    """CPU per frame of `mine` over `other` within each repeat: the runs of one repeat are
    adjacent in time, so slow drifts of this shared machine cancel out of each ratio."""
    out = []
    for rep in sorted({r.get("repeat") for r in results}, key=lambda x: (x is None, x)):
        def cpf(subject):
            return next((r.get("cpu_us_per_frame") for r in results if r["profile"] == profile and
                         r["viewers"] == viewers and r["subject"] == subject and r.get("repeat") == rep), None)
        x, y = cpf(mine), cpf(other)
        if x and y:
            out.append(x / y)
    return out


def summarize(results, idle, subjects, a):
    points, lines = [], []
    keys = sorted({(r["profile"], r["viewers"], r["subject"]) for r in results},
                  key=lambda k: (k[0], k[1], subjects.index(k[2]) if k[2] in subjects else 9))
    lines.append("| profile | viewers | subject | Mbit/s delivered | lost | late | p50 ms | p99 ms | p99.9 ms "
                 "| relay CPU % | CPU µs/frame (min–max) | RSS MB | pass |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for profile, viewers, subject in keys:
        rs = [r for r in results if (r["profile"], r["viewers"], r["subject"]) == (profile, viewers, subject)]
        cpf = [r["cpu_us_per_frame"] for r in rs if r.get("cpu_us_per_frame") is not None]
        pt = {
            "profile": profile, "viewers": viewers, "subject": subject, "repeats": len(rs),
            "throughput_mbps": median([r.get("throughput_mbps") for r in rs]),
            "lost": max((r["lost"] or 0) if r.get("lost") is not None else 10**9 for r in rs),
            "late": median([r.get("late") for r in rs]),
            "p50_ms": median([r.get("p50_ms") for r in rs]), "p99_ms": median([r.get("p99_ms") for r in rs]),
            "p999_ms": median([r.get("p999_ms") for r in rs]), "cpu_pct": median([r.get("cpu_pct") for r in rs]),
            "cpu_us_per_frame": median(cpf), "cpu_us_per_frame_min": min(cpf) if cpf else None,
            "cpu_us_per_frame_max": max(cpf) if cpf else None, "rss_mb": median([r.get("rss_mb") for r in rs]),
            "datagrams_per_frame": median([r.get("datagrams_per_frame") for r in rs]),
            "transmits_per_frame": median([r.get("transmits_per_frame") for r in rs]),
            "pass": all(passes(r) for r in rs),
            "worker_connections": [r["worker_connections"] for r in rs if r.get("worker_connections")],
        }
        points.append(pt)
        lines.append(f"| {profile} | {viewers} | {subject} | {fmt(pt['throughput_mbps'])} | {pt['lost']} | "
                     f"{fmt(pt['late'], '.0f')} | {fmt(pt['p50_ms'])} | {fmt(pt['p99_ms'])} | {fmt(pt['p999_ms'])} | "
                     f"{fmt(pt['cpu_pct'], '.0f')} | {fmt(pt['cpu_us_per_frame'])} ({fmt(pt['cpu_us_per_frame_min'])}–"
                     f"{fmt(pt['cpu_us_per_frame_max'])}) | {fmt(pt['rss_mb'], '.0f')} | "
                     f"{'yes' if pt['pass'] else 'no'} |")
    summary = {}
    lines.append("")
    layouts = [f"{pt['subject']} {pt['profile']} × {pt['viewers']}: "
               + ", ".join("/".join(map(str, w)) for w in pt["worker_connections"])
               for pt in points if pt.get("worker_connections")]
    if layouts:
        lines.append("Connections per worker thread at the end of each window (publisher included; worker 0 "
                     "first): " + "; ".join(layouts) + ".")
        lines.append("")
    for profile in a.profiles.split(","):
        cap = {}
        for s in subjects:
            ok = [p["viewers"] for p in points if p["profile"] == profile and p["subject"] == s and p["pass"]]
            tried = [p["viewers"] for p in points if p["profile"] == profile and p["subject"] == s]
            # Capacity: the largest count below which every point passed.
            c = 0
            for v in sorted(tried):
                if v in ok:
                    c = v
                else:
                    break
            cap[s] = {"capacity": c, "at_top_of_sweep": bool(tried) and c == max(tried)}
        summary[profile] = {"capacity": cap}
        ratios = {}
        for mine, other in (("ours", "reference"), ("ours", "ours-off"), ("ours", "floor"), ("ours-1t", "floor"),
                            ("ours", "floor-mt"), ("ours", "floor-mimalloc"), ("ours-1t", "reference")):
            pairs = []
            for p in points:
                if p["profile"] != profile or p["subject"] != mine:
                    continue
                q = next((q for q in points if q["profile"] == profile and q["viewers"] == p["viewers"]
                          and q["subject"] == other), None)
                if q and p["cpu_us_per_frame"] and q["cpu_us_per_frame"]:
                    pairs.append((p["viewers"], p["cpu_us_per_frame"] / q["cpu_us_per_frame"],
                                  repeat_ratios(results, profile, p["viewers"], mine, other),
                                  p["pass"] and q["pass"]))
            ratios[f"{mine}/{other}"] = pairs
        summary[profile]["cpu_per_frame_ratio"] = ratios
        capline = ", ".join(f"{s} {v['capacity']}{'+' if v['at_top_of_sweep'] else ''}" for s, v in cap.items())
        lines.append(f"**{profile}** capacity (largest viewer count passing p99 ≤ 100 ms, no loss; + = top of "
                     f"sweep): {capline}")
        for pair, xs in ratios.items():
            if xs:
                lines.append(f"- CPU per frame delivered, {pair} (ratio of medians; per repeat, the two runs "
                             f"adjacent in time): " + ", ".join(
                                 f"{v} viewers {x:.2f}" + (f" ({min(rr):.2f}–{max(rr):.2f})" if rr else "")
                                 + ("" if both else " [a subject failed]")
                                 for v, x, rr, both in xs)
                             + f"; median over points both passed {fmt(median([x for _, x, _, b in xs if b]), '.2f')}")
        # The floor is only comparable if it sends what the relay delivers: its bytes per viewer
        # come from the publisher's frame sizes, so a drift in `moq publish` shows here.
        shape = [q["throughput_mbps"] / p["throughput_mbps"] for p in points for q in points
                 if p["profile"] == q["profile"] == profile and p["viewers"] == q["viewers"]
                 and p["subject"] == "ours" and q["subject"] == "floor" and p["pass"]
                 and p["throughput_mbps"] and q["throughput_mbps"]]
        if shape:
            lines.append(f"- shape check, floor bytes sent / ours bytes delivered per point: "
                         f"{min(shape):.3f}–{max(shape):.3f}"
                         + ("" if all(abs(x - 1) <= 0.03 for x in shape) else " — MISMATCH, the floor is not comparable"))
        # Same bytes can still be different packets (how frames split into datagrams, what GSO
        # batches), and a frame costs per packet: compare quinn's own counts on both sides.
        for mine in ("ours", "ours-1t"):
            pk = [(p["viewers"], p["datagrams_per_frame"] / q["datagrams_per_frame"],
                   p["transmits_per_frame"] / q["transmits_per_frame"], q)
                  for p in points for q in points
                  if p["profile"] == q["profile"] == profile and p["viewers"] == q["viewers"]
                  and p["subject"] == mine and q["subject"] == "floor" and p["pass"]
                  and p["datagrams_per_frame"] and q["datagrams_per_frame"]
                  and p["transmits_per_frame"] and q["transmits_per_frame"]]
            if pk:
                d = [x for _, x, _, _ in pk]
                lines.append(f"- packet check, {mine} / floor per frame delivered: datagrams {min(d):.3f}–{max(d):.3f}"
                             f", send calls " + ", ".join(f"{v} viewers {t:.2f}" for v, _, t, _ in pk)
                             + f" (floor: {median([q['datagrams_per_frame'] for *_, q in pk]):.2f} datagrams in "
                             f"{median([q['transmits_per_frame'] for *_, q in pk]):.2f} sends per frame)"
                             + ("" if all(abs(x - 1) <= 0.03 for x in d) else
                                " — MISMATCH, the relay sends more or fewer packets than the floor"))
        mine = {s: v["capacity"] for s, v in cap.items()}
        if mine.get("reference"):
            for s in ("ours", "ours-1t"):
                if s in mine:
                    lines.append(f"- capacity {s} / reference: {mine[s] / mine['reference']:.2f}")
    for i in idle:
        lines.append(f"- idle viewers ({i['subject']}): {i['viewers']} sessions add "
                     f"{i['rss_loaded_mb'] - i['rss_base_mb']:.1f} MB RSS = {i['kib_per_idle_viewer']:.0f} KiB each")
    return {"points": points, "summary": summary, "markdown": "\n".join(lines)}


if __name__ == "__main__":
    sys.exit(main())
