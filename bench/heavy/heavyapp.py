"""A "heavy" Python app for the prefork benchmarks (bench.py rows 10-14).

Importing it builds about HEAVY_MB (default 60) MB of GC-tracked objects,
the way a real app's ORM registry or template cache does: one dict per
"model", each holding lists and a nested dict, so that the cyclic garbage
collector tracks (and, on a full collection, writes to the header of) every
one of them. A full gc.collect() in a forked worker therefore copies every
page holding such an object unless the parent ran gc.freeze() before
forking; that is what the per-worker PSS rows measure.

  GET /    -> "Hello from worker W (pid P)"
  GET /gc  -> runs gc.collect() (full) N times (?n=N, default 3) and answers
              JSON: pid, worker, collected, gen2 collections so far,
              gc.get_freeze_count(), milliseconds per collection

`application` is the WSGI app (gunicorn --preload sync workers);
bench/heavy/heavy_worker.py serves `route()` under podmaster and uWSGI
(python-worker-override). Nothing here touches the registry after import:
only the collector does.
"""
import gc
import json
import os
import time

HEAVY_MB = float(os.environ.get("HEAVY_MB", "60"))
# Measured on CPython 3.11 (x86-64): one entry below is about 840 bytes of
# RSS (dicts, lists, strs, ints), so 1 220 entries make a megabyte.
ENTRIES = int(HEAVY_MB * 1220)


def _build(n):
    registry = []
    for i in range(n):
        registry.append({
            "id": i,
            "name": "model_%d" % i,
            "columns": [i, i + 1, i + 2],
            "relations": [],
            "meta": {"table": "t%d" % (i % 1000), "indexes": [i]},
        })
    return registry


_t0 = time.perf_counter()
REGISTRY = _build(ENTRIES)
IMPORT_SECONDS = time.perf_counter() - _t0
IMPORTED_BY = os.getpid()


def gc_report(n=3, worker=None):
    collected = 0
    t = time.perf_counter()
    for _ in range(n):
        collected += gc.collect()
    ms = (time.perf_counter() - t) * 1000 / max(n, 1)
    return {
        "pid": os.getpid(),
        "worker": worker,
        "collected": collected,
        "collections_gen2": gc.get_stats()[2]["collections"],
        "freeze_count": gc.get_freeze_count() if hasattr(gc, "get_freeze_count") else None,
        "ms_per_collection": round(ms, 3),
        "imported_by": IMPORTED_BY,
        "entries": ENTRIES,
    }


def route(path, worker=None):
    """(status, content type, body bytes) for a request path."""
    path, _, query = path.partition("?")
    if path == "/":
        return "200 OK", "text/plain; charset=utf-8", f"Hello from worker {worker} (pid {os.getpid()})\n".encode()
    if path == "/gc":
        n = 3
        for kv in query.split("&"):
            k, _, v = kv.partition("=")
            if k == "n" and v.isdigit():
                n = min(int(v), 100)
        body = json.dumps(gc_report(n, worker)) + "\n"
        return "200 OK", "application/json", body.encode()
    return "404 Not Found", "text/plain; charset=utf-8", b"not found: try / or /gc\n"


def application(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    status, ctype, body = route(path, worker=os.getpid())
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
