"""Bench row 17 (issue 19): real Flask and Django apps (bench/apps/) under
podmaster's WSGI worker, under uWSGI reading the very same ini file, and
under gunicorn.

A module of its own because bench.py is past the size a file may have; it
uses bench's pieces (the wrk runner, medians, the HeavyServer start / stop /
reload helpers, gc_everywhere, mem_kb) rather than copies. bench.py imports
it for `--only 17`.

Three parts, each printed as a markdown table ready for bench/README.md:
- throughput: wrk -t2 -c64 --latency over keep-alive on each app view, 2 and
  4 workers, threads 1 and 4, over HTTP (podmaster and uWSGI on
  `http11-socket`, gunicorn sync and gthread) and through nginx `uwsgi_pass`
  (podmaster and uWSGI on `socket`); medians of --reps runs after a warm-up;
- per-worker PSS and USS of the Django app after load and a full collection
  in every worker (podmaster preforked, uWSGI's default, gunicorn --preload);
- a chain reload of 4 Django workers under wrk keep-alive load: failed
  requests.
"""
import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import bench as b

APPS = os.path.join(b.ROOT, "bench", "apps")
# app -> (directory under bench/apps, gunicorn's app target); uwsgi.ini in
# the directory is read by both podmaster and uWSGI.
APP = {"Flask": ("flaskapp", "app:app"), "Django": ("djangosite", "benchsite.wsgi:application")}
PATH = {"hello": "/", "JSON": "/json"}
GOAL_VS_UWSGI = {("Flask", "hello"): 1.2, ("Django", "JSON"): 1.0}  # podmaster / uWSGI req/s (issue 19)
GOAL_VS_SYNC = 1.5
NGINX = "/usr/sbin/nginx"
WARMUP_S = 1
PSS_LOAD_S = 2
TRANSPORT = {"http": "HTTP", "uwsgi": "nginx `uwsgi_pass`"}
# The ini's socket, per transport: `http-socket`, `http11-socket` (uWSGI
# keeps connections alive; podmaster serves it as http-socket), `socket`.
SOCKET_ENV = {"http": "BENCH_HTTP_SOCKET", "http11": "BENCH_HTTP11_SOCKET", "uwsgi": "BENCH_UWSGI_SOCKET"}
PROBE_S = 2


def ini(app):
    return os.path.join(APPS, APP[app][0], "uwsgi.ini")


