"""Bench rows 16-17's WSGI app: a plain-text hello view and a 2 KB JSON
view, the same file for podmaster (`module = wsgi_hello`), uWSGI and
gunicorn."""
import json

PAYLOAD = json.dumps({"items": [{"id": i, "name": f"item {i}", "ok": True} for i in range(48)]}).encode()


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/json":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(PAYLOAD)))])
        return [PAYLOAD]
    body = b"Hello, World"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
