"""Row 18 (issue 20): static files under `static-map`, podmaster's Rust
front (sendfile, no Python) vs uWSGI's static-map, same files, same
workers, over an HTTP socket; wrk -t2 -c64 over keep-alive."""
import os
import tempfile


def static_files():
    """A directory with a 1 KiB stylesheet, a 100 KiB script and a 1 MiB file."""
    d = tempfile.mkdtemp(prefix="bench-static-")
    for name, size in (("style.css", 1024), ("app.js", 100 * 1024), ("big.bin", 1 << 20)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(bytes((i * 7) % 251 for i in range(size)))
    return d


def row_static(b, reps, seconds=5, workers=2):
    """(results, columns, notes) in bench.py's row format; `b` is the
    bench module (its helpers: free_port, start_wsgi_server, wrk, med)."""
    d = static_files()
    res = {}
    for name in ("podmaster", "uWSGI"):
        port, probe = b.free_port(), b.free_port()
        argv = b.wsgi_servers(workers, port, probe)["podmaster, access log off" if name == "podmaster" else name]
        argv = argv + ["--static-map", f"/static={d}"]
        procs = b.start_wsgi_server(argv, port)
        try:
            for f in ("style.css", "app.js", "big.bin"):
                runs = [b.wrk(f"http://127.0.0.1:{port}/static/{f}", seconds=seconds) for _ in range(reps)]
                res[f"{name}, {f}"] = dict(rps=b.med([r[0] for r in runs]), p99_ms=b.med([r[1] for r in runs]),
                                           errors=float(sum(r[2] for r in runs)))
        finally:
            for p in procs:
                b.stop_process(p)
    notes = ["goal (issue 20): static files from the Rust front at least as fast as uWSGI's static-map; "
             "both without a request log; uWSGI's http-socket closes each connection (its errors column)"]
    return res, ["rps", "p99_ms", "errors"], notes
