"""The gateway's memory while big requests wait: RSS of a gateway process before and after N queued bodies.

Issue 16 measured 41 MiB -> 1.2 GiB for 3 queued 16 MiB bodies of ``[{},{},...]`` (the parsed JSON
document was kept while the request waited). This starts a gateway process (``modelctl gateway``'s
``serve``, over a fixed table) whose one replica slot is held by a stream, queues N such bodies,
and prints its RSS (and high-water mark) before, while they wait, and after.

    python bench/gateway_queued_rss.py [--bodies 3] [--mib 16]

Run it from another checkout's bench/ to measure that checkout's gateway (it imports the
``controller`` package next to this folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import GatewaySettings, StaticTable, create_app


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def replica(release: asyncio.Event) -> web.AppRunner:
    """A replica that holds every stream until ``release``, and answers other requests at once."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream": true' not in body[:200]:
            return web.json_response({"choices": [{"message": {"content": "ok"}}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": []}\n\n')
        await release.wait()
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 18931).start()
    return runner


def serve_gateway() -> None:
    """The gateway process: one model, one replica taking one request at a time."""
    table = EndpointTable(
        version=1,
        models=(
            ModelEndpoints(name="m", created=1, replicas=(Replica("m-0", "http://127.0.0.1:18931", 1),)),
        ),
    )
    settings = GatewaySettings(tune_gc=False, queue_timeout_s=120, max_body_bytes=64 * 1024 * 1024)

    async def run() -> None:
        runner = web.AppRunner(create_app(StaticTable(table), settings), handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 18930).start()
        await asyncio.Event().wait()

    asyncio.run(run())


async def measure(bodies: int, mib: int, pid: int) -> None:
    release = asyncio.Event()
    upstream = await replica(release)
    url = "http://127.0.0.1:18930/v1/chat/completions"
    body = json.dumps({"model": "m", "messages": [], "x": [{}] * (mib * 1024 * 1024 // 4)}).encode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for _ in range(100):  # the gateway process is up
            try:
                async with session.get("http://127.0.0.1:18930/healthz"):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        before = rss_mib(pid)
        held = await session.post(url, json={"model": "m", "messages": [], "stream": True})
        waiting = [asyncio.ensure_future(session.post(url, data=body)) for _ in range(bodies)]
        await asyncio.sleep(3 + bodies * mib / 8)  # sent, parsed, queued
        during = rss_mib(pid)
        release.set()
        statuses = [(await w).status for w in waiting]
        held.close()
    print(f"{bodies} queued bodies of {len(body) / 2**20:.1f} MiB ([{{}},{{}},...]), answered {statuses}")
    print(f"gateway RSS before: {before[0]:7.1f} MiB")
    print(f"gateway RSS queued: {during[0]:7.1f} MiB   (high-water {during[1]:.1f} MiB)")
    await upstream.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bodies", type=int, default=3)
    parser.add_argument("--mib", type=int, default=16)
    args = parser.parse_args()
    gateway = multiprocessing.get_context("spawn").Process(target=serve_gateway, daemon=True)
    gateway.start()
    assert gateway.pid is not None
    try:
        time.sleep(1)
        asyncio.run(measure(args.bodies, args.mib, gateway.pid))
    finally:
        gateway.terminate()
        gateway.join()
    print(f"(measured on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
