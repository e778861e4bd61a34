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
import struct
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
# PODMASTER=/path/to/podmaster runs another build (e.g. a branch with the zygote).
PODMASTER = os.environ.get("PODMASTER", os.path.join(ROOT, "target", "release", "podmaster"))
HEAVY = os.path.join(ROOT, "bench", "heavy")


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


def stop_process(proc, sig=signal.SIGTERM, timeout=30):
    """Asks `proc` to stop with `sig`; killed if still there after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        if self.proc:
            stop_process(self.proc, sig, timeout)

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


class LowestAccepting:
    """Samples server.accepting() every 10 ms on a thread from creation
    until finish(), which returns the lowest count seen."""

    def __init__(self, server, workers):
        self.lowest = workers
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(server,))
        self.thread.start()

    def run(self, server):
        while not self.stop.is_set():
            try:
                self.lowest = min(self.lowest, server.accepting())
            except Exception:
                pass
            time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self.lowest


def wrk(url, seconds=10, conns=64):
    """(requests/s, p99 ms, socket errors + non-2xx, non-2xx) of one wrk run
    over keep-alive connections."""
    r = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", url], capture_output=True, text=True)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", r.stdout)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", r.stdout))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)) else 0
    return rps, float(p99.group(1)) * scale, errors + non2xx, non2xx


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
            sampler = LowestAccepting(s, workers)
            since = time.time()
            t0 = time.monotonic()
            s.reload()
            wait(lambda: s.reload_done(since), timeout=60, step=0.01)
            durs.append(time.monotonic() - t0)
            lowest = sampler.finish()
            t.join()
            failed.append(result["r"][2])
            mins.append(lowest)
            s.stop()
        out[cls.name] = dict(reload_s=med(durs), failed_requests=med(failed), min_accepting=min(mins))
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


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def readyz_once(port):
    """One /readyz over a fresh connection (raw socket: the client's own
    overhead stays small). Returns (end to end ms, server-side ms or None):
    the server side ends when the answer's first byte reached the client's
    socket (the kernel's SO_TIMESTAMPNS receive time), so the client's own
    wait for a CPU after that is not in it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sent_wall, t = time.time_ns(), time.perf_counter()
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data, arrived = b"", None
        while True:
            chunk, anc, _, _ = s.recvmsg(4096, 64)
            for level, kind, value in anc:
                if arrived is None and level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, ns = struct.unpack("qq", value[:16])
                    arrived = sec * 10**9 + ns
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:80]
    total = (time.perf_counter() - t) * 1000
    return total, (arrived - sent_wall) / 1e6 if arrived else None


class PodCgroup:
    """A cgroup v1 `cpu` child for the server, as a pod has its own: the
    client (kubelet's role) competes with the pod as a whole, and nice
    values inside it only weigh the pod's processes against each other.
    None where the v1 cpu hierarchy is not writable (then the row says so)."""

    ROOT = "/sys/fs/cgroup/cpu"

    def __init__(self):
        self.path = os.path.join(self.ROOT, f"podmaster-bench-{os.getpid()}")
        try:
            os.mkdir(self.path)
        except OSError:
            self.path = None

    def wrap(self, argv):
        if not self.path:
            return argv
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *argv]

    def remove(self):
        if self.path:
            wait(lambda: not open(os.path.join(self.path, "cgroup.procs")).read().strip(), timeout=30)
            os.rmdir(self.path)


def quantiles(lat):
    lat = sorted(lat)
    q = lambda f: lat[min(len(lat) - 1, int(len(lat) * f))]
    return dict(p50_ms=q(0.5), p99_ms=q(0.99), p999_ms=q(0.999), max_ms=lat[-1])