def app_env(workers, threads, transport, addr):
    """The environment the shared ini reads. UWSGI_* and PODMASTER_*
    variables of the caller would be options to the servers: dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "PODMASTER_", "BENCH_"))}
    env.update(WORKERS=str(workers), THREADS=str(threads))
    env[SOCKET_ENV[transport]] = addr
    return env


class AppServer:
    """Row 17's part of a server: one app, `workers` × `threads`, one socket
    (HTTP or HTTP/1.1 on self.port, or the uwsgi protocol on a UNIX socket
    in a temporary directory, for nginx)."""

    def setup(self, app, workers, threads, transport):
        b.HeavyServer.__init__(self, workers)
        self.app, self.threads, self.transport = app, threads, transport
        self.dir = tempfile.mkdtemp(prefix="bench17-")
        self.addr = os.path.join(self.dir, "app.sock") if transport == "uwsgi" else f"127.0.0.1:{self.port}"

    def popen(self, argv, env=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    def stop(self, timeout=40):
        b.HeavyServer.stop(self, timeout)
        shutil.rmtree(self.dir, ignore_errors=True)


class PodmasterApp(AppServer, b.PodmasterHeavy):
    """`podmaster --ini APP/uwsgi.ini --probe-socket …`: preforked (the
    zygote imports the app); ready when /readyz answers 200."""

    def __init__(self, app, workers, threads=1, transport="http"):
        self.setup(app, workers, threads, transport)
        self.label = "podmaster"

    def launch(self):
        self.probe = b.free_port()
        argv = [b.PODMASTER, "--ini", ini(self.app), "--probe-socket", f"127.0.0.1:{self.probe}"]
        self.popen(argv, app_env(self.workers, self.threads, self.transport, self.addr))


class UwsgiApp(AppServer, b.UwsgiHeavy):
    """`uwsgi --ini APP/uwsgi.ini` (the app loaded in the master, uWSGI's
    default, or `--lazy-apps`), plus a stats socket for readiness and a
    touch-chain-reload file."""

    def __init__(self, app, workers, threads=1, transport="http", lazy=False):
        self.setup(app, workers, threads, transport)
        self.lazy = lazy
        self.label = "uWSGI" + (" http11-socket" if transport == "http11" else "") + (" lazy-apps" if lazy else "")

    def launch(self):
        self.stats = b.free_port()
        self.touch = os.path.join(self.dir, "chain-reload")
        open(self.touch, "w").close()
        argv = [os.path.join(b.VENV, "bin", "uwsgi"), "--ini", ini(self.app), "--stats", f"127.0.0.1:{self.stats}",
                "--touch-chain-reload", self.touch] + (["--lazy-apps"] if self.lazy else [])
        self.popen(argv, app_env(self.workers, self.threads, self.transport, self.addr))


class GunicornApp(AppServer, b.GunicornHeavy):
    """gunicorn `-k sync` (one request at a time per worker, closes each
    connection) or `-k gthread --threads N` (keep-alive), HTTP only."""

    def __init__(self, app, workers, threads=1, kind="sync", preload=False):
        self.setup(app, workers, threads, "http")
        self.kind, self.preload = kind, preload
        self.label = f"gunicorn {kind}" + (" --preload" if preload else "")

    def launch(self):
        argv = [os.path.join(b.VENV, "bin", "gunicorn"), "--chdir", os.path.join(APPS, APP[self.app][0]),
                "-w", str(self.workers), "-k", self.kind, "-b", self.addr]
        argv += (["--threads", str(self.threads)] if self.kind == "gthread" else []) + (["--preload"] if self.preload else [])
        self.popen(argv + [APP[self.app][1]])


class Nginx:
    """Debian's nginx in the foreground with a generated config: one worker
    process, keep-alive to the client, `uwsgi_pass` to a UNIX socket."""

    PARAMS = ["QUERY_STRING $query_string", "REQUEST_METHOD $request_method", "CONTENT_TYPE $content_type",
              "CONTENT_LENGTH $content_length", "REQUEST_URI $request_uri", "PATH_INFO $document_uri",
              "DOCUMENT_ROOT $document_root", "SERVER_PROTOCOL $server_protocol", "REQUEST_SCHEME $scheme",
              "HTTPS $https if_not_empty", "REMOTE_ADDR $remote_addr", "REMOTE_PORT $remote_port",
              "SERVER_PORT $server_port", "SERVER_NAME $server_name"]

    def __init__(self, upstream):
        self.dir = tempfile.mkdtemp(prefix="bench17-nginx-")
        self.port = b.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream
        self.proc = None

    def config(self):
        d = self.dir
        temps = " ".join(f"{k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        params = "\n".join(f"                uwsgi_param {p};" for p in self.PARAMS)
        return f"""daemon off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temps}
    keepalive_timeout 65;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            uwsgi_pass unix:{self.upstream};
{params}
        }}
    }}
}}
"""

    def start(self, timeout=30):
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(self.config())
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-e", os.path.join(self.dir, "error.log"), "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise b.StartFailed(f"nginx exited with {self.proc.returncode}: {b.log_tail(os.path.join(self.dir, 'error.log'))[:300]}")
            if b.http(self.url + "/", timeout=1)[0] == 200:
                return
            time.sleep(0.02)
        raise b.StartFailed(f"nginx: no 200 through uwsgi_pass after {timeout} s: {b.log_tail(os.path.join(self.dir, 'error.log'))[:300]}")

    def stop(self):
        if self.proc:
            b.stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def http_servers(app, workers, threads):
    out = [("podmaster", lambda: PodmasterApp(app, workers, threads)), ("uWSGI", lambda: UwsgiApp(app, workers, threads)),
           ("uWSGI http11", lambda: UwsgiApp(app, workers, threads, "http11"))]
    if threads == 1:
        out.append(("gunicorn sync", lambda: GunicornApp(app, workers)))
    else:
        out.append(("gunicorn gthread", lambda: GunicornApp(app, workers, threads, kind="gthread")))
    return out


def nginx_servers(app, workers, threads):
    return [("podmaster", lambda: PodmasterApp(app, workers, threads, "uwsgi")),
            ("uWSGI", lambda: UwsgiApp(app, workers, threads, "uwsgi"))]


def answered(url, path, seconds=PROBE_S, conns=64):
    """How many of `conns` keep-alive connections got at least one answer
    within `seconds`, each sending its next request once it has the whole
    answer and reconnecting when the server closes (as wrk does). wrk's
    numbers cannot show this: a request never answered is not counted, not
    even as a timeout (uWSGI's http11-socket serves processes × threads
    connections and leaves the others waiting)."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    sel, got = selectors.DefaultSelector(), [0] * conns
    end = time.monotonic() + seconds

    def connect(i):
        try:
            c = socket.create_connection((host, int(port)), timeout=1)
            c.setblocking(False)
            c.send(req)
            sel.register(c, selectors.EVENT_READ, [i, b""])
        except OSError:
            pass  # this slot stays unanswered
    for i in range(conns):
        connect(i)
    while time.monotonic() < end:
        for key, _ in sel.select(0.05):
            st = key.data
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                connect(st[0])
                continue
            st[1] += data
            while (n := complete(st[1])) is not None:
                st[1] = st[1][n:]
                got[st[0]] += 1
                key.fileobj.send(req)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return sum(1 for n in got if n)


