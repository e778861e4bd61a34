"""uWSGI's aiohttp worker-override example, for current aiohttp, with a drain
done right.

  GET /{name}  -> "Hello, {name}"
  GET /echo    -> websocket echo ("Hello, {text}" for text, bytes as-is)
  GET /slow/S  -> answers after S seconds

Each request is logged with uwsgi.log() and counted in the `requests`
metric; open websockets are the `websockets` gauge (see podmaster.ini).

Stopping:
  SIGHUP -> graceful: stop accepting, answer kept-alive connections' next
            request with "Connection: close" (for up to 2 s), let in-flight
            requests finish, close
            open websockets politely (1001 "going away") and give clients
            WS_CLOSE_TIMEOUT to answer, then exit 0. Bounded by DRAIN_TIMEOUT.
  SIGINT -> exit at once.
"""
import asyncio
import signal
import socket
import sys

from aiohttp import WSCloseCode, WSMsgType, web

import uwsgi

DRAIN_TIMEOUT = 20.0  # podmaster's worker-reload-mercy is the hard limit above
WS_CLOSE_TIMEOUT = 5.0
# Kept-alive connections get this long to send one more request, which is
# answered with "Connection: close". Closing them at once races with a
# client that is sending its next request right then: it sees a reset.
KEEPALIVE_GRACE = 2.0

websockets = set()
draining = False


@web.middleware
async def close_when_draining(request, handler):
    resp = await handler(request)
    if draining:
        resp.force_close()  # "Connection: close": the client reconnects elsewhere
    return resp



async def slow(request):
    """GET /slow/{seconds}: answers after a while (to watch a drain finish it)."""
    seconds = min(float(request.match_info["seconds"]), 60.0)
    await asyncio.sleep(seconds)
    uwsgi.metric_inc("requests")
    return web.Response(text=f"slept {seconds:g}")


async def handle(request):
    name = request.match_info.get("name", "Anonymous")
    uwsgi.metric_inc("requests")
    uwsgi.log(f"{request.method} {request.path} -> 200")
    return web.Response(text=f"Hello, {name}", headers={"X-Worker": str(uwsgi.worker_id())})


async def wshandler(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    websockets.add(ws)
    uwsgi.metric_inc("requests")
    uwsgi.metric_inc("websockets")
    uwsgi.log(f"websocket opened from {request.remote}")
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(f"Hello, {msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    finally:
        websockets.discard(ws)
        uwsgi.metric_dec("websockets")
    return ws


def stop_accepting(site):
    """Stops accepting new connections without closing the asyncio Server:
    on Python 3.11 a connection accepted in the same loop step as
    Server.close() is reset (an assertion in asyncio's Server._attach)."""
    loop = asyncio.get_running_loop()
    for sock in site._server.sockets:  # aiohttp keeps the asyncio Server here
        loop.remove_reader(sock.fileno())


async def main():
    app = web.Application(middlewares=[close_when_draining])
    app.router.add_get("/echo", wshandler)
    app.router.add_get("/slow/{seconds}", slow)

    app.router.add_get("/{name}", handle)
    app.router.add_get("/", handle)
    # shutdown_timeout bounds how long cleanup() waits for in-flight requests.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=DRAIN_TIMEOUT)
    await runner.setup()
    sites = []
    for fd in uwsgi.sockets:
        site = web.SockSite(runner, socket.socket(fileno=fd))
        await site.start()
        sites.append(site)

    loop = asyncio.get_running_loop()
    stopping = loop.create_future()
    loop.add_signal_handler(signal.SIGHUP, lambda: stopping.done() or stopping.set_result(None))
    loop.add_signal_handler(signal.SIGINT, lambda: sys.exit(1))
    uwsgi.accepting()
    uwsgi.log(f"aiohttp server started on podmaster {uwsgi.version}")

    await stopping
    global draining
    draining = True
    for site in sites:
        stop_accepting(site)
    await asyncio.sleep(0)  # connections accepted this step get their handlers
    # Let kept-alive clients send their next request (answered with close).
    deadline = loop.time() + KEEPALIVE_GRACE
    while runner.server.connections and loop.time() < deadline:
        if len(runner.server.connections) <= len(websockets):
            break
        await asyncio.sleep(0.05)

    # Websockets never end by themselves: ask clients to go away, briefly.
    closing = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"server restarting") for ws in list(websockets)]
    if closing:
        await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=WS_CLOSE_TIMEOUT)
    # Finishes in-flight requests (bounded by shutdown_timeout), then exits.
    await runner.cleanup()
    uwsgi.log(f"worker {uwsgi.worker_id()} drained")


asyncio.run(main())
