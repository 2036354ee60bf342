"""A bare aiohttp reverse proxy: the floor the gateway's overhead is measured against.

No routing, balancing, limits, auth or metrics: read the body, POST it to the one upstream over a
keep-alive pool, relay status, headers and each chunk as it arrives. Run by bench/gateway_overhead.py:
``python bench/bare_proxy.py PORT UPSTREAM_URL``. Only for the bench: never imported by modelctl.
On asyncio's loop, as a minimal aiohttp proxy is written; ``BARE_LOOP=uvloop`` runs it on uvloop,
the gateway's loop, to tell how much of a difference is the loop's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server"}


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    state: dict[str, aiohttp.ClientSession] = {}

    async def session_ctx(_: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            state["s"] = session
            yield

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with state["s"].post(upstream + request.raw_path, data=body, headers=headers) as up:
            resp = web.StreamResponse(status=up.status)
            resp.headers.update({k: v for k, v in up.headers.items() if k.lower() not in HOP})
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{path:.*}", forward)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    loop = None
    if os.environ.get("BARE_LOOP") == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(make_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
