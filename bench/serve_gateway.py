"""The modelctl gateway over a fixed table, all features on, for the bench.

Two models: ``json`` (prefix affinity) on the nginx upstream and ``sse`` on the streaming upstream;
API keys on (``bench-key``), metrics on (always), handler cancellation on, GC tuned once serving, as
``run_gateway`` serves; on uvloop when installed (BENCH_LOOP=asyncio for asyncio's loop).
``python bench/serve_gateway.py PORT JSON_URL SSE_URL``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import GatewaySettings, StaticTable, create_app
from controller.gateway.serving.process import loop_factory, tune_gc

KEY = "bench-key"


def table(json_url: str, sse_url: str) -> EndpointTable:
    affinity = "prefix-affinity"
    return EndpointTable(
        version=1,
        models=(
            ModelEndpoints("json", replicas=(Replica("json-0", json_url, 4096),), balancing=affinity),
            ModelEndpoints("sse", replicas=(Replica("sse-0", sse_url, 4096),), balancing=affinity),
        ),
    )


async def serve(port: int, json_url: str, sse_url: str) -> None:
    settings = GatewaySettings(host="127.0.0.1", port=port, api_keys=(KEY,))
    runner = web.AppRunner(
        create_app(StaticTable(table(json_url, sse_url)), settings),
        handler_cancellation=True,
        access_log=None,
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    tune_gc()  # as controller.gateway.serving.server.serve does once serving
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    port, json_url, sse_url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    factory = None if os.environ.get("BENCH_LOOP") == "asyncio" else loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(port, json_url, sse_url))


if __name__ == "__main__":
    main()
