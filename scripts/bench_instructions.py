#!/usr/bin/env python3
"""Instructions per frame delivered, counted by valgrind (callgrind) instead of timed.

This VM exposes no hardware counters and its CPU time varies by +-20 % between identical runs, far
more than the effects to measure (instrumentation overhead <= 2 %). Instruction counts do not
depend on the machine's other load. Each subject runs at a fixed load (default 50 viewers x
250 kbit/s, 30 fps) with its sender under `valgrind --tool=callgrind --instr-atstart=no`;
counting is switched on after the warm-up (`callgrind_control -i on`) and dumped after the window
(`callgrind_control -d`), so start-up, handshakes and catch-up are excluded.

  ours       this relay, all instrumentation on (/metrics scraped every second, traces and logs
             over OTLP/HTTP to a local sink, info logs)
  ours-off   this relay, no recorder (--ops-listen off), no OTLP, warn logs
  ours-1t    as ours, single-threaded runtime
  ours-off-1t  as ours-off, single-threaded runtime (the least noisy on/off pair)
  floor      quinn-floor send: bare quinn, the publisher's frame sizes and rate, no relay logic

What is counted: user-space instructions of every thread of the subject (the relay's own code,
quinn, crypto, tokio, the allocator, telemetry and its exporters). Not counted: the kernel (UDP
send/receive, about a third of the CPU time; the same packets for every subject) and cache or
branch behaviour. Valgrind runs the subject ~50x slower, so the load is kept small and the
subject's timing differs from native: batching per wake-up can differ, which is why the relay's
figures are also compared to each other in the same run. Frames per window are the publisher's
fixed rate times the window (the watcher's count is reported as a check).
"""
import argparse, json, os, statistics, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BIN, DEVNULL, PROFILES, ROOT, Relay, floor_shape_args, free_port, start_load, stop  # noqa: E402

VALGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]


def callgrind(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=DEVNULL, stderr=DEVNULL)


def dumped_ir(out_dir, pid):
    """Instructions in the dump taken after the window (callgrind.<pid>.1)."""
    with open(os.path.join(out_dir, f"cg.{pid}.1")) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("no summary in the callgrind dump")


def measure(pid, window, out_dir, tick=lambda: None):
    callgrind(pid, "-i", "on")
    t0 = time.time()
    while time.time() < t0 + window - 0.05:
        tick()
        time.sleep(max(0.0, min(1.0, t0 + window - time.time())))
    callgrind(pid, "-d")
    elapsed = time.time() - t0
    # The dump file appears when callgrind has written it.
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(out_dir, f"cg.{pid}.1")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    return dumped_ir(out_dir, pid), elapsed


def run_relay(kind, profile, viewers, warmup, window, sink, out_dir):
    p = PROFILES[profile]
    relay = Relay(kind, sink, wrapper=[*VALGRIND, f"--callgrind-out-file={out_dir}/cg.%p"])
    url = f"http://127.0.0.1:{relay.port}/"
    pub = watch = None
    try:
        pub, watch = start_load(url, p, viewers, warmup, window, timeout="60s")
        time.sleep(warmup)
        ir, elapsed = measure(relay.proc.pid, window, out_dir, relay.tick)
        out, _ = watch.communicate(timeout=120)
        video = json.loads(out.decode().strip().splitlines()[-1])["tracks"].get("video", {})
    finally:
        for proc in (watch, pub):
            if proc is not None:
                stop(proc, __import__("signal").SIGINT)
        relay.close()
    frames = viewers * p["fps"] * elapsed
    return {"subject": kind, "ir": ir, "window_s": elapsed, "frames": frames, "ir_per_frame": ir / frames,
            "watched_frames": video.get("frames"), "gaps": video.get("gaps"), "late": video.get("late"),
            "p99_ms": video.get("latency_ms_p99")}


