"""The aiohttp example's handlers as a plain aiohttp app, for gunicorn's
aiohttp worker (gunicorn has no worker-override: it imports an app)."""
import asyncio

from aiohttp import web


async def slow(request):
    seconds = min(float(request.match_info["seconds"]), 60.0)
    await asyncio.sleep(seconds)
    return web.Response(text=f"slept {seconds:g}")


async def handle(request):
    return web.Response(text="Hello, " + request.match_info.get("name", "Anonymous"))


app = web.Application()
app.router.add_get("/slow/{seconds}", slow)
app.router.add_get("/{name}", handle)
