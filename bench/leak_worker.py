"""Bench row 15's podmaster worker: HTTP on uwsgi.sockets; every request
keeps 20 MB more (written, so resident) for the worker's life."""
import asyncio
import os
import signal
import socket

import uwsgi

LEAKED = []


async def handle(reader, writer):
    try:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        LEAKED.append(b"x" * (20 << 20))
        body = f"pid {os.getpid()} holds {20 * len(LEAKED)} MB".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    finally:
        writer.close()


async def main():
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    servers = [await asyncio.start_server(handle, sock=socket.socket(fileno=fd)) for fd in uwsgi.sockets]
    loop.add_signal_handler(signal.SIGHUP, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    uwsgi.accepting()
    await stop
    for s in servers:
        s.close()
        await s.wait_closed()


asyncio.run(main())
