#!/usr/bin/env bash
# Benchmarks podmaster against uWSGI and gunicorn on this machine.
# usage: bench/run.sh [--reps N] [--only 1,4,...] [--duration S] [--all-views]
# Installs its peers (PyPI uwsgi — built from source —, gunicorn, aiohttp,
# and for row 17 Flask and Django, pinned) into bench/.venv and Debian's wrk
# and nginx (row 17's uwsgi_pass); builds podmaster in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
[ -x /usr/sbin/nginx ] || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }
[ -x bench/.venv/bin/python3 ] || python3 -m venv bench/.venv
# Django 5.2 is the newest series that runs on Python 3.11. pip does nothing
# (and asks no index) when all of these are installed already.
bench/.venv/bin/pip install -q uwsgi gunicorn aiohttp flask==3.1.3 django==5.2.19
cargo build --release -q
exec python3 bench/bench.py "$@"