def row_readyz_under_load(reps, samples=5000):
    """5000 sequential /readyz per repetition while podmaster's own workers
    (two per CPU) burn every core, podmaster in its own cpu cgroup like a
    pod: with the default `worker-nice` (5) and with it off. End to end, and
    server side (until the answer reached the client's socket)."""
    burn = os.path.join(ROOT, "bench", "burn_worker.py")
    workers = 2 * (os.cpu_count() or 2)
    res, notes = {}, []
    for label, nice in (("podmaster", "5"), ("podmaster worker-nice=0", "0")):
        runs = []
        for _ in range(reps):
            probe = free_port()
            pod = PodCgroup()
            argv = [PODMASTER, "--socket", "127.0.0.1:0", "--probe-socket", f"127.0.0.1:{probe}",
                    "--processes", str(workers), "--python-worker-override", burn, "--worker-nice", nice]
            p = subprocess.Popen(pod.wrap(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait(lambda: http(f"http://127.0.0.1:{probe}/readyz")[0] == 200)
            time.sleep(1)  # every worker spinning
            samples_ = [readyz_once(probe) for _ in range(samples)]
            p.send_signal(signal.SIGTERM)
            p.wait(60)
            pod.remove()
            e2e = quantiles([a for a, _ in samples_])
            server = quantiles([b for _, b in samples_ if b is not None])
            runs.append({**e2e, **{"server_" + k: v for k, v in server.items()}})
        key = label if pod.path else label + " (no cgroup)"
        res[key] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        notes.append(f"{key}: p99 per repetition " + ", ".join(f"{r['p99_ms']:.2f}" for r in runs)
                     + " ms; server-side p99 " + ", ".join(f"{r['server_p99_ms']:.2f}" for r in runs) + " ms")
    cols = ["p50_ms", "p99_ms", "p999_ms", "max_ms", "server_p99_ms", "server_p999_ms"]
    return res, cols, notes


class MemoryCgroup:
    """A cgroup v1 `memory` child with a limit, as a container has: the
    kernel OOM-kills inside it when the limit is hit (no swap here)."""

    ROOT = "/sys/fs/cgroup/memory"

    def __init__(self, limit):
        self.path = os.path.join(self.ROOT, f"podmaster-bench-mem-{os.getpid()}")
        os.mkdir(self.path)
        with open(os.path.join(self.path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))

    def wrap(self, argv):
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *argv]

    def oom_kills(self):
        text = open(os.path.join(self.path, "memory.oom_control")).read()
        return int(re.search(r"oom_kill (\d+)", text).group(1))

    def remove(self):
        procs = os.path.join(self.path, "cgroup.procs")
        for _ in range(200):
            pids = [int(p) for p in open(procs).read().split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        os.rmdir(self.path)


def leak_run(argv, port, requests, pace, limit):
    """One server in a fresh memory cgroup: (failed requests, OOM kills)."""
    cg = MemoryCgroup(limit)
    p = subprocess.Popen(cg.wrap(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(lambda: http(f"http://127.0.0.1:{port}/warmup")[0] == 200, timeout=60, step=0.05)
        before = cg.oom_kills()
        failed, t0 = 0, time.monotonic()
        for i in range(requests):
            time.sleep(max(0.0, t0 + i * pace - time.monotonic()))
            failed += http(f"http://127.0.0.1:{port}/leak", timeout=10)[0] != 200
        return dict(failed_requests=float(failed), oom_kills=float(cg.oom_kills() - before))
    finally:
        stop_process(p)
        cg.remove()


def row_leak(reps, requests=30):
    """Two workers in a 400 MB container, each request keeps 20 MB more in
    the worker that serves it; 30 sequential requests (600 MB in all),
    back to back (about 100 a second) and one every 50 ms."""
    limit = 400 << 20
    leak_worker = os.path.join(ROOT, "bench", "leak_worker.py")
    variants = {
        "podmaster reload-on-cgroup-memory=80%": ["--reload-on-cgroup-memory", "80%"],
        "podmaster reload-on-cgroup-memory=60%": ["--reload-on-cgroup-memory", "60%"],
        "podmaster, no watermark": [],
        "uWSGI reload-on-rss=150 (MB per worker)": None,
    }
    res = {}
    for label, extra in variants.items():
        for pace in (0.0, 0.05):
            runs = []
            for _ in range(reps):
                port = free_port()
                if extra is None:
                    argv = [os.path.join(VENV, "bin", "uwsgi"), "--master", "--processes", "2", "--http-socket",
                            f"127.0.0.1:{port}", "--wsgi-file", os.path.join(ROOT, "bench", "leak_wsgi.py"),
                            "--home", VENV, "--reload-on-rss", "150", "--die-on-term"]
                else:
                    argv = [PODMASTER, "--socket", f"127.0.0.1:{port}", "--processes", "2",
                            "--python-worker-override", leak_worker, *extra]
                runs.append(leak_run(argv, port, requests, pace, limit))
            key = f"{label}, {'back to back' if pace == 0 else 'every 50 ms'}"
            res[key] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            res[key]["worst_failed"] = max(r["failed_requests"] for r in runs)
            res[key]["worst_oom_kills"] = max(r["oom_kills"] for r in runs)
    cols = ["failed_requests", "oom_kills", "worst_failed", "worst_oom_kills"]
    notes = ["goal: 0 OOM kills and 0 failed requests with the watermark; the warm-up request leaks too (31 in all); "
             "uWSGI runs the same leak as a WSGI app over --http-socket (reload-on-rss is checked after each request)"]
    return res, cols, notes


def wsgi_servers(workers, port, probe):
    """The same WSGI app under podmaster (its access log on, the default,
    and off), uWSGI and gunicorn (sync), each on an HTTP socket with
    `workers` processes; uWSGI without its request log (`--disable-logging`),
    gunicorn without an access log (its default)."""
    bench = os.path.join(ROOT, "bench")
    addr = f"127.0.0.1:{port}"
    podmaster = [PODMASTER, "--http-socket", addr, "--processes", str(workers), "--module", "wsgi_hello",
                 "--pythonpath", bench, "--probe-socket", f"127.0.0.1:{probe}"]
    return {
        "podmaster": podmaster,
        "podmaster, access log off": podmaster + ["--disable-logging"],
        "uWSGI": [os.path.join(VENV, "bin", "uwsgi"), "--master", "--processes", str(workers), "--http-socket", addr,
                  "--module", "wsgi_hello", "--pythonpath", bench, "--home", VENV, "--die-on-term",
                  "--disable-logging"],
        "gunicorn sync": [os.path.join(VENV, "bin", "gunicorn"), "-w", str(workers), "-b", addr, "--chdir", bench,
                          "wsgi_hello:application"],
    }


def start_wsgi_server(argv, port):
    """Starts a server whose stderr goes through a pipe to a reader (`cat`
    to /dev/null), as a container runtime reads a container's output: an
    access log costs what writing to a pipe costs. Returns both processes."""
    sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink.stdin)
    sink.stdin.close()
    wait(lambda: http(f"http://127.0.0.1:{port}/")[0] == 200, timeout=60, step=0.05)
    time.sleep(1)  # every worker up (the first answer needs only one)
    return p, sink


def cpu_ticks(pids):
    """utime + stime (clock ticks) of `pids` and their descendants now."""
    total = 0
    for pid in set(pids) | {d for p in pids for d in descendants(p)}:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def row_wsgi(reps):
    """wrk -t2 -c64 10 s on the hello and the JSON view of bench/wsgi_hello.py,
    2 and 4 workers: requests/s and p99 per server. podmaster runs twice at
    once, access log on and off, and wrk alternates between the two, so
    that their ratio is measured under the same conditions."""
    res = {}
    for workers in (2, 4):
        for group in (("podmaster", "podmaster, access log off"), ("uWSGI",), ("gunicorn sync",)):
            procs, urls, tree = [], {}, {}
            try:
                for name in group:
                    port, probe = free_port(), free_port()
                    server, sink = start_wsgi_server(wsgi_servers(workers, port, probe)[name], port)
                    procs += [server, sink]
                    urls[name] = f"http://127.0.0.1:{port}"
                    tree[name] = [server.pid, sink.pid]
                hz = os.sysconf("SC_CLK_TCK")
                for view in ("/", "/json"):
                    runs = {name: [] for name in group}
                    for _ in range(reps):
                        for name in group:
                            before = cpu_ticks(tree[name])
                            rps, p99, errors, _ = wrk(urls[name] + view)
                            # CPU of the server and its stderr reader per
                            # request (over wrk's 10 s): less noisy than
                            # requests/s on 2 cores shared with wrk.
                            us = (cpu_ticks(tree[name]) - before) / hz * 1e6 / max(rps * 10, 1)
                            runs[name].append((rps, p99, errors, us))
                    for name in group:
                        key = f"{name}, {workers} workers, {'hello' if view == '/' else 'JSON'}"
                        rs = runs[name]
                        res[key] = dict(rps=med([r[0] for r in rs]), p99_ms=med([r[1] for r in rs]),
                                        errors=float(sum(r[2] for r in rs)),
                                        cpu_us_per_req=med([r[3] for r in rs]))
            finally:
                # Servers first; each sink ends at its pipe's end of file.
                for p in procs[0::2] + procs[1::2]:
                    stop_process(p)
    notes = ["goal (issue 19): podmaster >= 1.2x uWSGI on hello, >= 1.5x gunicorn sync",
             "cpu_us_per_req: CPU time of the server's processes and of its stderr reader per request",
             "goal (issue 20): the access log (on by default) costs <= 5 % of hello throughput: compare "
             "`podmaster` with `podmaster, access log off` (wrk alternates between them; stderr is read "
             "through a pipe, as a container runtime does)"]
    return res, ["rps", "p99_ms", "errors", "cpu_us_per_req"], notes


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


# ---------------------------------------------------------------------------
# Rows 10-14: the heavy app (bench/heavy/) preforked vs lazy (issue 15).
# Servers: podmaster with `shared-import = heavyapp` (zygote), podmaster with
# `lazy-apps = true` (a cold interpreter per worker), uWSGI with the same
# worker script and --shared-import, gunicorn --preload with sync workers.
# A server that fails to start (e.g. a podmaster without shared-import)
# becomes "failed: reason" in its row instead of ending the run.
# ---------------------------------------------------------------------------


class StartFailed(Exception):
    pass


def log_tail(path, n=1):
    try:
        with open(path, errors="replace") as f:
            lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in f if line.strip()]
        return " / ".join(lines[-n:])
    except OSError:
        return ""


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = children(p)
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def mem_kb(pid):
    """(PSS, USS) in kB from /proc/PID/smaps_rollup."""
    vals = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Pss", "Private_Clean", "Private_Dirty"):
                    vals[k] = int(v.split()[0])
    except OSError:
        return 0, 0
    return vals.get("Pss", 0), vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)


class HeavyServer(Server):
    """start() returns the seconds from exec until every worker accepts."""

    label = "?"

    def start(self, timeout=90):
        t0 = time.monotonic()
        try:
            self.launch()
        except OSError as e:
            raise StartFailed(f"cannot exec: {e}")
        end = t0 + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise StartFailed(f"exited with {self.proc.returncode}: {log_tail(self.log.name)[:300]}")
            if self.ready():
                return time.monotonic() - t0
            time.sleep(0.005)
        self.stop()
        raise StartFailed(f"not ready after {timeout} s: {log_tail(self.log.name)[:300]}")

    def stop(self, timeout=40):
        if not self.proc or self.proc.poll() is not None:
            return
        tree = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in tree:  # anything of this server's tree still alive
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def tree(self):
        return [self.proc.pid] + descendants(self.proc.pid)

    def worker_pids(self):
        return [pid for pid, _ in self.slots().values() if pid > 0]

    def slots(self):
        """{worker id: (pid, accepting)}"""
        raise NotImplementedError

    def accepting(self):
        return sum(1 for pid, acc in self.slots().values() if pid > 0 and acc)

    def kill_worker(self, wid, pid):
        self.before = set(self.worker_pids())
        os.kill(pid, signal.SIGKILL)

    def respawned(self, wid, old):
        pid, acc = self.slots().get(wid, (0, False))
        return pid > 0 and pid != old and acc

    def reload(self):
        raise NotImplementedError

    def reload_done(self):
        now = self.slots()
        return len(now) == self.workers and all(pid > 0 and pid not in self.before and acc for pid, acc in now.values())


class PodmasterHeavy(HeavyServer):
    def __init__(self, workers, ini, label):
        super().__init__(workers)
        self.ini, self.label = ini, label

    def launch(self):
        self.probe = free_port()
        env = dict(os.environ, PORT=str(self.port), PROBE_PORT=str(self.probe), WORKERS=str(self.workers))
        self.proc = subprocess.Popen([PODMASTER, "--ini", os.path.join(HEAVY, self.ini)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def ready(self):
        return http(f"http://127.0.0.1:{self.probe}/readyz", timeout=1)[0] == 200

    def slots(self):
        code, body = http(f"http://127.0.0.1:{self.probe}/status")
        if code != 200:
            return {}
        return {w["id"]: (w.get("pid") or 0, w.get("state") == "accepting") for w in json.loads(body)["workers"]}

    def accepting(self):
        m = re.search(r"podmaster_workers_accepting (\d+)", http(f"http://127.0.0.1:{self.probe}/metrics")[1])
        return int(m.group(1)) if m else 0

    def reload(self):
        self.before = set(self.worker_pids())
        self.proc.send_signal(signal.SIGHUP)

    def reload_done(self):
        m = http(f"http://127.0.0.1:{self.probe}/metrics")[1]
        if 'podmaster_reloads_total{result="aborted"} 1' in m:
            raise RuntimeError("podmaster aborted the chain reload")
        return 'podmaster_reloads_total{result="ok"} 1' in m


class UwsgiHeavy(HeavyServer):
    def __init__(self, workers, script, extra, label):
        super().__init__(workers)
        self.script, self.extra, self.label = script, extra, label

    def launch(self):
        self.stats = free_port()
        self.touch = tempfile.NamedTemporaryFile(delete=False).name
        args = [
            os.path.join(VENV, "bin", "uwsgi"), "--master", "--processes", str(self.workers),
            "--socket", f"127.0.0.1:{self.port}", "--python-worker-override", self.script,
            "--home", VENV, "--stats", f"127.0.0.1:{self.stats}", "--touch-chain-reload", self.touch,
            "--die-on-term", "--listen", "1024", *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)

    def stats_json(self):
        try:
            with socket.create_connection(("127.0.0.1", self.stats), timeout=2) as s:
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return json.loads(data)
        except Exception:
            return {"workers": []}

    def slots(self):
        return {w["id"]: (w.get("pid", 0), w.get("accepting") == 1) for w in self.stats_json()["workers"]}

    def ready(self):
        return self.accepting() == self.workers

    def reload(self):
        self.before = set(self.worker_pids())
        os.utime(self.touch)


class GunicornHeavy(HeavyServer):
    label = "gunicorn --preload (sync)"

    def launch(self):
        args = [
            os.path.join(VENV, "bin", "gunicorn"), "--preload", "--chdir", HEAVY, "-w", str(self.workers),
            "-k", "sync", "-b", f"127.0.0.1:{self.port}", "--backlog", "1024", "--graceful-timeout", "20",
            "heavyapp:application",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)

    def booted(self):
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return set(int(p) for p in re.findall(r"Booting worker with pid: (\d+)", f.read()))

    def slots(self):
        # gunicorn has no per-worker "accepting": a child is counted once it
        # logged "Booting worker" (with --preload nothing is left to load).
        booted = self.booted()
        return {pid: (pid, pid in booted) for pid in children(self.proc.pid)}

    def ready(self):
        return self.accepting() >= self.workers and http(self.url + "/", timeout=1)[0] == 200

    def respawned(self, wid, old):
        now = self.slots()
        return any(acc for pid, (_, acc) in now.items() if pid not in self.before) and old not in now

    def reload(self):
        self.before = set(self.worker_pids())
        self.proc.send_signal(signal.SIGHUP)


HEAVY_WORKER = os.path.join(HEAVY, "heavy_worker.py")
HELLO = os.path.join(ROOT, "examples", "hello", "hello.py")
PM_PRE, PM_LAZY, UW, GUNI = "podmaster preforked", "podmaster lazy-apps", "uWSGI shared-import", "gunicorn --preload"


def heavy_servers():
    return [
        (PM_PRE, lambda n: PodmasterHeavy(n, "podmaster-prefork.ini", PM_PRE)),
        (PM_LAZY, lambda n: PodmasterHeavy(n, "podmaster-lazy.ini", PM_LAZY)),
        (UW, lambda n: UwsgiHeavy(n, HEAVY_WORKER, ["--pythonpath", HEAVY, "--shared-import", "heavyapp"], UW)),
        (GUNI, lambda n: GunicornHeavy(n)),
    ]


def hello_servers():
    return [
        (PM_PRE + ", hello", lambda n: PodmasterHeavy(n, "hello-prefork.ini", PM_PRE + ", hello")),
        (PM_LAZY + ", hello", lambda n: PodmasterHeavy(n, "hello-lazy.ini", PM_LAZY + ", hello")),
        (UW + ", hello", lambda n: UwsgiHeavy(n, HELLO, ["--shared-import", "asyncio"], UW + ", hello")),
    ]


def each_server(servers, workers, measure):
    """measure(server) once per repetition on a fresh server; returns
    {label: [results]} or {label: {"failed": reason}}."""
    out = {}
    for label, make in servers:
        print(f"   {label} ...", flush=True)
        runs = []
        try:
            for _ in measure.reps:
                s = make(workers)
                try:
                    runs.append(measure(s))
                finally:
                    s.stop()
            out[label] = runs
        except StartFailed as e:
            out[label] = {"failed": str(e)}
        except Exception as e:  # a measurement that broke: say so, go on
            out[label] = {"failed": f"{type(e).__name__}: {e}"[:300]}
    return out


def gc_everywhere(s, hits=2, max_requests=800):
    """GET /gc (3 full collections each) until every worker answered `hits`
    times; 8 concurrent clients so that busy workers leave requests to the
    others. Returns (fewest answers of a worker, median ms per collection)."""
    from concurrent.futures import ThreadPoolExecutor
    pids = set(s.worker_pids())
    seen = {p: 0 for p in pids}
    ms = []
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while sent < max_requests and min(seen.values(), default=0) < hits:
            for code, body in pool.map(lambda _: http(s.url + "/gc", timeout=30), range(8)):
                if code == 200:
                    r = json.loads(body)
                    seen[r["pid"]] = seen.get(r["pid"], 0) + 1
                    ms.append(r["ms_per_collection"])
            sent += 8
    return min(seen[p] for p in pids) if pids else 0, med(ms)


def mb(kb):
    return kb / 1024


def ratio_note(res, key, a, b, goal, better="lower"):
    va, vb = res.get(a, {}).get(key), res.get(b, {}).get(key)
    if va is None or vb is None or not vb:
        why = a if va is None else b
        return f"goal {a} {goal} {b}: not measured ({why} has no number)"
    r = va / vb
    return f"goal {a} {goal} {b} ({key}): {va:.1f} / {vb:.1f} = {r:.2f}x"


def summarize(runs, keys):
    out = {}
    for label, rs in runs.items():
        if isinstance(rs, dict):
            out[label] = rs
        else:
            out[label] = {k: med([r[k] for r in rs]) for k in keys}
    return out


def reps_of(n):
    return range(n)


UW_FROZEN = "uWSGI shared-import + gc.freeze (reference)"


def row_heavy_pss(reps, workers=4):
    def measure(s):
        s.start()
        time.sleep(1)
        before = [mem_kb(p) for p in s.worker_pids()]
        fewest, gc_ms = gc_everywhere(s)
        if fewest < 2:
            raise RuntimeError(f"a worker answered /gc only {fewest} times in 800 requests")
        time.sleep(0.3)
        after = [mem_kb(p) for p in s.worker_pids()]
        return dict(
            pss_start_mb=mb(med([m[0] for m in before])), pss_after_gc_mb=mb(med([m[0] for m in after])),
            uss_after_gc_mb=mb(med([m[1] for m in after])), ms_per_full_gc=gc_ms,
        )
    measure.reps = reps_of(reps)
    cols = ["pss_start_mb", "pss_after_gc_mb", "uss_after_gc_mb", "ms_per_full_gc"]
    reference = [(UW_FROZEN, lambda n: UwsgiHeavy(n, HEAVY_WORKER, ["--pythonpath", HEAVY, "--shared-import", "heavyapp_frozen"], UW_FROZEN))]
    res = summarize(each_server(heavy_servers() + reference, workers, measure), cols)
    k = "pss_after_gc_mb"
    notes = [
        ratio_note(res, k, PM_PRE, PM_LAZY, "<= 0.35x"),
        ratio_note(res, k, PM_PRE, UW, "<= 0.7x"),
        ratio_note(res, k, PM_PRE, GUNI, "< 1x"),
        "median over the workers, then over repetitions; every worker answered /gc at least twice (3 full collections each) before the second reading; "
        "ms_per_full_gc is wall time with 8 concurrent /gc clients on the machine's cores",
        f"{UW_FROZEN}: uWSGI's master imports bench/heavy/heavyapp_frozen.py (heavyapp, gc.collect(), gc.freeze()) before forking: what the zygote should reach",
    ]
    return res, cols, notes


def row_heavy_total_pss(reps, workers=8):
    def measure(s):
        s.start()
        time.sleep(1)
        start_total = sum(mem_kb(p)[0] for p in s.tree())
        fewest, _ = gc_everywhere(s)
        if fewest < 2:
            raise RuntimeError(f"a worker answered /gc only {fewest} times in 800 requests")
        time.sleep(0.3)
        tree, ws = s.tree(), set(s.worker_pids())
        master = mem_kb(s.proc.pid)[0]
        wsum = sum(mem_kb(p)[0] for p in ws)
        total = sum(mem_kb(p)[0] for p in tree)
        return dict(processes=float(len(tree)), total_start_mb=mb(start_total), total_after_gc_mb=mb(total),
                    master_mb=mb(master), workers_mb=mb(wsum), other_mb=mb(total - master - wsum))
    measure.reps = reps_of(reps)
    cols = ["processes", "total_start_mb", "total_after_gc_mb", "master_mb", "workers_mb", "other_mb"]
    res = summarize(each_server(heavy_servers(), workers, measure), cols)
    notes = [
        ratio_note(res, "total_after_gc_mb", PM_PRE, PM_LAZY, "vs"),
        ratio_note(res, "total_after_gc_mb", PM_PRE, UW, "vs"),
        ratio_note(res, "total_after_gc_mb", PM_PRE, GUNI, "vs"),
        "sum of PSS over the master and every descendant (zygote, workers); other_mb = the tree minus master and workers (podmaster: the zygote). No goal set; lower is better",
    ]
    return res, cols, notes


def row_heavy_startup(reps, workers=4):
    def measure(s):
        return dict(startup_ms=s.start() * 1000)
    measure.reps = reps_of(reps)
    res = summarize(each_server(heavy_servers() + hello_servers(), workers, measure), ["startup_ms"])
    notes = [
        ratio_note(res, "startup_ms", PM_PRE, UW, "<= 0.9x"),
        ratio_note(res, "startup_ms", PM_PRE + ", hello", UW + ", hello", "<= 0.7x"),
        "from exec until every worker accepts: podmaster /readyz 200, uWSGI every worker accepting in its stats, gunicorn every worker logged 'Booting worker' and / answered; hello = examples/hello/hello.py with shared-import asyncio (podmaster preforked, uWSGI)",
    ]
    return res, ["startup_ms"], notes


def row_kill9(reps, workers=4, age=10.0):
    out = {}
    for label, make in heavy_servers():
        print(f"   {label} ...", flush=True)
        s = make(workers)
        try:
            s.start()
            seen = {}
            stop = threading.Event()

            def traffic():  # the workers serve while they age
                while not stop.is_set():
                    http(s.url + "/", timeout=2)
                    time.sleep(0.05)

            th = threading.Thread(target=traffic, daemon=True)
            th.start()
            times = []
            for _ in range(reps):
                while True:
                    now = time.monotonic()
                    slots = s.slots()
                    old = [(wid, pid) for wid, (pid, acc) in slots.items()
                           if pid > 0 and acc and now - seen.setdefault(pid, now) >= age]
                    if old:
                        break
                    time.sleep(0.1)
                wid, pid = old[0]
                t0 = time.monotonic()
                s.kill_worker(wid, pid)
                end = t0 + 30
                while not s.respawned(wid, pid):
                    if time.monotonic() > end:
                        raise RuntimeError("no replacement accepting within 30 s")
                times.append((time.monotonic() - t0) * 1000)
            stop.set()
            th.join()
            out[label] = dict(respawn_ms=med(times), worst_ms=max(times))
        except StartFailed as e:
            out[label] = {"failed": str(e)}
        except Exception as e:
            out[label] = {"failed": f"{type(e).__name__}: {e}"[:300]}
        finally:
            s.stop()
    notes = [
        (f"goal {PM_PRE} median <= 30 ms: {out[PM_PRE]['respawn_ms']:.1f} ms"
         if "respawn_ms" in out.get(PM_PRE, {}) else f"goal {PM_PRE} median <= 30 ms: not measured"),
        "one server per row, one kill per repetition, each of a worker that has run >= 10 s while serving a request every 50 ms; "
        "polled in a tight loop: podmaster /status (slot's new pid, state accepting), uWSGI stats (new pid, accepting 1), "
        "gunicorn a new child that logged 'Booting worker' (gunicorn has no accepting signal)",
    ]
    return out, ["respawn_ms", "worst_ms"], notes


def row_heavy_reload(reps, workers=4, seconds=10):
    def measure(s):
        s.start()
        result = {}

        def load():
            try:
                result["r"] = wrk(s.url + "/", seconds=seconds)
            except Exception as e:
                result["err"] = e

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1)
        sampler = LowestAccepting(s, workers)
        t0 = time.monotonic()
        try:
            s.reload()
            wait(s.reload_done, timeout=60, step=0.01)
            took = time.monotonic() - t0
        finally:
            lowest = sampler.finish()
            t.join()
        if "err" in result:
            raise RuntimeError(f"wrk: {result['err']}")
        return dict(failed_requests=float(result["r"][2]), min_accepting=float(lowest), reload_s=took, rps=result["r"][0])
    measure.reps = reps_of(reps)
    cols = ["failed_requests", "min_accepting", "reload_s", "rps"]
    res = summarize(each_server(heavy_servers(), workers, measure), cols)
    notes = [
        "goal 0 failed requests: " + (", ".join(f"{k} {v['failed_requests']:.0f}" for k, v in res.items() if "failed_requests" in v) or "nothing measured"),
        f"wrk -t2 -c64 -d{seconds}s on /, reload after 1 s (podmaster SIGHUP, uWSGI touch-chain-reload, gunicorn SIGHUP: "
        "not a chain, and --preload keeps the old app); failed = socket errors + non-2xx (median), min accepting sampled every 10 ms",
    ]
    return res, cols, notes


def row_apps(a):
    """Row 17 lives in bench/wsgi_rows.py, which imports this module's
    helpers: it gets this very module rather than a second copy of it."""
    sys.modules.setdefault("bench", sys.modules[__name__])
    import wsgi_rows
    return wsgi_rows.row17(a.reps, a.duration, a.all_views)


def row_static_files(reps):
    import static_row
    return static_row.row_static(sys.modules[__name__], reps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated row numbers")
    ap.add_argument("--duration", type=int, default=5, help="row 17: seconds per wrk run (its chain reload: twice that)")
    ap.add_argument("--all-views", action="store_true", help="row 17: also Flask JSON and Django hello")
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
        ("9", "/readyz latency while workers burn CPU", lambda: row_readyz_under_load(a.reps)),
        ("10", "heavy app (60 MB of GC-tracked objects), 4 workers: per-worker PSS at start and after full collections", lambda: row_heavy_pss(a.reps)),
        ("11", "heavy app, 8 workers: total PSS of the whole process tree", lambda: row_heavy_total_pss(a.reps)),
        ("12", "exec -> 4 workers accepting: heavy app and hello example", lambda: row_heavy_startup(a.reps)),
        ("13", "kill -9 of a worker that has run >= 10 s -> its slot accepting again (heavy app)", lambda: row_kill9(a.reps)),
        ("14", "chain reload of 4 heavy workers under wrk", lambda: row_heavy_reload(a.reps)),
        ("15", "a worker leaking 20 MB per request in a 400 MB container (2 workers, 30 requests)", lambda: row_leak(a.reps)),
        ("16", "WSGI hello and JSON views over HTTP: podmaster's WSGI worker (access log on and off), uWSGI, gunicorn sync", lambda: row_wsgi(a.reps)),
        ("17", "Flask and Django apps: podmaster, uWSGI (same ini), gunicorn; HTTP and nginx uwsgi_pass; PSS; chain reload",
         lambda: row_apps(a)),
        ("18", "static files (static-map): podmaster's Rust front vs uWSGI, 2 workers", lambda: row_static_files(a.reps)),
    ]
    lines = [f"# Benchmark results ({time.strftime('%Y-%m-%d')})", "", f"`bench/run.sh --reps {a.reps}`; medians of {a.reps}.", ""]
    for key, title, fn in rows:
        if only and re.match(r"\d+", key).group() not in only and key not in only:
            continue
        print(f"== {key}: {title}", flush=True)
        res = fn()
        if isinstance(res, str):  # row 17 renders its own tables
            block = [f"## {key}. {title}", "", res, ""]
            lines += block
            print("\n".join(block), flush=True)
            continue
        # Rows 10-14 return (results, column order, goal notes); a server that
        # could not be measured has {"failed": reason}.
        res, cols, notes = res if isinstance(res, tuple) else (res, None, [])
        cols = cols or sorted({k for v in res.values() for k in v if k != "failed"})
        first = len(lines)
        lines.append(f"## {key}. {title}")
        lines.append("| server | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for server, vals in res.items():
            if "failed" in vals:
                cells = ["failed: " + str(vals["failed"]).replace("|", "/")] + [""] * (len(cols) - 1)
            else:
                cells = [f"{vals[c]:.1f}" if isinstance(vals.get(c), float) else str(vals.get(c, "")) for c in cols]
            lines.append(f"| {server} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        print("\n".join(lines[first:]), flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
