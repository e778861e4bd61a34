#!/usr/bin/env bash
# uwsgi.metric_inc cost from Python, measured inside a real podmaster worker.
# usage: bench/metric_inc.sh [path/to/podmaster]   (default target/release/podmaster)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/podmaster}
OUT=$(mktemp)
BENCH_OUT=$OUT "$BIN" --socket 127.0.0.1:0 --processes 1 --metric name=requests \
  --python-worker-override bench/metric_inc_worker.py 2>/dev/null &
PID=$!
for _ in $(seq 1 600); do [ -s "$OUT" ] && break; sleep 0.1; done
kill -TERM $PID; wait $PID || true
cat "$OUT"; rm -f "$OUT"
