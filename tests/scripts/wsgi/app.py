"""WSGI apps for tests/wsgi.rs, each wrapped in wsgiref's validator
(PEP 3333 conformance checks on environ, start_response and the
iterable). No PyPI packages."""
import json
import os
import sys
import threading
import time
from wsgiref.validate import validator


def _raw(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/echo":
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = environ["wsgi.input"].read(int(length))
        else:  # chunked: read to the end (the validator allows iteration)
            body = b"".join(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path.startswith("/environ"):
        keys = {k: v for k, v in environ.items() if isinstance(v, str)}
        keys["wsgi.multithread"] = environ["wsgi.multithread"]
        keys["wsgi.version"] = list(environ["wsgi.version"])
        keys["pid"] = os.getpid()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(keys).encode()]
    if path == "/stream":
        def gen():
            for i in range(5):
                yield b"chunk %d\n" % i
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/raise":
        raise RuntimeError("boom from the app")
    if path == "/slow":
        # Tests wait for this line to know the request is in flight.
        print("slow request started", file=sys.stderr, flush=True)
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow done\n"]
    if path == "/barrier":
        BARRIER.wait(timeout=10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"met\n"]
    if path == "/lines":
        lines = environ["wsgi.input"].readlines()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d lines\n" % len(lines)]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, " + path[1:].encode("latin-1") + b"\n"]


BARRIER = threading.Barrier(4)
application = validator(_raw)


KEPT = {}


def edges(environ, start_response):
    """Not validated: exercises what the validator forbids on purpose."""
    path = environ["PATH_INFO"]
    if path == "/keep-input":
        # Keeps wsgi.input past the call; /read-kept reads it later.
        KEPT["input"] = environ["wsgi.input"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"kept\n"]
    if path == "/read-kept":
        try:
            KEPT["input"].read(1)
            result = b"read\n"
        except ValueError as e:
            result = b"ValueError: " + str(e).encode() + b"\n"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [result]
    if path == "/exc-info":
        # An error page replacing headers not sent yet (PEP 3333).
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("late")
        except KeyError:
            start_response("503 Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced\n"]
    if path == "/closing":
        class Body:
            def __iter__(self):
                yield b"a"
                yield b"b"
            def close(self):
                KEPT["closed"] = KEPT.get("closed", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()
    if path == "/closed":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"closed %d\n" % KEPT.get("closed", 0)]
    return application(environ, start_response)
