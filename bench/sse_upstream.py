"""A stand-in streaming replica for the bench: N chat.completion.chunk events, D ms apart, then usage.

Each event carries its index, so the client can check that every chunk arrived, in order. Run by
bench/gateway_overhead.py: ``python bench/sse_upstream.py PORT CHUNKS DELAY_MS``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web


def make_app(chunks: int, delay_s: float) -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(chunks):
            event = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": str(i)}}],
            }
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await asyncio.sleep(delay_s)
        usage = {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": chunks}}
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    return app


def main() -> None:
    port, chunks, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    web.run_app(make_app(chunks, delay_ms / 1000), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
