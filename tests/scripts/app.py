"""Worker-override script for podmaster's integration tests.

Behaviour is switched by environment variables (workers inherit the
master's environment):
  APP_GATE=PATH        call uwsgi.accepting() only once PATH exists
  APP_IGNORE_HUP=1     ignore SIGHUP (a straggler the master must SIGKILL)
  APP_RAISE_AT_IMPORT=1  raise before ever accepting
  APP_EXIT_IF=PATH     exit 3 at once (before accepting) while PATH exists
  APP_SIGNAL_FILE=PATH append "PID SIGNAME" for each SIGWINCH/SIGUSR2 received

Routes:
  GET /NAME            "Hello, NAME" (X-Worker, X-Pid headers)
  GET /slow/S          sleep S seconds, then answer
  GET /orphans/N       start N double-forked orphans sleeping 0.3 s; body: their pids
  GET /crash           answer, then raise from the main flow (after accepting)
  GET /env/NAME        the worker's environment variable NAME ("<unset>" if it is not)
  GET /leak/N          keep N more MB (written, so resident) for the worker's life;
                       body: the MB this worker holds
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
if os.environ.get("APP_EXIT_IF") and os.path.exists(os.environ["APP_EXIT_IF"]):
    sys.exit(3)

crash = asyncio.Event()
servers = []
# Connections are counted from protocol creation (the loop step after
# accept) to the end of their handler; a graceful stop waits for zero.
open_connections = 0
all_closed = asyncio.Event()
all_closed.set()


def stop_accepting():
    """Stops accepting without Server.close(): on Python 3.11 a connection
    accepted in the same loop step as close() trips an assertion in
    asyncio's Server._attach and is reset. Removing the accept reader is
    enough; the process exits once its connections are done."""
    loop = asyncio.get_running_loop()
    for srv in servers:
        for sock in srv.sockets:
            loop.remove_reader(sock.fileno())


def make_protocol():
    global open_connections
    open_connections += 1
    all_closed.clear()
    return asyncio.StreamReaderProtocol(asyncio.StreamReader(), handle)


LEAKED = []


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
    global open_connections
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
        elif path.startswith("/env/"):
            body = os.environ.get(path[5:], "<unset>")
        elif path.startswith("/leak/"):
            LEAKED.append(b"x" * (int(path[6:]) << 20))
            body = f"holding {sum(len(b) for b in LEAKED) >> 20} MB"
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
        writer.close()
        open_connections -= 1
        if open_connections == 0:
            all_closed.set()


async def main():
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    async def graceful():
        stop_accepting()
        await asyncio.sleep(0)  # connections accepted this step reach make_protocol
        await asyncio.wait_for(all_closed.wait(), timeout=30)
        stop.set_result(0)

    if os.environ.get("APP_SIGNAL_FILE"):
        # Records signals the master forwards (SIGWINCH, SIGUSR2).
        def record(sig):
            with open(os.environ["APP_SIGNAL_FILE"], "a") as f:
                f.write(f"{os.getpid()} {signal.Signals(sig).name}\n")
        for sig in (signal.SIGWINCH, signal.SIGUSR2):
            loop.add_signal_handler(sig, record, sig)
    if os.environ.get("APP_IGNORE_HUP"):

        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(graceful()))
    for fd in uwsgi.sockets:
        servers.append(await loop.create_server(make_protocol, sock=socket.socket(fileno=fd)))
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
