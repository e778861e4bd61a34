"""Websocket client for the aiohttp example test (runs in the example's venv).
usage: ws_client.py URL MODE   MODE: echo | hold (prints the close code when the server closes)"""
import asyncio
import sys

import aiohttp


async def main(url, mode):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url) as ws:
            await ws.send_str("World")
            print((await ws.receive()).data, flush=True)
            await ws.send_bytes(b"\x00\x01")
            print((await ws.receive()).data.hex(), flush=True)
            if mode == "hold":
                print("holding", flush=True)
                msg = await ws.receive(timeout=30)
                print(f"closed {ws.close_code} {msg.type.name}", flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
