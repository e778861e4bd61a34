"""A socket-activation launcher, like systemd-socket-activate: binds TCP
listeners on 127.0.0.1 at fds 3, 4, ..., sets LISTEN_FDS, LISTEN_PID (its
own pid, kept by exec) and LISTEN_FDNAMES, then execs the command.

usage: activate.py [--names a:b] [--pid N] [--fds N] [--file-at-3] PORT... -- CMD ARGS
Prints nothing; the ports are given by the caller.
"""
import os
import socket
import sys

args = sys.argv[1:]
sep = args.index("--")
opts, cmd = args[:sep], args[sep + 1:]
names = pid = fds = None
file_at_3 = False
ports = []
i = 0
while i < len(opts):
    if opts[i] == "--names":
        names = opts[i + 1]; i += 2
    elif opts[i] == "--pid":
        pid = opts[i + 1]; i += 2
    elif opts[i] == "--fds":
        fds = opts[i + 1]; i += 2
    elif opts[i] == "--file-at-3":
        file_at_3 = True; i += 1
    else:
        ports.append(int(opts[i])); i += 1

import fcntl

socks = []
for port in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    # Park it above the target range first: the socket may itself sit at 3.
    socks.append((s, fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100)))
for n, (s, high) in enumerate(socks):
    os.dup2(high, 3 + n)  # dup2 makes the target inheritable
    os.close(high)

if file_at_3:
    f = os.open("/etc/hostname", os.O_RDONLY)
    if f != 3:
        os.dup2(f, 3)
    os.set_inheritable(3, True)

os.environ["LISTEN_FDS"] = fds if fds is not None else str(len(ports) + (1 if file_at_3 else 0))
os.environ["LISTEN_PID"] = pid if pid is not None else str(os.getpid())
if names is not None:
    os.environ["LISTEN_FDNAMES"] = names
os.execvp(cmd[0], cmd)
