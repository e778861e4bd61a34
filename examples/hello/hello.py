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

servers = []
in_flight = set()
idle = set()  # keep-alive connections waiting for a further request
stopping = asyncio.Event()


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
        while not stopping.is_set():
            # A fresh connection counts as in flight: its client is about to
            # send a request. Only a kept-alive one that already got an
            # answer may be closed while idle during a drain.
            (idle if served else in_flight).add(task)
            try:
                request_line = await reader.readline()
            finally:
                idle.discard(task)
            if not request_line:
                return
            in_flight.add(task)
            served += 1
            try:
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
            finally:
                in_flight.discard(task)
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def graceful_stop():
    stopping.set()
    for srv in servers:
        srv.close()  # stop accepting; the master's other workers keep serving
    for task in list(idle):
        task.cancel()  # idle keep-alive connections: nothing in flight
    if in_flight:
        await asyncio.wait(list(in_flight), timeout=DRAIN_TIMEOUT)
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
        servers.append(await asyncio.start_server(handle, sock=sock))
    uwsgi.accepting()
    uwsgi.log(f"asyncio server started on podmaster {uwsgi.version}, sockets {uwsgi.sockets}")
    return await done


sys.exit(asyncio.run(main()))
