"""A small Flask app as its users deploy it under uWSGI: `module = app:app`.

  GET /            -> "Hello, World!" (text/plain)
  GET /hello/NAME  -> "Hello, NAME!"
  GET /api/items   -> a catalogue page as JSON, about 2 KB
  GET /slow?s=N    -> answers after N seconds (at most 10: to watch a drain)

podmaster's zygote imports this module once and forks the workers from it.
"""
import time

from flask import Flask, jsonify, request

app = Flask(__name__)

# Built once at import, shared copy-on-write by every worker.
ITEMS = [
    {
        "id": i,
        "sku": f"SKU-{i:05d}",
        "name": f"Item number {i}",
        "price_cents": 199 + 37 * i,
        "in_stock": i % 3 != 0,
        "tags": ["example", "flask", f"group-{i % 4}"],
    }
    for i in range(1, 17)
]


@app.get("/")
def index():
    return "Hello, World!", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/hello/<name>")
def hello(name):
    return f"Hello, {name}!", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/api/items")
def items():
    return jsonify(page=1, per_page=len(ITEMS), total=len(ITEMS), items=ITEMS)


@app.get("/slow")
def slow():
    seconds = min(request.args.get("s", default=1.0, type=float), 10.0)
    time.sleep(seconds)
    return f"slept {seconds:g}", 200, {"Content-Type": "text/plain; charset=utf-8"}


if __name__ == "__main__":
    app.run(port=8000)