def run_floor(profile, viewers, warmup, window, out_dir):
    p = PROFILES[profile]
    port = free_port()
    send = subprocess.Popen([*VALGRIND, f"--callgrind-out-file={out_dir}/cg.%p", f"{BIN}/quinn-floor", "send",
                             "--listen", f"127.0.0.1:{port}", *floor_shape_args(p), "--socket-buffer", str(4 << 20)],
                            stdin=subprocess.PIPE, stdout=DEVNULL, stderr=DEVNULL)
    recv = None
    try:
        time.sleep(5)  # valgrind start-up
        recv = subprocess.Popen([f"{BIN}/quinn-floor", "recv", "--connect", f"127.0.0.1:{port}", "--connections",
                                 str(viewers), "--seconds", str(warmup + window + 5), "--endpoints",
                                 str(max(1, viewers // 10)), "--json"], stdout=subprocess.PIPE, stderr=DEVNULL)
        time.sleep(warmup)
        ir, elapsed = measure(send.pid, window, out_dir)
        out, _ = recv.communicate(timeout=120)
        r = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if recv is not None and recv.poll() is None:
            recv.kill()
        stop(send)
    frames = viewers * p["fps"] * elapsed
    return {"subject": "floor", "ir": ir, "window_s": elapsed, "frames": frames, "ir_per_frame": ir / frames,
            "gaps": r.get("frames_lost"), "p99_ms": r.get("latency_ms", {}).get("p99")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="250kbps", choices=sorted(PROFILES))
    ap.add_argument("--viewers", type=int, default=50)
    ap.add_argument("--subjects", default="ours,ours-off,ours-1t,ours-off-1t,floor")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json-out", default=os.path.join(ROOT, "docs", "bench-instructions.json"))
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "moq-relay", "-p", "moq-cli", "-p", "moq-bench"],
                       cwd=ROOT, check=True)
    out_dir = "/tmp/moq-bench-callgrind"
    os.makedirs(out_dir, exist_ok=True)
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "otlp_sink.py"), "--listen",
                             f"127.0.0.1:{sink_port}"], stdout=DEVNULL)
    subjects, runs = a.subjects.split(","), []
    try:
        for rep in range(a.repeats):
            for s in (subjects if rep % 2 == 0 else list(reversed(subjects))):
                if s == "floor":
                    r = run_floor(a.profile, a.viewers, a.warmup, a.window, out_dir)
                else:
                    r = run_relay(s, a.profile, a.viewers, a.warmup, a.window, sink_port, out_dir)
                r["repeat"] = rep
                runs.append(r)
                print(f"{s:9} {r['ir'] / 1e6:9.1f} M instructions in {r['window_s']:.2f} s  "
                      f"{r['ir_per_frame']:8.0f} per frame  watched {r.get('watched_frames')} gaps {r.get('gaps')} "
                      f"p99 {r.get('p99_ms')} ms", flush=True)
    finally:
        stop(sink)
    per = {s: [r["ir_per_frame"] for r in runs if r["subject"] == s] for s in subjects}
    mean = {s: statistics.mean(v) for s, v in per.items() if v}
    lines = [f"Instructions per frame delivered ({a.viewers} viewers x {a.profile}, {a.window} s window, "
             f"{a.repeats} repeats; user space, callgrind):", "",
             "| subject | instructions per frame (each run) | mean | / same runtime, instrumentation off | / floor |", "|---|---|---|---|---|"]
    for s in subjects:
        if s in mean:
            base = "ours-off-1t" if s.endswith("-1t") else "ours-off"
            off = mean[s] / mean[base] if base in mean and s.startswith("ours") else None
            fl = mean[s] / mean["floor"] if "floor" in mean else None
            lines.append(f"| {s} | {', '.join(f'{x:.0f}' for x in per[s])} | {mean[s]:.0f} | "
                         f"{'–' if off is None else f'{off:.3f}'} | {'–' if fl is None else f'{fl:.3f}'} |")
    report = "\n".join(lines)
    with open(a.json_out, "w") as f:
        json.dump({"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "viewers": a.viewers,
                   "profile": a.profile, "window_s": a.window, "mean_ir_per_frame": mean, "runs": runs}, f, indent=1)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
