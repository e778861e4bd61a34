"""WSGI app for tests/wsgi_attacks: big bodies both ways, limit-post, and a
target for hostile clients. Wrapped in wsgiref's validator (PEP 3333
checks on every request). No PyPI packages.

Routes:
  /hash        reads wsgi.input in 64 KiB reads to its end: "<count> <crc32>"
               and a log line "input saw N bytes" (also when a read fails)
  /yield?N     N bytes of pattern in 64 KiB chunks, no Content-Length
  /file?PATH   the file through wsgi.file_wrapper
  /slow?S      logs "slow request started", sleeps S seconds
  anything     "Hello, <path>"
"""
import os
import sys
import time
import zlib
from wsgiref.validate import validator

BLOCK = 64 * 1024


def pattern(n):
    """The byte stream tests/common/wsgi.rs's `pattern` makes: byte i is
    PRIME[i % 65521], where PRIME is a fixed pseudo-random block."""
    return bytes((i * 7919 + (i >> 8)) & 0xFF for i in range(n))


PRIME = pattern(65521)


def _hash(environ, start_response):
    inp = environ["wsgi.input"]
    count, crc, failed = 0, 0, None
    while True:
        try:
            data = inp.read(BLOCK)
        except OSError as e:
            failed = str(e)
            break
        if not data:
            break
        count += len(data)
        crc = zlib.crc32(data, crc)
    print("input saw %d bytes%s" % (count, " (%s)" % failed if failed else ""), file=sys.stderr, flush=True)
    if failed:
        # The front answers for a failed body (400, 413) or closes.
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"body failed\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d %d\n" % (count, crc)]


def _yield(total):
    sent = 0
    while sent < total:
        start = sent % len(PRIME)
        block = (PRIME[start:] + PRIME[:start])[: min(BLOCK, total - sent)]
        sent += len(block)
        yield block


def _raw(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/hash":
        return _hash(environ, start_response)
    if path == "/yield":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _yield(int(query or "0"))
    if path == "/file":
        f = open(query, "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, BLOCK)
    if path == "/slow":
        print("slow request started", file=sys.stderr, flush=True)
        time.sleep(float(query or "1"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow done\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, " + path[1:].encode("latin-1") + b"\n"]


application = validator(_raw)
