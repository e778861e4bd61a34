"""Worker-override script for the preforking tests: writes what the worker
sees of its hand-off to $REPORT_DIR/<worker id>.json, then accepts and
answers every connection on its first socket with one line
"v<VERSION> pid <PID>", until SIGHUP/SIGTERM (exit 0)."""

import ctypes
import json
import os
import random
import signal
import socket
import sys

import uwsgi

import sharedmod  # imported by the zygote already when it is a shared-import


def sigblk():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return line.split()[1]
    return "?"


def ids(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return [int(x) for x in line.split()[1:]]
    return []


libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
c_listen_pid = libc.getenv(b"LISTEN_PID")
with open("/proc/self/cmdline", "rb") as f:
    cmdline = f.read().split(b"\0")[0].decode()
report = {
    "id": uwsgi.worker_id(),
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "pgid": os.getpgid(0),
    "sigblk": sigblk(),
    "listen_pid_os": os.environ.get("LISTEN_PID"),
    "listen_pid_c": c_listen_pid.decode() if c_listen_pid else None,
    "listen_fds": os.environ.get("LISTEN_FDS"),
    "numproc": uwsgi.numproc,
    "version": sharedmod.VERSION,
    "imported_in": sharedmod.IMPORTED_IN,
    "at_fork_child": sharedmod.AT_FORK_CHILD,
    "random": random.random(),
    "uid": ids("Uid"),
    "gid": ids("Gid"),
    "cmdline": cmdline,
    "sigint": str(signal.getsignal(signal.SIGINT)),
    "sigpipe": str(signal.getsignal(signal.SIGPIPE)),
    "threads": len(os.listdir("/proc/self/task")),
}
# The fds, listed last (the report file itself is not open yet).
report["fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
path = os.path.join(os.environ["REPORT_DIR"], f"{uwsgi.worker_id()}.json")
with open(path + ".tmp", "w") as f:
    json.dump(report, f)
os.replace(path + ".tmp", path)

stop = False


def on_stop(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGHUP, on_stop)
signal.signal(signal.SIGTERM, on_stop)
listener = socket.socket(fileno=uwsgi.sockets[0])
listener.settimeout(0.2)
uwsgi.accepting()
while not stop:
    try:
        conn, _ = listener.accept()
    except (socket.timeout, InterruptedError):
        continue
    with conn:
        conn.sendall(f"v{sharedmod.VERSION} pid {os.getpid()}\n".encode())
sys.exit(0)
