#!/usr/bin/env python3
"""Instrumentation overhead: relay CPU with all metrics on (scraped every second) vs off.

Runs the release relay with one publisher (2 Mbit/s, 30 fps, one group per second) and N viewers
on loopback for a fixed duration, alternating on/off runs, and reports relay CPU seconds, CPU per
frame delivered, and the on/off ratio with its spread. Relay CPU is read from /proc/<pid>/stat.
"""
import argparse, json, os, statistics, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import cpu_seconds, free_port, http_ok, wait_for  # noqa: E402


def wait_ready(port):
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), "relay", timeout=10)


def run_once(metrics_on, viewers, seconds, bitrate):
    port, ops = free_port(), free_port()
    relay_args = [f"{BIN}/moq-relay", "--listen", f"127.0.0.1:{port}", "--tls-generate", "localhost",
                  "--auth-public", "**", "--limit-sessions-per-address", "1000000",
                  "--limit-session-rate-per-address", "1000000",
                  "--ops-listen", f"127.0.0.1:{ops}" if metrics_on else "off"]
    env = dict(os.environ, RUST_LOG="warn")
    relay = subprocess.Popen(relay_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(port)
        url = f"http://127.0.0.1:{port}/"
        pub = subprocess.Popen([f"{BIN}/moq", "publish", "--url", url, "--broadcast", "bench/live",
                                "--video-bitrate", str(bitrate)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
        time.sleep(1)
        watch = subprocess.Popen([f"{BIN}/moq", "watch", "--url", url, "--broadcast", "bench/live", "--viewers",
                                  str(viewers), "--duration", f"{seconds + 3}s", "--json", "--stats-interval", "0s"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        time.sleep(3)  # warm-up: sessions established, caches filled
        start = cpu_seconds(relay.pid)
        deadline = time.time() + seconds
        scrapes = 0
        while time.time() < deadline:
            if metrics_on:
                urllib.request.urlopen(f"http://127.0.0.1:{ops}/metrics", timeout=2).read()
                scrapes += 1
            time.sleep(1)
        cpu = cpu_seconds(relay.pid) - start
        out, _ = watch.communicate(timeout=60)
        pub.terminate()
        pub.wait()
        summary = json.loads(out.decode().strip().splitlines()[-1])
        frames = sum(t["frames"] for t in summary["tracks"].values())
        return {"metrics": metrics_on, "cpu_s": cpu, "frames_total": frames, "scrapes": scrapes,
                "viewers_ok": summary["ok"] or summary["exit_code"] == 0}
    finally:
        relay.terminate()
        relay.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--viewers", type=int, default=50)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bitrate", type=int, default=2_000_000)
    p.add_argument("--json-out", default=os.path.join(ROOT, "docs", "bench-overhead.json"))
    a = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--bins", "-q"], cwd=ROOT, check=True)
    runs = []
    for i in range(a.repeats):
        for on in (True, False) if i % 2 == 0 else (False, True):
            r = run_once(on, a.viewers, a.seconds, a.bitrate)
            runs.append(r)
            print(f"run {len(runs)}: metrics {'on ' if on else 'off'} relay CPU {r['cpu_s']:.2f}s "
                  f"({r['scrapes']} scrapes, {r['frames_total']} frames received by viewers)", flush=True)
    on = [r["cpu_s"] for r in runs if r["metrics"]]
    off = [r["cpu_s"] for r in runs if not r["metrics"]]
    ratio = statistics.mean(on) / statistics.mean(off)
    ratios = [x / y for x, y in zip(on, off)]
    print()
    print(f"| mode | relay CPU s (mean of {a.repeats}) | min | max |")
    print("|---|---|---|---|")
    for name, xs in (("metrics on, scraped 1/s", on), ("metrics off", off)):
        print(f"| {name} | {statistics.mean(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} |")
    print(f"\non/off CPU ratio: {ratio:.3f} (pairwise {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"{a.viewers} viewers, {a.bitrate} bit/s video + 64 kbit/s audio, {a.seconds}s measured per run")
    with open(a.json_out, "w") as f:
        json.dump({"viewers": a.viewers, "seconds": a.seconds, "bitrate": a.bitrate, "runs": runs,
                   "ratio_on_off": ratio, "pairwise": ratios}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
