"""python-worker-override script for the heavy app (podmaster and uWSGI).

`import heavyapp` is a no-op when the master/zygote already imported it
(`shared-import = heavyapp`); under `lazy-apps = true` each worker builds the
registry itself. Serves heavyapp.route() (GET / and GET /gc) as HTTP/1.1
with keep-alive on every fd in uwsgi.sockets, from one thread with a
selectors loop: small, no dependency, one request at a time per worker.

Signals:
  SIGHUP, SIGTERM -> graceful: stop accepting (the other workers keep the
                     shared socket), answer kept-alive connections' next
                     request with "Connection: close" for up to
                     KEEPALIVE_GRACE s, then close idle ones, wait for the
                     rest (DRAIN_TIMEOUT at most), exit 0
  SIGINT          -> exit at once
"""
import os
import selectors
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import heavyapp  # noqa: E402

import uwsgi  # noqa: E402

KEEPALIVE_GRACE = 2.0
DRAIN_TIMEOUT = 20.0
MAX_HEAD = 65536

stopping = False


def on_stop(signum, frame):
    global stopping
    stopping = True


class Conn:
    __slots__ = ("sock", "buf", "served")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.served = 0


def send_all(sock, data):
    sock.settimeout(5.0)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def serve(sel, c):
    """Answers every complete request in c.buf; returns False to close."""
    while b"\r\n\r\n" in c.buf:
        head, c.buf = c.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        path = parts[1] if len(parts) >= 2 else "/"
        version = parts[2] if len(parts) >= 3 else "HTTP/1.0"
        conn_hdr = ""
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "connection":
                conn_hdr = v.strip().lower()
        close = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive") or stopping
        status, ctype, body = heavyapp.route(path, worker=uwsgi.worker_id())
        c.served += 1
        send_all(c.sock, (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"X-Worker: {uwsgi.worker_id()}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
        ).encode() + body)
        if close:
            return False
    return len(c.buf) <= MAX_HEAD


def main():
    sel = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGHUP, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, lambda *_: os._exit(1))
    sel.register(wake_r, selectors.EVENT_READ, "wake")

    listeners = []
    for fd in uwsgi.sockets:
        lsock = socket.socket(fileno=fd)
        lsock.setblocking(False)
        sel.register(lsock, selectors.EVENT_READ, "listen")
        listeners.append(lsock)
    conns = {}

    def close(c):
        sel.unregister(c.sock)
        conns.pop(c.sock, None)
        c.sock.close()

    uwsgi.accepting()
    grace_end = drain_end = None
    while True:
        if stopping and grace_end is None:
            for lsock in listeners:
                sel.unregister(lsock)
            grace_end = time.monotonic() + KEEPALIVE_GRACE
            drain_end = time.monotonic() + DRAIN_TIMEOUT
        timeout = None
        if grace_end is not None:
            now = time.monotonic()
            if now >= grace_end:
                # Still idle after the grace, having been answered: nothing in flight.
                for c in [c for c in conns.values() if c.served and not c.buf]:
                    close(c)
            if not conns or now >= drain_end:
                break
            timeout = 0.05
        for key, _ in sel.select(timeout):
            if key.data == "wake":
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            elif key.data == "listen":
                for _ in range(16):
                    try:
                        sock, _addr = key.fileobj.accept()
                    except (BlockingIOError, InterruptedError):
                        break  # another worker took it
                    except OSError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c = Conn(sock)
                    conns[sock] = c
                    sel.register(sock, selectors.EVENT_READ, c)
            else:
                c = key.data
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    close(c)
                    continue
                c.buf += data
                try:
                    keep = serve(sel, c)
                except OSError:
                    keep = False
                if not keep:
                    close(c)
    return 0


sys.exit(main())
