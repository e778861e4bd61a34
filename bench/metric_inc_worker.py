"""Times uwsgi.metric_inc from Python inside a real worker; writes the
result (ns per call, best of 5 runs of N calls) to $BENCH_OUT."""
import os
import time

import uwsgi

N = int(os.environ.get("BENCH_N", "2000000"))
inc = uwsgi.metric_inc


def run(f):
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter_ns()
        for _ in range(N):
            f("requests")
        best = min(best, (time.perf_counter_ns() - t) / N)
    return best


def noop(name):
    return True


empty = run(noop)
metric = run(inc)
with open(os.environ["BENCH_OUT"], "w") as f:
    f.write(f"metric_inc {metric:.1f} ns/call; a pure-Python no-op function call {empty:.1f} ns/call\n")
uwsgi.accepting()
import signal
signal.pause()
