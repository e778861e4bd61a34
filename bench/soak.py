#!/usr/bin/env python3
"""Soak: does the master's footprint stay flat over a long life?

Runs the hello example (4 workers, preforked) for --minutes (default 30)
while: a chain reload (SIGHUP) every 30 s, a random worker killed (SIGKILL)
every 10 s, /readyz probed every 100 ms. Every minute it samples the
master's RSS, PSS, open fds and threads, and prints the series. Verdict:
at the end RSS within 5 % of its value after the first minute, fds and
threads equal. Also counts probe failures.

    python3 bench/soak.py [--minutes 30] [--bin target/release/podmaster]

Run on demand (it takes the time it says); not part of bench/run.sh.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from bench import ROOT, free_port, proc_field
from bench import http as get


def sample(pid):
    return {
        "rss_kb": proc_field(pid, "VmRSS:"),
        "pss_kb": proc_field(pid, "Pss:", "smaps_rollup"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "podmaster"))
    a = ap.parse_args()
    port, probe = free_port(), free_port()
    ini = tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False)
    ini.write(
        f"[uwsgi]\nsocket = 127.0.0.1:{port}\nprocesses = 4\n"
        f"python-worker-override = {ROOT}/examples/hello/hello.py\nprobe-socket = 127.0.0.1:{probe}\n"
        "worker-reload-mercy = 5\n"
    )
    ini.close()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    m = subprocess.Popen([a.bin, "--ini", ini.name], stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{probe}"
    end = time.monotonic() + 60
    while get(base + "/readyz")[0] != 200:
        if time.monotonic() > end or m.poll() is not None:
            sys.exit(f"podmaster did not become ready; log: {log.name}")
        time.sleep(0.05)

    stop = threading.Event()
    probes = {"ok": 0, "failed": 0}

    def prober():
        while not stop.is_set():
            code, _ = get(base + "/readyz", timeout=1)
            # During a reload or a respawn a 503 is an honest answer; only
            # no answer at all is a failure of the probe server.
            probes["ok" if code in (200, 503) else "failed"] += 1
            stop.wait(0.1)

    threading.Thread(target=prober, daemon=True).start()
    t0 = time.monotonic()
    series = []
    next_sample, next_reload, next_kill = t0, t0 + 30, t0 + 10
    reloads = kills = 0
    while time.monotonic() - t0 < a.minutes * 60:
        now = time.monotonic()
        if now >= next_sample:
            s = sample(m.pid)
            s["minute"] = round((now - t0) / 60, 1)
            series.append(s)
            print(f"  t={s['minute']:5.1f} min  rss {s['rss_kb']} kB  pss {s['pss_kb']} kB  "
                  f"fds {s['fds']}  threads {s['threads']}", flush=True)
            next_sample += 60
        if now >= next_reload:
            m.send_signal(signal.SIGHUP)
            reloads += 1
            next_reload += 30
        if now >= next_kill:
            code, body = get(base + "/status")
            if code == 200:
                pids = [w["pid"] for w in json.loads(body)["workers"] if w["pid"] > 0]
                if pids:
                    try:
                        os.kill(random.choice(pids), signal.SIGKILL)
                        kills += 1
                    except OSError:
                        pass
            next_kill += 10
        time.sleep(0.05)
    final = sample(m.pid)
    stop.set()
    m.send_signal(signal.SIGTERM)
    m.wait(60)
    first = series[1] if len(series) > 1 else series[0]
    rss_change = (final["rss_kb"] - first["rss_kb"]) / first["rss_kb"] * 100
    print(f"reloads {reloads}, kills {kills}, probes ok {probes['ok']}, failed {probes['failed']}")
    print(f"after 1 min: {first}")
    print(f"at the end:  {final}")
    verdict = abs(rss_change) <= 5 and final["fds"] == first["fds"] and final["threads"] == first["threads"]
    print(f"RSS change {rss_change:+.1f} %, fds {first['fds']} -> {final['fds']}, "
          f"threads {first['threads']} -> {final['threads']}: {'flat' if verdict else 'NOT flat'}")
    print(f"exit code {m.returncode}; log {log.name}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
