"""Bench row 17's Flask app (issue 19): a plain-text hello view and a JSON
view of about 2 KB (jsonify on every request, as a real view would). The
same file runs under podmaster and uWSGI (`module = app:app` in uwsgi.ini)
and gunicorn (`app:app`)."""
from flask import Flask, jsonify

app = Flask(__name__)

ITEMS = [{"id": i, "name": f"item {i}", "ok": True} for i in range(48)]


@app.get("/")
def hello():
    return "Hello, World", 200, {"Content-Type": "text/plain"}


@app.get("/json")
def json_view():
    return jsonify(items=ITEMS)
