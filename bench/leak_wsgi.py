"""Bench row 15's uWSGI app: the same leak as leak_worker.py as a WSGI app
(uWSGI's reload-on-rss is checked after each WSGI request)."""
import os

LEAKED = []


def application(environ, start_response):
    LEAKED.append(b"x" * (20 << 20))
    body = f"pid {os.getpid()} holds {20 * len(LEAKED)} MB".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
