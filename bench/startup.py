#!/usr/bin/env python3
"""Time from exec to /readyz 200, and master RSS/PSS, for the hello example.

Usage: bench/startup.py [--runs N] [--bin target/release/podmaster]
Prints the median of N runs (default 7). Not a test: run on demand.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def field(pid, name, path="status"):
    with open(f"/proc/{pid}/{path}") as f:
        for line in f:
            if line.startswith(name):
                return int(line.split()[1])
    return 0


def one_run(binary, processes):
    probe = f"127.0.0.1:{free_port()}"
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as ini:
        ini.write(
            f"[uwsgi]\nsocket = 127.0.0.1:{free_port()}\nsocket = 127.0.0.1:{free_port()}\n"
            f"processes = {processes}\npython-worker-override = {ROOT}/examples/hello/hello.py\n"
            f"probe-socket = {probe}\n"
        )
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "--ini", ini.name], stderr=subprocess.DEVNULL)
    deadline = t0 + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{probe}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        time.sleep(0.002)
    ready = time.monotonic() - t0
    time.sleep(0.5)  # let the master settle before reading memory
    rss = field(p.pid, "VmRSS:")
    pss = field(p.pid, "Pss:", "smaps_rollup")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    os.unlink(ini.name)
    return ready, rss, pss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/podmaster"))
    a = ap.parse_args()
    runs = [one_run(a.bin, a.processes) for _ in range(a.runs)]
    print(f"processes={a.processes} runs={a.runs}")
    print(f"exec -> /readyz 200: median {statistics.median(r[0] for r in runs) * 1000:.0f} ms "
          f"(min {min(r[0] for r in runs) * 1000:.0f}, max {max(r[0] for r in runs) * 1000:.0f})")
    print(f"master VmRSS: median {statistics.median(r[1] for r in runs)} kB; "
          f"PSS: median {statistics.median(r[2] for r in runs)} kB")


if __name__ == "__main__":
    sys.exit(main())
