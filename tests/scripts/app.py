"""Worker-override script for podmaster's integration tests.

Behaviour is switched by environment variables (workers inherit the
master's environment):
  APP_GATE=PATH        call uwsgi.accepting() only once PATH exists
  APP_IGNORE_HUP=1     ignore SIGHUP (a straggler the master must SIGKILL)
  APP_RAISE_AT_IMPORT=1  raise before ever accepting
Routes:
  GET /NAME            "Hello, NAME" (X-Worker, X-Pid headers)
  GET /slow/S          sleep S seconds, then answer
  GET /orphans/N       start N double-forked orphans sleeping 0.3 s; body: their pids
  GET /crash           answer, then raise from the main flow (after accepting)
"""

import asyncio
import os
import signal
import socket
import sys
import time

import uwsgi

if os.environ.get("APP_RAISE_AT_IMPORT"):
    raise RuntimeError("boom at import (APP_RAISE_AT_IMPORT)")

crash = asyncio.Event()
servers = []
in_flight = set()


def spawn_orphan():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        grandchild = os.fork()
        if grandchild == 0:
            os.close(w)
            time.sleep(0.3)
            os._exit(0)
        os.write(w, str(grandchild).encode())
        os._exit(0)
    os.close(w)
    grandchild = int(os.read(r, 32))
    os.close(r)
    os.waitpid(pid, 0)  # the middle process is ours to reap
    return grandchild


async def handle(reader, writer):
    task = asyncio.current_task()
    in_flight.add(task)
    try:
        line = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        parts = line.decode("latin-1").split()
        path = parts[1] if len(parts) > 1 else "/"
        if path.startswith("/slow/"):
            s = float(path[6:])
            await asyncio.sleep(s)
            body = f"slept {s:g}"
        elif path.startswith("/orphans/"):
            body = " ".join(str(spawn_orphan()) for _ in range(int(path[9:])))
        elif path == "/crash":
            body = "crashing"
            crash.set()
        else:
            body = "Hello, " + (path.lstrip("/") or "Anonymous")
        data = body.encode()
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\nX-Worker: {uwsgi.worker_id()}\r\n"
            f"X-Pid: {os.getpid()}\r\nConnection: close\r\n\r\n".encode() + data
        )
        await writer.drain()
    finally:
        in_flight.discard(task)
        writer.close()


async def main():
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    async def graceful():
        for s in servers:
            s.close()
        if in_flight:
            await asyncio.wait(list(in_flight), timeout=30)
        stop.set_result(0)

    if os.environ.get("APP_IGNORE_HUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(graceful()))
    for fd in uwsgi.sockets:
        servers.append(await asyncio.start_server(handle, sock=socket.socket(fileno=fd)))
    gate = os.environ.get("APP_GATE")
    while gate and not os.path.exists(gate):
        await asyncio.sleep(0.01)
    uwsgi.accepting()
    crash_wait = loop.create_task(crash.wait())
    await asyncio.wait([stop, crash_wait], return_when=asyncio.FIRST_COMPLETED)
    if crash.is_set():
        await asyncio.sleep(0.05)  # let the /crash response go out
        raise RuntimeError("crash requested after accepting")
    return stop.result()


sys.exit(asyncio.run(main()))
