"""run_gateway, the entry ``modelctl gateway`` calls: serves, follows the controller, stops on cancel."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gateway_fakes import FakeController, StartUpstream, eventually, running_workers, table_of

from controller.gateway import GatewaySettings, run_gateway


def test_settings_defaults() -> None:
    settings = GatewaySettings()
    assert (settings.host, settings.port, settings.max_tries) == ("0.0.0.0", 8080, 3)
    assert settings.max_body_bytes == 16 * 1024 * 1024


async def test_run_gateway_serves_the_controllers_table_until_cancelled(
    start_upstream: StartUpstream,
    unused_tcp_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = await start_upstream("a")
    controller = TestServer(FakeController(table_of(("m", (), [url]))).app())
    await controller.start_server()
    settings = GatewaySettings(
        host="127.0.0.1", port=unused_tcp_port, controller_url=str(controller.make_url("")), tune_gc=False
    )
    gateway = asyncio.create_task(run_gateway(settings))
    base = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"{base}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            async with asyncio.timeout(10):  # poll with a deadline until the table arrived
                while not await ready():
                    await asyncio.sleep(0.02)
            async with session.post(f"{base}/v1/completions", json={"model": "m"}) as resp:
                assert resp.status == 200
        printed = capsys.readouterr().out
        assert f"listening on http://127.0.0.1:{unused_tcp_port}/v1" in printed
        assert str(controller.make_url("")) in printed
    finally:
        gateway.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gateway
        await controller.close()
    await eventually(gateway.done)


async def test_several_workers_share_the_port_and_stop_together(
    start_upstream: StartUpstream, unused_tcp_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = await start_upstream("a")
    pids: set[int] = set()
    async with running_workers(url, unused_tcp_port) as base, asyncio.timeout(30):
        while len(pids) < 2:  # each new connection lands on either process
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                try:
                    async with session.get(f"{base}/readyz") as resp:
                        ready = resp.status == 200
                    if not ready:
                        await asyncio.sleep(0.05)
                        continue
                    async with session.get(f"{base}/healthz") as resp:
                        pids.add((await resp.json())["pid"])
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        assert "(2 worker processes)" in capsys.readouterr().out
    for pid in pids - {os.getpid()}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_tune_gc_freezes_the_start_up_heap_and_raises_the_young_threshold() -> None:
    import gc

    from controller.gateway.workers import GC_GEN0_THRESHOLD, tune_gc

    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
