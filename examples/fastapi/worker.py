"""podmaster (or uWSGI) worker override that serves an ASGI app with uvicorn.

The master binds the sockets and forks the workers; each worker runs this
script as __main__ (`python-worker-override = worker.py`):

  1. uvicorn serves every inherited listening socket (`uwsgi.sockets`, fds);
  2. once uvicorn has run the app's lifespan startup and listens on them,
     `uwsgi.accepting()` tells the master this worker takes requests
     (readiness, chain reloads and scale-ups wait for it);
  3. SIGHUP (podmaster's graceful stop: on SIGTERM to the master, a chain
     reload or a scale-down) and SIGTERM drain: stop accepting (the other
     workers keep the socket), let requests in flight finish (kept-alive
     connections are closed after their response), run the lifespan
     shutdown, exit 0. SIGINT (podmaster's fast stop) exits at once.
"""
import asyncio
import contextlib
import signal
import socket

import uvicorn

import uwsgi
from main import app

# A drain longer than this cancels what is left; podmaster's
# worker-reload-mercy (25 s by default) is the hard limit above it.
DRAIN_TIMEOUT = 20


class Server(uvicorn.Server):
    """uvicorn's server with podmaster's side of the contract."""

    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn's own handlers know SIGINT and SIGTERM only, and re-raise
        # them once it has stopped (the worker would then die of SIGTERM).
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            loop.add_signal_handler(sig, self.drain)
        loop.add_signal_handler(signal.SIGINT, self.stop_now)
        yield

    def drain(self):
        self.should_exit = True

    def stop_now(self):
        self.should_exit = self.force_exit = True

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            uwsgi.accepting()
            uwsgi.log(f"uvicorn {uvicorn.__version__} serving {len(sockets)} socket(s)")

    async def shutdown(self, sockets=None):
        # Stop taking connections first and let those accepted in this loop
        # step attach: on Python 3.11, asyncio resets a connection accepted
        # in the same step as Server.close() (an assertion in Server._attach).
        loop = asyncio.get_running_loop()
        for server in self.servers:
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        await asyncio.sleep(0)
        await super().shutdown(sockets=sockets)
        uwsgi.log(f"worker {uwsgi.worker_id()} drained")


def main():
    config = uvicorn.Config(
        app,
        lifespan="on",
        timeout_graceful_shutdown=DRAIN_TIMEOUT,
        # listen() again on the shared socket: keep podmaster's backlog.
        backlog=int(uwsgi.opt.get("listen", 1024)),
        access_log=False,
    )
    sockets = [socket.socket(fileno=fd) for fd in uwsgi.sockets]
    asyncio.run(Server(config).serve(sockets=sockets))


main()
