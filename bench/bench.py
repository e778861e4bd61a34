#!/usr/bin/env python3
"""podmaster vs uWSGI (python-worker-override, same script) vs gunicorn
(aiohttp worker, same handlers). Prints one table of medians.

Run through bench/run.sh, which installs the peers into bench/.venv.
Every row is measured for each server in the same run; each number is the
median of --reps repetitions. Nothing here is a test: no assertions, only
measurements, written to bench/results/latest.md as well.
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "bench", ".venv")
PY = os.path.join(VENV, "bin", "python3")
AIOSERVER = os.path.join(ROOT, "examples", "aiohttp", "aioserver.py")
PODMASTER = os.path.join(ROOT, "target", "release", "podmaster")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception:
        return 0, ""


def wait(pred, timeout=60, step=0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError("condition not met")


def proc_field(pid, name, path="status"):
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def ctx_switches(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    """One server under test: start() returns when all workers accept."""

    name = "?"

    def __init__(self, workers):
        self.workers = workers
        self.port = free_port()
        self.proc = None
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def worker_pids(self):
        return children(self.proc.pid)


class Podmaster(Server):
    name = "podmaster"

    def start(self):
        self.probe = free_port()
        env = dict(os.environ, PORT=str(self.port), PROBE_PORT=str(self.probe), VENV=VENV, WORKERS=str(self.workers))
        ini = os.path.join(ROOT, "examples", "aiohttp", "podmaster.ini")
        self.proc = subprocess.Popen([PODMASTER, "--ini", ini], env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        wait(lambda: http(f"http://127.0.0.1:{self.probe}/readyz")[0] == 200)

    def accepting(self):
        return int(re.search(r"podmaster_workers_accepting (\d+)", http(f"http://127.0.0.1:{self.probe}/metrics")[1]).group(1))

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def reload_done(self, since):
        m = http(f"http://127.0.0.1:{self.probe}/metrics")[1]
        return 'podmaster_reloads_total{result="ok"} 1' in m


class Uwsgi(Server):
    name = "uWSGI"

    def start(self):
        self.stats = free_port()
        self.touch = tempfile.NamedTemporaryFile(delete=False).name
        args = [
            os.path.join(VENV, "bin", "uwsgi"), "--master", "--processes", str(self.workers),
            "--socket", f"127.0.0.1:{self.port}", "--python-worker-override", AIOSERVER,
            "--home", VENV, "--enable-metrics", "--metric", "name=requests,type=counter",
            "--metric", "name=websockets,type=gauge", "--stats", f"127.0.0.1:{self.stats}",
            "--touch-chain-reload", self.touch, "--die-on-term", "--listen", "1024",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        wait(lambda: self.accepting() == self.workers)

    def stats_json(self):
        try:
            with socket.create_connection(("127.0.0.1", self.stats), timeout=2) as s:
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return json.loads(data)
        except Exception:
            return {"workers": []}

    def accepting(self):
        return sum(1 for w in self.stats_json()["workers"] if w.get("accepting") == 1 and w.get("pid", 0) > 0)

    def reload(self):
        os.utime(self.touch)

    def reload_done(self, since):
        # Done when every worker was (re)spawned after the reload began and accepts.
        ws = self.stats_json()["workers"]
        return ws and all(w.get("last_spawn", 0) >= int(since) and w.get("accepting") == 1 for w in ws)


class Gunicorn(Server):
    name = "gunicorn"

    def start(self):
        app = os.path.join(ROOT, "bench")
        args = [
            os.path.join(VENV, "bin", "gunicorn"), "--chdir", app, "-w", str(self.workers),
            "-k", "aiohttp.GunicornWebWorker", "-b", f"127.0.0.1:{self.port}", "--backlog", "1024",
            "--graceful-timeout", "20", "gunicorn_app:app",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        wait(lambda: self.booted() >= self.workers and http(self.url + "/World")[0] == 200)

    def booted(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read().count("Booting worker")

    def accepting(self):
        return len(self.worker_pids())

    def reload(self):
        self.before = set(self.worker_pids())
        self.proc.send_signal(signal.SIGHUP)

    def reload_done(self, since):
        now = set(self.worker_pids())
        return len(now) == self.workers and not (now & self.before)


SERVERS = [Podmaster, Uwsgi, Gunicorn]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def row_startup(reps, workers=4):
    out = {}
    for cls in SERVERS:
        times, mrss, mpss, wrss, wpss, wake = [], [], [], [], [], []
        for _ in range(reps):
            s = cls(workers)
            t = time.monotonic()
            s.start()
            times.append(time.monotonic() - t)
            time.sleep(1)
            pid = s.proc.pid
            mrss.append(proc_field(pid, "VmRSS:"))
            mpss.append(proc_field(pid, "Pss:", "smaps_rollup"))
            ws = s.worker_pids()
            wrss.append(med([proc_field(w, "VmRSS:") for w in ws]))
            wpss.append(med([proc_field(w, "Pss:", "smaps_rollup") for w in ws]))
            c0 = ctx_switches(pid)
            time.sleep(10)
            wake.append(ctx_switches(pid) - c0)
            s.stop()
        out[cls.name] = dict(
            startup_ms=med(times) * 1000, master_rss_kb=med(mrss), master_pss_kb=med(mpss),
            worker_rss_kb=med(wrss), worker_pss_kb=med(wpss), idle_wakeups_10s=med(wake),
        )
    return out


def wrk(url, seconds=10, conns=64):
    r = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", url], capture_output=True, text=True)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", r.stdout)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", r.stdout))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)) else 0
    return rps, float(p99.group(1)) * scale, errors + non2xx


def row_throughput(reps, workers):
    out = {}
    for cls in SERVERS:
        s = cls(workers)
        s.start()
        runs = [wrk(s.url + "/World") for _ in range(reps)]
        s.stop()
        out[cls.name] = dict(rps=med([r[0] for r in runs]), p99_ms=med([r[1] for r in runs]), errors=sum(r[2] for r in runs))
    return out


def row_reload(reps, workers=4):
    out = {}
    for cls in SERVERS:
        durs, failed, mins = [], [], []
        for _ in range(reps):
            s = cls(workers)
            s.start()
            result = {}
            t = threading.Thread(target=lambda: result.update(r=wrk(s.url + "/World", seconds=8)))
            t.start()
            time.sleep(1)
            lowest = [workers]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    try:
                        lowest[0] = min(lowest[0], s.accepting())
                    except Exception:
                        pass
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            since = time.time()
            t0 = time.monotonic()
            s.reload()
            wait(lambda: s.reload_done(since), timeout=60, step=0.01)
            durs.append(time.monotonic() - t0)
            stop.set()
            sampler.join()
            t.join()
            failed.append(result["r"][2])
            mins.append(lowest[0])
            s.stop()
        out[cls.name] = dict(reload_s=med(durs), failed=med(failed), min_accepting=min(mins))
    return out


def row_sigterm(reps, workers=4, n=50):
    out = {}
    for cls in SERVERS:
        done, secs = [], []
        for _ in range(reps):
            s = cls(workers)
            s.start()
            results = []
            threads = [threading.Thread(target=lambda: results.append(http(s.url + "/slow/1", timeout=30)[0])) for _ in range(n)]
            for th in threads:
                th.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            for th in threads:
                th.join()
            s.proc.wait(60)
            secs.append(time.monotonic() - t0)
            done.append(sum(1 for r in results if r == 200))
        out[cls.name] = dict(completed=med(done), of=n, exit_s=med(secs))
    return out


def row_metric_inc():
    out = {}
    env = dict(os.environ, BENCH_N="1000000")
    res = tempfile.NamedTemporaryFile(delete=False).name
    env["BENCH_OUT"] = res
    worker = os.path.join(ROOT, "bench", "metric_inc_worker.py")
    cmds = {
        "podmaster": [PODMASTER, "--socket", "127.0.0.1:0", "--metric", "name=requests", "--python-worker-override", worker],
        "uWSGI": [os.path.join(VENV, "bin", "uwsgi"), "--master", "--processes", "1", "--socket", f"127.0.0.1:{free_port()}",
                  "--enable-metrics", "--metric", "name=requests,type=counter", "--python-worker-override", worker,
                  "--home", VENV, "--die-on-term"],
    }
    for name, cmd in cmds.items():
        open(res, "w").close()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: os.path.getsize(res) > 0, timeout=120, step=0.1)
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        out[name] = dict(ns_per_call=float(re.search(r"metric_inc ([\d.]+)", open(res).read()).group(1)))
    return out


def row_readyz_under_load(samples=2000):
    s = Podmaster(4)
    s.start()
    burners = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(os.cpu_count() or 2)]
    lat = []
    for _ in range(samples):
        t = time.perf_counter()
        http(f"http://127.0.0.1:{s.probe}/readyz")
        lat.append((time.perf_counter() - t) * 1000)
    for b in burners:
        b.kill()
    s.stop()
    lat.sort()
    return {"podmaster": dict(p50_ms=lat[len(lat) // 2], p99_ms=lat[int(len(lat) * 0.99)])}


def row_orphans(n=10000):
    script = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    script.write(
        "import os, uwsgi, signal\n"
        f"for _ in range({n}):\n"
        "    if os.fork() == 0:\n"
        "        if os.fork() == 0:\n"
        "            os._exit(0)\n"
        "        os._exit(0)\n"
        "    os.wait()\n"
        "uwsgi.accepting()\nsignal.pause()\n"
    )
    script.close()
    probe = free_port()
    p = subprocess.Popen([PODMASTER, "--socket", "127.0.0.1:0", "--probe-socket", f"127.0.0.1:{probe}",
                          "--python-worker-override", script.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    def reaped():
        m = http(f"http://127.0.0.1:{probe}/metrics")[1]
        v = re.search(r"podmaster_reaped_orphans_total (\d+)", m)
        return v and int(v.group(1)) >= n
    wait(reaped, timeout=300, step=0.05)
    took = time.monotonic() - t0
    with open(f"/proc/{p.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    zombies = sum(1 for c in children(p.pid) if open(f"/proc/{c}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    return {"podmaster": dict(orphans=n, seconds=took, master_cpu_s=cpu_s, cpu_us_per_reap=cpu_s / n * 1e6, zombies_left=zombies)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated row numbers")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    rows = [
        ("1-3", "startup, memory, idle wakeups (4 workers)", lambda: row_startup(a.reps)),
        ("4a", "wrk -t2 -c64 -d10s, 2 workers", lambda: row_throughput(a.reps, 2)),
        ("4b", "wrk -t2 -c64 -d10s, 4 workers", lambda: row_throughput(a.reps, 4)),
        ("5", "chain reload of 4 workers under load", lambda: row_reload(a.reps)),
        ("6", "SIGTERM with 50 in-flight 1 s requests", lambda: row_sigterm(a.reps)),
        ("7", "orphan storm (10 000 orphans)", row_orphans),
        ("8", "uwsgi.metric_inc from Python", row_metric_inc),
        ("9", "/readyz latency while workers burn CPU", row_readyz_under_load),
    ]
    lines = [f"# Benchmark results ({time.strftime('%Y-%m-%d')})", "", f"`bench/run.sh --reps {a.reps}`; medians of {a.reps}.", ""]
    for key, title, fn in rows:
        if only and key.split("-")[0][0] not in only and key not in only:
            continue
        print(f"== {key}: {title}", flush=True)
        res = fn()
        lines.append(f"## {key}. {title}")
        cols = sorted({k for v in res.values() for k in v})
        lines.append("| server | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for server, vals in res.items():
            cells = [f"{vals[c]:.1f}" if isinstance(vals.get(c), float) else str(vals.get(c, "")) for c in cols]
            lines.append(f"| {server} | " + " | ".join(cells) + " |")
        lines.append("")
        print("\n".join(lines[-len(res) - 3:]), flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
