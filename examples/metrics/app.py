"""Counts requests, bytes and in-flight work with uwsgi.metric_*: each call
is one atomic operation on shared memory (no syscall, no lock)."""
import asyncio
import signal
import socket

import uwsgi


async def handle(reader, writer):
    start = uwsgi.micros()
    uwsgi.metric_inc("inflight")
    try:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        body = f"worker {uwsgi.worker_id()}: {uwsgi.metric_get('requests')} requests so far\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        uwsgi.metric_inc("requests")
        uwsgi.metric_inc("bytes_sent", len(body))
    finally:
        uwsgi.metric_dec("inflight")
        uwsgi.metric_set_max("slowest_us", uwsgi.micros() - start)
        writer.close()


async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGHUP, lambda: done.done() or done.set_result(0))
    for fd in uwsgi.sockets:
        await asyncio.start_server(handle, sock=socket.socket(fileno=fd))
    uwsgi.accepting()
    await done


asyncio.run(main())
