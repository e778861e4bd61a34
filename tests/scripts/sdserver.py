"""A socket-activation-aware HTTP server that knows nothing of podmaster:
it serves the fds handed over by the systemd protocol (LISTEN_FDS,
LISTEN_PID, LISTEN_FDNAMES) and reports readiness with sd_notify READY=1."""
import os, signal, socket, socketserver, sys, threading

greeting = sys.argv[sys.argv.index("--greeting") + 1] if "--greeting" in sys.argv else "Hello"
assert int(os.environ["LISTEN_PID"]) == os.getpid(), "LISTEN_PID must be this process"
n = int(os.environ["LISTEN_FDS"])
names = os.environ.get("LISTEN_FDNAMES", "").split(":")
assert len(names) == n, names


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = f"{greeting} from {os.getpid()} via {self.server.name}".encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


servers = []
for i in range(n):
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = socket.socket(fileno=3 + i)
    # Every worker shares this listening socket: when another worker wins
    # a connection, a blocking accept() here would hang serve_forever (and
    # its shutdown). Non-blocking, a lost race is just an OSError it skips.
    srv.socket.setblocking(False)

    srv.name = names[i]
    servers.append(srv)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

# The stop handler is in place before readiness is announced; the wait is
# a timed loop so the handler always gets to run on the main thread.
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
addr = os.environ["NOTIFY_SOCKET"]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    s.sendto(b"READY=1", "\0" + addr[1:] if addr.startswith("@") else addr)
while not done.wait(0.2):
    pass

for srv in servers:
    srv.shutdown()
