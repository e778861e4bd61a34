"""A uWSGI worker-override script using only the standard library (asyncio).

It serves HTTP/1.1 on every socket in ``uwsgi.sockets``:
  GET /NAME         -> "Hello, NAME"
  GET /slow/SECONDS -> waits, then "slept SECONDS" (to watch a drain finish it)
Every response carries ``X-Worker: <worker id>``.

Signals, as podmaster (and uWSGI) use them:
  SIGHUP -> graceful stop: stop accepting, finish in-flight requests, exit 0
  SIGINT -> exit at once
"""

import asyncio
import signal
import socket
import sys

import uwsgi

# A graceful stop waits this long for in-flight requests, then gives up.
# podmaster's worker-reload-mercy is the hard limit above it.
DRAIN_TIMEOUT = 20.0
# Kept-alive connections get this long to send one more request (answered
# with "Connection: close") before an idle one is closed: closing at once
# races with a client sending its next request right then.
KEEPALIVE_GRACE = 2.0

servers = []
idle = set()  # handler tasks of kept-alive connections between requests
stopping = asyncio.Event()

# Every accepted connection is counted from the moment asyncio creates its
# protocol (the loop step right after accept()) until its handler ends; a
# drain waits for this count, not for handler tasks, which start later.
open_connections = 0
all_closed = asyncio.Event()
all_closed.set()


def connection_opened():
    global open_connections
    open_connections += 1
    all_closed.clear()


def connection_closed():
    global open_connections
    open_connections -= 1
    if open_connections == 0:
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
    connection_opened()
    return asyncio.StreamReaderProtocol(asyncio.StreamReader(), handle)


async def respond(writer, status, body, close):
    payload = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"X-Worker: {uwsgi.worker_id()}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    await writer.drain()


async def handle(reader, writer):
    task = asyncio.current_task()
    served = 0
    try:
        # A fresh connection's client is about to send a request: it is
        # served even during a drain. Only a kept-alive connection that
        # already got an answer may be closed while idle.
        while served == 0 or not stopping.is_set():
            if served:
                idle.add(task)
            try:
                request_line = await reader.readline()
            finally:
                idle.discard(task)
            if not request_line:
                return
            served += 1
            headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else "/"
            close = headers.get("connection", "").lower() == "close"
            if path.startswith("/slow/"):
                seconds = float(path[len("/slow/"):] or 1)
                await asyncio.sleep(seconds)
                status, body = "200 OK", f"slept {seconds:g}"
            else:
                name = path.lstrip("/") or "Anonymous"
                status, body = "200 OK", f"Hello, {name}"
            # During a drain, answer and then close the connection.
            await respond(writer, status, body, close or stopping.is_set())
            if close:
                return
    except (ConnectionError, ValueError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
        connection_closed()


async def graceful_stop():
    stopping.set()
    stop_accepting()  # the master's other workers keep serving the sockets
    # Let connections accepted in this very loop step reach make_protocol().
    await asyncio.sleep(0)
    try:
        await asyncio.wait_for(all_closed.wait(), timeout=KEEPALIVE_GRACE)
    except asyncio.TimeoutError:
        pass
    for task in list(idle):
        task.cancel()  # still idle after the grace: nothing in flight

    try:
        await asyncio.wait_for(all_closed.wait(), timeout=DRAIN_TIMEOUT)
    except asyncio.TimeoutError:
        uwsgi.log(f"{open_connections} connections still open after {DRAIN_TIMEOUT} s; exiting anyway")
    uwsgi.log(f"worker {uwsgi.worker_id()} drained, exiting")


async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_hup():
        if not done.done():
            loop.create_task(graceful_stop()).add_done_callback(lambda _: done.set_result(0))

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGINT, lambda: sys.exit(1))
    for fd in uwsgi.sockets:
        sock = socket.socket(fileno=fd)
        servers.append(await loop.create_server(make_protocol, sock=sock))
    uwsgi.accepting()
    uwsgi.log(f"asyncio server started on podmaster {uwsgi.version}, sockets {uwsgi.sockets}")
    return await done


sys.exit(asyncio.run(main()))
