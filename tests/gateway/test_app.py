"""run_gateway, the entry ``modelctl gateway`` calls: serves, follows the controller, stops on cancel."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gateway_fakes import FakeController, StartUpstream, eventually, running_workers, table_of

from controller.endpoints.demand import ModelDemand
from controller.errors import GatewayWorkersFailed
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
    fake_controller = FakeController(table_of(("m", (), [url])))
    controller = TestServer(fake_controller.app())
    await controller.start_server()
    settings = GatewaySettings(
        host="127.0.0.1",
        port=unused_tcp_port,
        controller_url=str(controller.make_url("")),
        tune_gc=False,
        demand_interval_s=0.05,
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
        # It reports its demand to the controller's POST /v1/demand: the request it served, done.
        reports = fake_controller.reports

        def served() -> bool:
            last = reports[-1].models.get("m", ModelDemand()) if reports else ModelDemand()
            return last.last_active > 0 and last.in_flight == 0 and last.waiting == 0

        await eventually(served)
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
    async with running_workers(url, unused_tcp_port) as (base, _), asyncio.timeout(30):
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


async def test_a_worker_that_dies_ends_the_gateway_with_one_clear_error(
    start_upstream: StartUpstream, unused_tcp_port: int
) -> None:
    _, url = await start_upstream("a")
    async with running_workers(url, unused_tcp_port) as (base, gateway), asyncio.timeout(60):
        child = None
        while child is None:  # until a new connection lands on the spawned worker
            try:
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(connector=connector) as session,
                    session.get(f"{base}/healthz") as resp,
                ):
                    # Only our workers' JSON counts: a port is shared by SO_REUSEPORT sockets alone.
                    pid = (await resp.json())["pid"] if resp.status == 200 else os.getpid()
                child = pid if pid != os.getpid() else None
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        os.kill(child, signal.SIGKILL)
        with pytest.raises(GatewayWorkersFailed, match=r"exited with status -9; the gateway stops"):
            await gateway


def test_tune_gc_freezes_the_start_up_heap_and_raises_the_young_threshold() -> None:
    import gc

    from controller.gateway.serving.process import GC_GEN0_THRESHOLD, tune_gc

    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
