"""A plain WSGI app, the kind uWSGI runs with `module = app:application`:
no framework, only the standard library. podmaster imports it once in the
zygote and serves it from every worker."""
import json


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/echo" and environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/json":
        body = json.dumps({"path": path, "method": environ["REQUEST_METHOD"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    name = path.strip("/") or "World"
    body = f"Hello, {name}\n".encode("utf-8", "replace")
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