def complete(buf):
    """The length of the first whole response in `buf` (Content-Length or
    chunked), or None."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return None
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])}
    if b"content-length" in fields:
        n = int(fields[b"content-length"])
        return len(head) + 4 + n if len(rest) >= n else None
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        end = rest.find(b"0\r\n\r\n")
        return None if end < 0 else len(head) + 4 + end + 5
    return len(head) + 4


def run_server(make, views, reps, seconds):
    """Starts one server (behind nginx for the uwsgi transport); per view a
    warm-up run, then `reps` wrk runs; then how many of 64 connections get
    answered. {view: result}; a server that fails gives
    {view: {"failed": reason}} for every view."""
    s, ng = make(), None
    try:
        s.start()
        url = s.url
        if s.transport == "uwsgi":
            ng = Nginx(s.addr)
            ng.start()
            url = ng.url
        pids = set(s.worker_pids())
        out = {}
        for view in views:
            b.wrk(url + PATH[view], seconds=WARMUP_S)
            runs = [b.wrk(url + PATH[view], seconds=seconds) for _ in range(reps)]
            out[view] = dict(rps=b.med([r[0] for r in runs]), p99_ms=b.med([r[1] for r in runs]),
                             errors=sum(r[2] for r in runs), non2xx=sum(r[3] for r in runs))
        n = answered(url, PATH[views[0]])
        for r in out.values():
            r["answered"] = n
        if s.proc.poll() is not None:
            raise RuntimeError(f"the server exited during the runs ({s.proc.returncode}): {b.log_tail(s.log.name)[:200]}")
        if set(s.worker_pids()) != pids:
            for r in out.values():
                r["note"] = "workers restarted during the runs"
        return out
    except Exception as e:
        why = str(e) if isinstance(e, b.StartFailed) else f"{type(e).__name__}: {e}"
        return {v: {"failed": why[:300]} for v in views}
    finally:
        if ng:
            ng.stop()
        s.stop()


def throughput(reps, seconds, views):
    """{(app, view, workers, threads, transport, server): result}"""
    res = {}
    for app in ("Flask", "Django"):
        for workers in (2, 4):
            for threads in (1, 4):
                for transport, servers in (("http", http_servers), ("uwsgi", nginx_servers)):
                    for name, make in servers(app, workers, threads):
                        print(f"   {app} {workers}x{threads} {TRANSPORT[transport]}: {name} ...", flush=True)
                        for view, r in run_server(make, views[app], reps, seconds).items():
                            res[(app, view, workers, threads, transport, name)] = r
    return res


def memory(reps, workers=4):
    """Per-worker PSS / USS (median over the workers, then the repetitions)
    of the Django app after PSS_LOAD_S of wrk on /json and three full
    collections in every worker (its /gc view)."""
    servers = [("podmaster", lambda n: PodmasterApp("Django", n)), ("uWSGI", lambda n: UwsgiApp("Django", n)),
               ("gunicorn --preload", lambda n: GunicornApp("Django", n, preload=True))]

    def measure(s):
        s.start()
        b.wrk(s.url + "/json", seconds=PSS_LOAD_S)
        fewest, gc_ms = b.gc_everywhere(s, hits=1)
        if fewest < 1:
            raise RuntimeError("a worker never answered /gc in 800 requests")
        time.sleep(0.3)
        mem = [b.mem_kb(p) for p in s.worker_pids()]
        return dict(pss_mb=b.mb(b.med([m[0] for m in mem])), uss_mb=b.mb(b.med([m[1] for m in mem])), gc_ms=gc_ms)
    measure.reps = b.reps_of(reps)
    print("   per-worker PSS, Django, 4 workers", flush=True)
    return b.summarize(b.each_server(servers, workers, measure), ["pss_mb", "uss_mb", "gc_ms"])


def chain_reload(reps, seconds, threads, workers=4):
    """A chain reload of the Django app's workers 1 s into `wrk -d seconds`
    on /json: podmaster SIGHUP (preforked, http-socket), uWSGI on
    http11-socket (keep-alive: on http-socket every answer would count as
    a read error) with --lazy-apps and touch-chain-reload. Failed = wrk's
    socket errors + non-2xx."""
    servers = [("podmaster", lambda n: PodmasterApp("Django", n, threads)),
               ("uWSGI lazy-apps", lambda n: UwsgiApp("Django", n, threads, "http11", lazy=True))]

    def measure(s):
        s.start()
        result = {}
        t = threading.Thread(target=lambda: result.update(r=b.wrk(s.url + "/json", seconds=seconds)))
        t.start()
        time.sleep(1)
        t0 = time.monotonic()
        try:
            s.reload()
            b.wait(s.reload_done, timeout=60, step=0.01)
            took = time.monotonic() - t0
        finally:
            t.join()
        if "r" not in result:
            raise RuntimeError("wrk gave no result")
        rps, _, failed, non2xx = result["r"]
        return dict(failed_requests=float(failed), socket_errors=float(failed - non2xx), non2xx=float(non2xx), reload_s=took, rps=rps)
    measure.reps = b.reps_of(reps)
    print(f"   chain reload, Django, 4 workers, threads {threads}", flush=True)
    runs = b.each_server(servers, workers, measure)
    out = b.summarize(runs, ["failed_requests", "socket_errors", "non2xx", "reload_s", "rps"])
    for label, rs in runs.items():
        if isinstance(rs, list) and rs:
            out[label]["worst"] = max(r["failed_requests"] for r in rs)
    return out


def row17(reps, seconds=5, all_views=False):
    """The whole row as markdown: the throughput table, then memory and
    chain reload."""
    views = {"Flask": ["hello"] + (["JSON"] if all_views else []), "Django": ["JSON"] + (["hello"] if all_views else [])}
    res = throughput(reps, seconds, views)
    mem = memory(reps)
    reloads = {t: chain_reload(reps, 2 * seconds, t) for t in (1, 4)}
    head = [f"`python3 bench/bench.py --only 17 --reps {reps}" + (f" --duration {seconds}" if seconds != 5 else "")
            + (" --all-views" if all_views else "") + f"`: wrk -t2 -c64 -d{seconds}s --latency, medians of {reps} "
            f"after a {WARMUP_S} s warm-up; errors = wrk's socket errors + non-2xx, summed over the runs.", ""]
    return "\n".join(head + throughput_table(res, views, reps) + [""] + other_table(mem, reloads, reps, 2 * seconds))


def count(n):
    n = float(n)
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e4 else f"{n:.0f}"


def rate(rps):
    return f"{rps:,.0f}/s".replace(",", " ")


def cell(r):
    if r is None:
        return "—"
    if "failed" in r:
        return "failed: " + r["failed"].replace("|", "/")
    err = f"{count(r['errors'])} err" + (f" ({count(r['non2xx'])} non-2xx)" if r["non2xx"] else "")
    note = f", **{r['note']}**" if r.get("note") else ""
    if r.get("answered", 64) < 64:
        note += f", **{r['answered']} of 64 connections answered**"
    return f"{rate(r['rps'])}, {r['p99_ms']:.1f} ms, {err}{note}"


def ratio(a, b_, goal):
    if not a or not b_ or "rps" not in a or "rps" not in b_ or not b_["rps"]:
        return "—"
    r = a["rps"] / b_["rps"]
    if goal is None:
        return f"{r:.2f}×"
    return f"{r:.2f}× (≥ {goal}×: " + ("met)" if r >= goal else "**missed**)")


def p99_verdict(pm, uw):
    if not pm or not uw or "p99_ms" not in pm or "p99_ms" not in uw:
        return "—"
    ok = pm["p99_ms"] <= uw["p99_ms"]
    return ("met" if ok else "**missed**") + f" ({pm['p99_ms']:.1f} vs {uw['p99_ms']:.1f} ms)"


def throughput_table(res, views, reps):
    lines = ["| # | view | workers × threads | transport | podmaster | uWSGI | uWSGI http11-socket | gunicorn sync "
             "| gunicorn gthread | podmaster / uWSGI | podmaster / gunicorn sync | p99 ≤ uWSGI |", "|---|" + "---|" * 11]
    for app in ("Flask", "Django"):
        for view in views[app]:
            for workers in (2, 4):
                for threads in (1, 4):
                    for transport in ("http", "uwsgi"):
                        k = (app, view, workers, threads, transport)
                        pm, uw = res.get(k + ("podmaster",)), res.get(k + ("uWSGI",))
                        # gunicorn's sync worker has no threads: its 1-thread run stands for both
                        sync = res.get((app, view, workers, 1, transport, "gunicorn sync"))
                        gth, uw11 = res.get(k + ("gunicorn gthread",)), res.get(k + ("uWSGI http11",))
                        sync_cell = cell(sync) + (" ¹" if sync and threads > 1 else "")
                        vs_uw = ratio(pm, uw, GOAL_VS_UWSGI.get((app, view)))
                        if uw11 and "rps" in uw11 and pm and "rps" in pm:
                            vs_uw += f"; http11-socket {ratio(pm, uw11, None)}"
                        lines.append(f"| 17 | {app} {view} | {workers} × {threads} | {TRANSPORT[transport]} | {cell(pm)} | "
                                     f"{cell(uw)} | {cell(uw11)} | {sync_cell if transport == 'http' else '—'} | {cell(gth)} | "
                                     f"{vs_uw} | {ratio(pm, sync, GOAL_VS_SYNC) if transport == 'http' else '—'} | "
                                     f"{p99_verdict(pm, uw)} |")
    lines += ["", "HTTP: podmaster and uWSGI on `http-socket` (uWSGI closes each connection after its answer: wrk "
              "counts a read error per answer), uWSGI also on `http11-socket` (keep-alive; it serves processes × "
              "threads connections and leaves the others waiting, which wrk does not count: hence the answered "
              "column, from a separate 2 s probe of 64 keep-alive connections, shown when fewer than 64 got an "
              "answer). Goals are against uWSGI's `http-socket`, the issue's transport. Behind nginx: `socket` "
              "(uwsgi protocol), one upstream connection per request for both.",
              "", "¹ gunicorn's sync worker serves one request at a time whatever `--threads` says (with threads > 1 "
              "gunicorn would switch to gthread): the 1-thread run of the same workers is the comparison. "
              "gunicorn speaks no uwsgi protocol: no cells behind nginx."]
    return lines


def mem_cell(r):
    if r is None:
        return "—"
    if "failed" in r:
        return "failed: " + r["failed"].replace("|", "/")
    return f"{r['pss_mb']:.1f} / {r['uss_mb']:.1f} MB"


def reload_cell(r):
    if r is None:
        return "—"
    if "failed" in r:
        return "failed: " + r["failed"].replace("|", "/")
    return (f"{r['failed_requests']:.0f} ({r['socket_errors']:.0f} + {r['non2xx']:.0f}; worst {r.get('worst', 0):.0f}), "
            f"{r['reload_s']:.1f} s, {rate(r['rps'])}")


def other_table(mem, reloads, reps, seconds):
    pm, uw = mem.get("podmaster", {}), mem.get("uWSGI", {})
    if "pss_mb" in pm and "pss_mb" in uw and uw["pss_mb"]:
        r = pm["pss_mb"] / uw["pss_mb"]
        verdict = ("met" if r <= 1 else "**missed**") + f" ({r:.2f}×)"
    else:
        verdict = "—"
    gc = " | ".join(f"{mem[k]['gc_ms']:.1f}" if "gc_ms" in mem.get(k, {}) else "—"
                    for k in ("podmaster", "uWSGI", "gunicorn --preload"))
    lines = ["| # | row | podmaster | uWSGI | gunicorn | goal | verdict |", "|---|---|---|---|---|---|---|",
             f"| 17 | Django, 4 workers: per-worker PSS / USS after {PSS_LOAD_S} s of wrk and a full collection in each "
             f"(podmaster preforked, uWSGI app in the master, gunicorn --preload sync) | {mem_cell(mem.get('podmaster'))} | "
             f"{mem_cell(mem.get('uWSGI'))} | {mem_cell(mem.get('gunicorn --preload'))} | PSS ≤ uWSGI | {verdict} |",
             f"| 17 | ms per full `gc.collect()` in a worker (8 concurrent /gc clients) | {gc} | — | — |"]
    for threads, res in reloads.items():
        p = res.get("podmaster", {})
        v = ("met" if p["worst"] == 0 else "**missed**") if "worst" in p else "not measured"
        lines.append(f"| 17 | chain reload of 4 Django workers, threads = {threads}, {seconds} s of wrk on /json "
                     f"(reload at 1 s): failed (socket errors + non-2xx; worst of {reps}), reload time, req/s "
                     f"| {reload_cell(res.get('podmaster'))} | {reload_cell(res.get('uWSGI lazy-apps'))} "
                     f"(`http11-socket`, `--lazy-apps`, touch-chain-reload) | — | 0 failed (podmaster) | {v} |")
    return lines
