"""A small FastAPI app (ASGI), served by uvicorn inside podmaster's workers
through python-worker-override (see worker.py).

  GET /            -> "Hello, World!" (text/plain)
  GET /hello/NAME  -> "Hello, NAME!"
  GET /api/items   -> a catalogue page as JSON, about 2 KB
  GET /slow?s=N    -> answers after N seconds (at most 10: to watch a drain)

The lifespan's startup builds the catalogue, as a real app loads its caches
or models; WARMUP_SECONDS (default 0) makes it take that much longer. The
worker tells podmaster it accepts only after this startup is complete.
"""
import asyncio
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

catalogue = {}


@asynccontextmanager
async def lifespan(app):
    await asyncio.sleep(float(os.environ.get("WARMUP_SECONDS", "0")))
    catalogue["items"] = [
        {
            "id": i,
            "sku": f"SKU-{i:05d}",
            "name": f"Item number {i}",
            "price_cents": 199 + 37 * i,
            "in_stock": i % 3 != 0,
            "tags": ["example", "fastapi", f"group-{i % 4}"],
        }
        for i in range(1, 17)
    ]
    yield
    catalogue.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/", response_class=PlainTextResponse)
async def index():
    return "Hello, World!"


@app.get("/hello/{name}", response_class=PlainTextResponse)
async def hello(name: str):
    return f"Hello, {name}!"


@app.get("/api/items")
async def items():
    page = catalogue["items"]
    return {"page": 1, "per_page": len(page), "total": len(page), "items": page}


@app.get("/slow", response_class=PlainTextResponse)
async def slow(s: float = 1.0):
    seconds = min(s, 10.0)
    await asyncio.sleep(seconds)
    return f"slept {seconds:g}"
