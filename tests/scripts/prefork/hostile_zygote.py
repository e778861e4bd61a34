"""A shared-import that talks on the zygote's control socket itself,
claiming a fork happened (pid 1) before the zygote said it was ready."""
import os
import socket

for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    if fd < 3:
        continue
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    if s.type == socket.SOCK_SEQPACKET:
        s.send(b'{"Forked":{"pid":1}}')
    s.detach()
