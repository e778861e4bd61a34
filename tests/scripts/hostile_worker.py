"""A worker-override script where worker 1 attacks the master.

Worker 1 (the attacker) opens every memfd of the master it can reach
through /proc/<master>/fd, tries to truncate, grow, write and map it
writable, scribbles over what it can write, floods the notify socket with
forged (other pids), oversized and garbage datagrams, then calls
accepting() and idles. It writes what each attempt did to $HOSTILE_REPORT
(JSON) and never serves.

Every other worker serves HTTP on the first socket: each answer is
"worker ID draining BOOL", where BOOL is uwsgi.is_draining().
"""

import asyncio
import ctypes
import errno
import json
import mmap
import os
import socket
import struct
import sys
import time

import uwsgi


def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    except Exception as e:  # noqa: BLE001 - the report says what happened
        return type(e).__name__


def attack_memfds(master, report):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for name in os.listdir(f"/proc/{master}/fd"):
        try:
            target = os.readlink(f"/proc/{master}/fd/{name}")
        except OSError:
            continue
        if not target.startswith("/memfd:"):
            continue
        kind = next((k for k in ("board", "metrics", "http") if k in target), target)
        r = report.setdefault(kind, {})
        try:
            fd = os.open(f"/proc/{master}/fd/{name}", os.O_RDWR)
        except OSError as e:
            r["open"] = errno.errorcode.get(e.errno, str(e.errno))
            continue
        r["open"] = "ok"
        size = os.fstat(fd).st_size
        r["truncate_to_0"] = attempt(lambda: os.ftruncate(fd, 0))
        r["truncate_to_8"] = attempt(lambda: os.ftruncate(fd, 8))
        r["grow"] = attempt(lambda: os.ftruncate(fd, size * 2))
        r["fallocate"] = attempt(lambda: os.posix_fallocate(fd, size, 4096))
        # Word 1 of the board is the draining flag.
        r["pwrite_draining"] = attempt(lambda: os.pwrite(fd, struct.pack("q", 1), 8))
        r["mmap_rw"] = attempt(lambda: mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
        # Map read-only, then ask for write access.
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            r["mprotect_rw"] = "mmap_failed"
        else:
            rc = libc.mprotect(addr, size, mmap.PROT_READ | mmap.PROT_WRITE)
            r["mprotect_rw"] = "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
        if r["mmap_rw"] == "ok":
            # Scribble: every word of what we can write becomes garbage.
            m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            pattern = bytes(range(256)) * (size // 256 + 1)
            m[:] = pattern[:size]
            m.close()
            r["scribbled"] = size
        os.close(fd)


def attack_notify(others, master, report):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    s.setblocking(False)
    counts = {"sent": 0, "refused": {}}

    def send(payload, ancillary=()):
        try:
            s.sendmsg([payload], list(ancillary), 0, addr)
            counts["sent"] += 1
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            counts["refused"][name] = counts["refused"].get(name, 0) + 1
            if e.errno == errno.EAGAIN:
                time.sleep(0.001)

    # Forged credentials: other workers' pids, the master's, pid 1.
    for pid in list(others) + [master, 1]:
        creds = struct.pack("iII", pid, os.getuid(), os.getgid())
        for msg in (b"STOPPING=1", b"READY=1", b"STOPPING=1\nREADY=0"):
            send(msg, [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
    # Oversized, garbage and endless floods.
    send(b"READY=1\n" + b"x" * 100_000)
    for i in range(5000):
        send(os.urandom(64) if i % 3 else b"STOPPING=1\n" * 50)
    report["notify"] = counts


async def serve():
    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = f"worker {uwsgi.worker_id()} draining {uwsgi.is_draining()}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except Exception:  # noqa: BLE001 - a test client that went away
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=socket.socket(fileno=uwsgi.sockets[0]))
    uwsgi.accepting()
    async with server:
        await server.serve_forever()


if uwsgi.worker_id() != 1:
    asyncio.run(serve())
    sys.exit(0)

report = {}
master = uwsgi.masterpid()
# Wait until the others run, to forge their pids.
deadline = time.monotonic() + 20
others = []
while time.monotonic() < deadline:
    others = [w["pid"] for w in uwsgi.workers() if w["id"] != 1 and w["pid"] > 0]
    if len(others) >= uwsgi.numproc - 1:
        break
    time.sleep(0.05)
report["others"] = others
attack_memfds(master, report)
attack_notify(others, master, report)
report["is_draining_after"] = uwsgi.is_draining()
with open(os.environ["HOSTILE_REPORT"] + ".tmp", "w") as f:
    json.dump(report, f)
os.rename(os.environ["HOSTILE_REPORT"] + ".tmp", os.environ["HOSTILE_REPORT"])
uwsgi.accepting()
while True:
    time.sleep(3600)
