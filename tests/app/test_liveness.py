"""The controller's tasks cannot die and its liveness is honest: every background task the
composition root starts (``app.background``) is started again after an unexpected error, and when
reconcile passes stop completing ``/healthz`` answers 503 and the watchdog fires.

The reconciler and runtime are the fakes of tests/reconcile (test_loop_survives), each task given
one failure through what it takes: the manifest path, the runtime's event stream, the energy
meter, the scraper's clock, the reconciler's wait between passes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.api import create_api
from controller.app import background, exit_anyway_after, watchdog
from controller.errors import ModelctlError
from controller.gpus.inventory import Inventory
from controller.reconcile.loop import Reconciler
from controller.settings import ControllerSettings
from controller.telemetry.energy import EnergyMeter
from controller.telemetry.series import GatewayScraper
from tests.reconcile.test_loop_survives import Breaks, loop, until

TASKS = ("reconciler", "manifests", "docker-events", "energy", "console-series")


class BreakingReconciler(Reconciler):
    """Its wait between passes raises when armed: ``run`` itself ends with an error."""

    async def sleep(self, seconds: float) -> None:
        self.runtime.breaks.check("sleep")  # type: ignore[attr-defined]
        await super().sleep(seconds)


class BreakingMeter(EnergyMeter):
    def __init__(self, breaks: Breaks) -> None:
        super().__init__()
        self.breaks = breaks

    def sample(self, now: float, inventory: Inventory, owners: Any) -> None:
        self.breaks.check("sample")
        super().sample(now, inventory, owners)


async def test_every_background_task_that_breaks_is_logged_counted_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder = loop(kind=BreakingReconciler)
    breaks, failures = holder.breaks, holder.reconciler.failures

    def clock() -> float:
        breaks.check("clock")
        return time.time()

    for name in ("sleep", "events", "sample", "clock"):
        breaks.armed[name] = KeyError(f"injected into {name}")
    too_long = Path("m" * 300)  # ENAMETOOLONG, an OSError the watcher does not expect
    scraper = GatewayScraper("http://127.0.0.1:9", clock=clock)  # nothing listens: a refusal is fine
    caplog.set_level(logging.ERROR, logger="controller.reconcile.supervise")
    tasks = background(too_long, holder.reconciler, holder.runtime, BreakingMeter(breaks), scraper)  # type: ignore[arg-type]
    try:
        await until(
            lambda: (
                all(breaks.calls[n] >= 2 for n in ("sleep", "events", "sample", "clock"))
                and failures.counts[("manifests", "")] >= 2
            ),
            "every task ran again after its error",
        )
        assert not any(task.done() for task in tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [t.get_name() for t in tasks] == list(TASKS)
    assert {task: failures.counts[(task, "")] >= 1 for task in TASKS} == dict.fromkeys(TASKS, True)
    logged = {r.getMessage().split(" failed;")[0] for r in caplog.records if r.exc_info is not None}
    assert logged == set(TASKS)
    manifests = [r for r in caplog.records if r.getMessage().startswith("manifests failed")]
    assert len(manifests) == 1 and "File name too long" in manifests[0].getMessage()  # once


async def test_healthz_answers_503_saying_since_when_once_passes_stop_completing() -> None:
    now = [1000.0]
    holder = loop(clock=lambda: now[0], liveness_s=30.0)
    r = holder.reconciler
    async with TestClient(TestServer(create_api(r.store, r.reports, r.controls()))) as client:
        answer = await client.get("/healthz")
        assert answer.status == 200 and (await answer.json())["status"] == "ok"
        now[0] += 31.0
        holder.breaks.always["load"] = RecursionError("maximum recursion depth exceeded")
        await r.turn()  # a pass that fails does not count
        answer = await client.get("/healthz")
        assert answer.status == 503
        assert await answer.json() == {
            "status": "stalled",
            "since_last_pass_s": 31.0,
            "bound_s": 30.0,
            "stage": "",
            "error": "RecursionError",
        }
        del holder.breaks.always["load"]
        await r.turn()
        assert (await client.get("/healthz")).status == 200


async def test_the_watchdog_fires_when_passes_stop_completing(caplog: pytest.LogCaptureFixture) -> None:
    holder = loop(liveness_s=0.3)
    holder.breaks.always["load"] = RecursionError("maximum recursion depth exceeded")
    task = asyncio.create_task(holder.reconciler.run())
    try:
        live = await asyncio.wait_for(watchdog(holder.reconciler.reports, poll_s=0.01), 10)
        assert not task.done()  # the loop itself lives on: only the process is given up
    finally:
        task.cancel()
    assert not live.ok and live.since_pass_s > 0.3 and live.error == "RecursionError"
    assert "no reconcile pass completed for" in live.describe() and "MODELCTL_LIVENESS_S" in live.describe()


async def test_the_watchdog_waits_while_passes_complete() -> None:
    holder = loop(liveness_s=0.3)
    task = asyncio.create_task(holder.reconciler.run())
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(watchdog(holder.reconciler.reports, poll_s=0.01), 1.0)
    finally:
        task.cancel()


def test_the_process_ends_anyway_when_its_orderly_exit_hangs() -> None:
    ended: list[int] = []
    done = threading.Event()

    def end(code: int) -> None:
        ended.append(code)
        done.set()

    timer = exit_anyway_after(0.01, end=end)
    assert done.wait(10) and ended == [1] and timer.daemon


def test_the_liveness_bound_comes_from_the_environment_and_must_outlast_an_interval() -> None:
    assert ControllerSettings.from_env({"MODELCTL_LIVENESS_S": "120"}).liveness_s == 120.0
    assert ControllerSettings.from_env({}).liveness_s is None
    for bad in ("5", "1", "nan", "inf"):
        with pytest.raises(ModelctlError, match=f"MODELCTL_LIVENESS_S={bad}: give more seconds than"):
            ControllerSettings.from_env({"MODELCTL_LIVENESS_S": bad})
