#!/usr/bin/env bash
# Benchmarks podmaster against uWSGI and gunicorn on this machine.
# usage: bench/run.sh [--reps N] [--only 1,4,...]
# Installs its peers (PyPI uwsgi — built from source —, gunicorn, aiohttp)
# into bench/.venv and Debian's wrk; builds podmaster in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
[ -x bench/.venv/bin/uwsgi ] || { python3 -m venv bench/.venv; bench/.venv/bin/pip install -q uwsgi gunicorn aiohttp; }
cargo build --release -q
exec python3 bench/bench.py "$@"
