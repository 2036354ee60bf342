"""The loop cannot die: an unexpected exception in any stage of a pass is counted by stage, logged
once with its traceback, and the next pass runs; only cancelling stops the loop.

The real ``Reconciler.run`` runs over the fakes of test_events (a runtime shaped like
DockerRuntime, a prober answering for marked URLs), with short intervals; each part a pass goes
through is made to raise once, through what the Reconciler takes (load_models, read_inventory,
the runtime, the prober, the store, OnDemand) or a subclass of its own part (EventLog); so are
the tasks a pass starts (drains, readiness probes). Waits poll with a deadline; nothing is timed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.endpoints.demand import DemandReport, ModelDemand
from controller.endpoints.store import EndpointStore
from controller.endpoints.table import ModelEndpoints
from controller.gpus.inventory import Inventory
from controller.manifests.model import LoadedModel
from controller.reconcile.drain import Drainer
from controller.reconcile.events import EventLog
from controller.reconcile.lifecycle import LifecycleSettings
from controller.reconcile.loop import Reconciler, Stage
from controller.reconcile.ondemand import OnDemand
from controller.reconcile.readiness import ReadinessWatch
from controller.reconcile.scaling import Load
from controller.reconcile.supervise import Failures
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec
from tests.reconcile.test_events import FakeRuntime, Prober, model
from tests.reconcile.test_readiness import starting

ERRORS = "controller.reconcile.supervise"  # the logger unexpected errors are logged on


class Breaks:
    """Exceptions to raise, by the name of what raises them: ``armed`` once, ``always`` every time;
    ``calls`` counts each name's calls (a task called again was started again)."""

    def __init__(self) -> None:
        self.armed: dict[str, BaseException] = {}
        self.always: dict[str, BaseException] = {}
        self.calls: Counter[str] = Counter()

    def check(self, what: str) -> None:
        self.calls[what] += 1
        exc = self.armed.pop(what, None) or self.always.get(what)
        if exc is not None:
            raise exc


@dataclass
class BreakingRuntime(FakeRuntime):
    breaks: Breaks = field(default_factory=Breaks)

    def list(self) -> list[ObservedContainer]:
        self.breaks.check("list")
        return super().list()

    def start(self, spec: ContainerSpec) -> str:
        self.breaks.check("start")
        return super().start(spec)

    def remove(self, container_id: str, *, graceful: bool = True) -> None:
        self.breaks.check("remove")
        super().remove(container_id, graceful=graceful)

    def logs(self, container_id: str, tail: int = 50) -> str:
        self.breaks.check("logs")
        return super().logs(container_id, tail)

    def follow_events(self, on_event: Callable[[], None], stop: threading.Event) -> None:
        self.breaks.check("events")
        stop.wait()


@dataclass
class BreakingProber(Prober):
    breaks: Breaks = field(default_factory=Breaks)

    async def ready(self, url: str) -> bool:
        self.breaks.check("ready")
        return await super().ready(url)


class BreakingStore(EndpointStore):
    def __init__(self, breaks: Breaks) -> None:
        super().__init__()
        self.breaks = breaks

    async def publish(self, models: tuple[ModelEndpoints, ...]) -> bool:
        self.breaks.check("publish")
        return await super().publish(models)


class BreakingOnDemand(OnDemand):
    def __init__(self, breaks: Breaks) -> None:
        super().__init__()
        self.breaks = breaks

    def loads(self, models: Any, demand: Any) -> dict[str, Load]:
        self.breaks.check("loads")
        return super().loads(models, demand)


