"""Exercises the uwsgi module inside a real worker and writes what it saw
as JSON to $PROBE_OUT, then serves until stopped (GET / answers)."""
import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time

import uwsgi
import podmaster

out = {}
out["same_module"] = podmaster is uwsgi
out["sockets"] = uwsgi.sockets
out["version"] = uwsgi.version
out["version_info"] = list(uwsgi.version_info)
out["numproc"] = uwsgi.numproc
out["hostname"] = uwsgi.hostname
out["opt"] = uwsgi.opt
out["started_on"] = uwsgi.started_on
out["is_a_reload"] = uwsgi.is_a_reload
out["worker_id"] = uwsgi.worker_id()
out["masterpid"] = uwsgi.masterpid()
out["argv"] = sys.argv
out["executable"] = sys.executable
out["micros"] = uwsgi.micros()
rss, vsz = uwsgi.mem()
out["mem"] = [rss, vsz]
out["setprocname"] = uwsgi.setprocname("pm-probe-worker")
out["is_draining"] = uwsgi.is_draining()

# accepting() returns None correctly: 100 000 calls must not crash (uWSGI's
# leaked a reference to None). Call it from a thread too.
for _ in range(100_000):
    r = uwsgi.accepting()
    assert r is None, r
t = threading.Thread(target=uwsgi.accepting)
t.start(); t.join()
out["refcount_none_ok"] = True

out["metric_inc"] = uwsgi.metric_inc("requests")
out["metric_inc5"] = uwsgi.metric_inc("requests", 5)
out["metric_unknown"] = uwsgi.metric_inc("nope")
out["metric_dec"] = uwsgi.metric_dec("requests")
out["metric_set"] = uwsgi.metric_set("inflight", 7)
out["metric_set_max"] = [uwsgi.metric_set_max("peak", 10), uwsgi.metric_set_max("peak", 3)]
out["metric_set_min"] = uwsgi.metric_set_min("inflight", 2)
out["metric_get"] = [uwsgi.metric_get("requests"), uwsgi.metric_get("peak"), uwsgi.metric_get("inflight"), uwsgi.metric_get("nope")]
errors = []
for bad in [lambda: uwsgi.metric_inc(42), lambda: uwsgi.metric_inc("requests", 2**70), lambda: uwsgi.metric_inc(None)]:
    try:
        bad()
        errors.append("no error")
    except (TypeError, OverflowError) as e:
        errors.append(type(e).__name__)
out["metric_errors"] = errors
uwsgi.log("module probe ready")

# A child that outlives this worker: the master must reap it (no zombie).
pid = os.fork()
if pid == 0:
    if os.fork() == 0:
        time.sleep(0.3)
        os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)

with open(os.environ["PROBE_OUT"] + ".tmp", "w") as f:
    json.dump(out, f)
os.rename(os.environ["PROBE_OUT"] + ".tmp", os.environ["PROBE_OUT"])


async def handle(reader, writer):
    await reader.readline()
    body = json.dumps({"workers": uwsgi.workers(), "draining": uwsgi.is_draining()}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()


async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGHUP, lambda: done.done() or done.set_result(0))
    srv = await asyncio.start_server(handle, sock=socket.socket(fileno=uwsgi.sockets[0]))
    await done


asyncio.run(main())
