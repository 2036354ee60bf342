"""The gateway on uvloop, the loop it serves on (``serving.process.loop_factory``; uvloop is a
dependency). uvloop's transports are not subclasses of asyncio's classes, so code that checks a
transport's type works in the asyncio-loop tests and fails every request here: once, the upstream
client asserted ``isinstance(transport, asyncio.Transport)`` and every proxied request was a 502.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web
from gateway_fakes import FakeLlamaServer, table_of

from controller.gateway import GatewaySettings, StaticTable, create_app
from controller.gateway.serving.process import loop_factory

ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def exchange() -> tuple[str, list[tuple[int, str]]]:
    """Start a replica and the gateway on the running loop; ask it whole and streamed, twice
    (the second over a kept-alive upstream connection)."""
    replica = FakeLlamaServer("r", chunk_delay_s=0)
    up_runner, up_url = await serve(replica.app())
    gw_runner, gw_url = await serve(create_app(StaticTable(table_of(("m", (), [up_url]))), GatewaySettings()))
    answers = []
    try:
        async with aiohttp.ClientSession() as session:
            for body in (ASK, {**ASK, "stream": True}, ASK, {**ASK, "stream": True}):
                async with session.post(f"{gw_url}/v1/chat/completions", json=body) as resp:
                    answers.append((resp.status, await resp.text()))
    finally:
        await gw_runner.cleanup()
        await up_runner.cleanup()
    return type(asyncio.get_running_loop()).__module__, answers


def test_the_gateway_proxies_whole_and_streamed_answers_on_uvloop() -> None:
    factory = loop_factory()
    assert factory is not None, "uvloop is a dependency of modelctl: the gateway serves on it"
    with asyncio.Runner(loop_factory=factory) as runner:
        loop_module, answers = runner.run(exchange())
    assert loop_module.startswith("uvloop")
    assert [status for status, _ in answers] == [200, 200, 200, 200], answers
    whole = json.loads(answers[0][1])
    assert whole["choices"][0]["message"]["content"]
    assert answers[1][1].rstrip().endswith("data: [DONE]")