class BreakingEvents(EventLog):
    def __init__(self, breaks: Breaks, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.breaks = breaks

    def deleting(self, *args: Any, **kwargs: Any) -> None:
        self.breaks.check("deleting")
        super().deleting(*args, **kwargs)

    def pending(self, *args: Any, **kwargs: Any) -> None:
        self.breaks.check("pending")
        super().pending(*args, **kwargs)


@dataclass
class Loop:
    """A running reconcile loop over fakes, and the breaks armed in its parts."""

    reconciler: Reconciler
    runtime: BreakingRuntime
    prober: BreakingProber
    breaks: Breaks
    models: list[LoadedModel]
    task: asyncio.Task[None] | None = None

    def errors(self, stage: str) -> int:
        return self.reconciler.failures.counts[("reconciler", stage)]

    async def a_pass_completes(self) -> None:
        """Wait for a pass that begins after now to complete."""
        now = time.monotonic()
        await until(lambda: self.reconciler.heartbeat.completed_at > now, "a pass completes")


def loop(
    models: list[LoadedModel] | None = None, *, kind: type[Reconciler] = Reconciler, **overrides: Any
) -> Loop:
    breaks = Breaks()
    runtime, prober = BreakingRuntime(breaks=breaks), BreakingProber(breaks=breaks)
    holder = Loop(None, runtime, prober, breaks, [model()] if models is None else models)  # type: ignore[arg-type]

    def load() -> list[LoadedModel]:
        breaks.check("load")
        return list(holder.models)

    def inventory() -> Inventory:
        breaks.check("inventory")
        return Inventory()

    failures = Failures()  # shared, as app.py shares it
    holder.reconciler = kind(
        runtime=runtime,  # type: ignore[arg-type]
        load_models=load,
        store=BreakingStore(breaks),
        prober=prober,
        drainer=Drainer(runtime, prober.fetch, settle_s=0, poll_s=0, failures=failures),  # type: ignore[arg-type]
        interval_s=0.02,
        busy_interval_s=0.01,
        lifecycle=LifecycleSettings(backoff_initial_s=0.05, backoff_max_s=1),
        read_inventory=inventory,
        on_demand=BreakingOnDemand(breaks),
        failures=failures,
        **overrides,
    )
    holder.reconciler.events = BreakingEvents(breaks, time.time)
    return holder


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def running() -> Any:
    """A loop whose first pass created the model's replica (Starting: its engine not ready)."""
    holder = loop()
    holder.task = asyncio.create_task(holder.reconciler.run())
    await until(lambda: len(holder.runtime.containers) == 1, "the replica is created")
    await holder.a_pass_completes()
    yield holder
    holder.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder.task


def mark_ready(holder: Loop) -> Callable[[], bool]:
    (container,) = holder.runtime.containers
    holder.prober.mark(container)
    return lambda: any(r.state == "Ready" for r in holder.reconciler.reports.current().replicas)


def crash(holder: Loop) -> None:
    (container,) = holder.runtime.containers
    holder.runtime.exit(container.id, 1, "E boom\n")


# (stage, what raises, what else the pass needs to reach it)
STAGES: list[tuple[Stage, str, Callable[[Loop], object] | None]] = [
    (Stage.MANIFESTS, "load", None),  # e.g. RecursionError from a deeply nested YAML
    (Stage.CONTAINERS, "list", None),
    (Stage.INVENTORY, "inventory", None),
    (Stage.DESIRE, "loads", None),  # scaling: the 1e300 timestamp below fails here
    (Stage.PROBE, "ready", mark_ready),  # a ready replica: only the pass probes it
    (Stage.REPLACE, "logs", None),  # a Starting replica's log is read for a fatal error
    (Stage.PLAN, "deleting", None),
    (Stage.PUBLISH, "publish", None),
    (Stage.REMOVE, "remove", crash),  # the crashed replica's removal
    (Stage.STATUS, "pending", None),
]


@pytest.mark.parametrize(("stage", "breaking", "prepare"), STAGES, ids=[s for s, _, _ in STAGES])
async def test_an_unexpected_error_in_any_stage_is_counted_logged_once_and_the_next_pass_runs(
    running: Loop,
    caplog: pytest.LogCaptureFixture,
    stage: Stage,
    breaking: str,
    prepare: Callable[[Loop], object] | None,
) -> None:
    if prepare is not None:
        settled = prepare(running)
        if callable(settled):
            await until(settled, "the pass sees it")
    caplog.set_level(logging.ERROR, logger=ERRORS)
    running.breaks.armed[breaking] = OverflowError(f"injected at {stage}")
    await until(lambda: running.errors(stage) == 1, f"an error counted at {stage}")
    await running.a_pass_completes()
    assert not running.breaks.armed and not running.task.done()  # type: ignore[union-attr]
    (record,) = [r for r in caplog.records if r.name == ERRORS]
    assert f"reconciler failed (at {stage}" in record.getMessage()
    assert f"OverflowError: injected at {stage}" in record.getMessage() and record.exc_info is not None
    assert sum(running.reconciler.failures.counts.values()) == 1


async def test_a_replica_whose_start_raises_backs_off_alone_and_starts_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder = loop([model("a"), model("b")])
    holder.breaks.armed["start"] = TypeError("a library's surprise")
    caplog.set_level(logging.ERROR, logger=ERRORS)
    task = asyncio.create_task(holder.reconciler.run())
    try:
        await until(lambda: len(holder.runtime.containers) == 2, "both replicas start")
    finally:
        task.cancel()
    assert holder.errors(Stage.CREATE) == 1
    (record,) = [r for r in caplog.records if r.name == ERRORS]
    assert "(at create a-0)" in record.getMessage()
    assert "TypeError: a library's surprise" in record.getMessage()
    (backoff,) = [e for e in holder.reconciler.events.events if e.kind == "backoff"]
    assert (backoff.model, backoff.reason) == (
        "a",
        "could not start: unexpected error: TypeError: a library's surprise; retrying in 0.05s",
    )


async def test_the_same_error_is_logged_once_a_new_one_again_and_the_backoff_doubles_to_its_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder = loop()
    r = holder.reconciler
    caplog.set_level(logging.DEBUG, logger=ERRORS)
    delays = []
    for exc in [RecursionError("deep"), RecursionError("deep"), RecursionError("deep"), KeyError("x")]:
        holder.breaks.armed["load"] = exc
        delays.append(await r.turn())
    assert delays == [(0.01, False), (0.02, False), (0.04, False), (0.08, False)]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 2 and "RecursionError: deep" in logged[0] and "KeyError: 'x'" in logged[1]
    assert holder.errors(Stage.MANIFESTS) == 4
    r.backoff.streak = 20
    holder.breaks.armed["load"] = KeyError("x")
    assert await r.turn() == (30.0, False)  # capped
    assert await r.turn() == (0.01, True)  # a good pass: not settled yet (the replica starts)
    assert r.backoff.streak == 0
    holder.breaks.armed["load"] = KeyError("x")
    await r.turn()  # after a good pass the same error is news again
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 3 and "works again" in caplog.text


async def test_cancelling_still_stops_the_loop() -> None:
    holder = loop()
    holder.breaks.armed["load"] = RecursionError("deep")
    task = asyncio.create_task(holder.reconciler.run())
    await until(lambda: holder.errors(Stage.MANIFESTS) == 1, "the error")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_demand_report_from_the_year_1e300_does_not_end_the_loop_and_liveness_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder = loop(liveness_s=0.5)
    r = holder.reconciler
    task = asyncio.create_task(r.run())
    await until(lambda: len(holder.runtime.containers) == 1, "the replica is created")
    assert r.liveness().ok
    caplog.set_level(logging.ERROR, logger=ERRORS)
    # What POST /v1/demand took before the API validated it; the board keeps it, so every pass fails.
    r.report_demand(DemandReport("x", {"smol": ModelDemand(last_active=1e300)}))
    try:
        await until(lambda: holder.errors(Stage.DESIRE) >= 3, "passes keep running")
        await until(lambda: not r.liveness().ok, "liveness says the passes stopped completing")
        assert not task.done()
    finally:
        task.cancel()
    live = r.liveness()
    assert (live.error, live.bound_s) == ("OverflowError", 0.5) and live.since_pass_s > 0.5
    (record,) = [x for x in caplog.records if x.name == ERRORS]  # once, however many passes
    assert "(at desire)" in record.getMessage() and "out of range" in record.getMessage()


async def test_a_drain_that_raises_is_counted_and_the_next_pass_drains_again(running: Loop) -> None:
    running.breaks.armed["remove"] = ConnectionResetError("the engine hung up mid-removal")
    running.models = []  # the model leaves the manifests: its replica drains, then goes
    await until(lambda: not running.runtime.containers, "the replica is removed after all")
    assert running.reconciler.failures.counts[("drain", "")] == 1 and not running.breaks.armed
    assert running.breaks.calls["remove"] == 2


async def test_a_readiness_probe_that_raises_is_started_again() -> None:
    breaks, woken = Breaks(), asyncio.Event()
    prober = BreakingProber(breaks=breaks)
    container = starting("c1")
    prober.mark(container)
    breaks.armed["ready"] = TimeoutError("a probe's surprise")  # not what the prober maps
    watch = ReadinessWatch(prober, woken.set, interval_s=0.001, failures=Failures())
    watch.watch([container])
    try:
        await asyncio.wait_for(woken.wait(), 10)
    finally:
        await watch.close()
    assert watch.failures.counts[("readiness", "")] == 1 and breaks.calls["ready"] == 2
