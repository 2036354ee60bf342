"""A replica the Docker engine stopped while shutting down: counted once, said so, no backoff.

The reconciler runs its real passes over a fake runtime (a few lines, shaped like DockerRuntime)
and two injected clocks: monotonic for backoff, Unix time for the engine's outages and FinishedAt.
What the fake does is what Docker 20.10 was seen doing on SIGTERM: listing keeps answering on the
open connection while every removal fails (the socket is gone), then listing fails too, then the
restarted engine lists the same exited containers and removes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from controller.endpoints.store import EndpointStore
from controller.errors import BackendRuntimeError, ModelctlError, RuntimeUnavailable
from controller.gpus.inventory import Inventory
from controller.reconcile.failures import stopped_by_engine
from controller.reconcile.lifecycle import SHUTDOWN_GRACE_S, EngineRecord, LifecycleSettings
from controller.reconcile.loop import Reconciler
from controller.runtime.observed import ObservedContainer

STRAY = "srv  operator(): got exception: 'input' is required\n"  # a warning from a client's bad request
ENGINE_REASON = "stopped by the Docker engine's shutdown (exit code 0, not a crash); started again"


def exited(cid: str, *, code: int = 0, finished_at: float = 1000.0, oom: bool = False) -> ObservedContainer:
    return ObservedContainer(
        id=cid,
        name=f"modelctl-smollm2-1-{cid}",
        model="smollm2",
        replica=1,
        engine="llamacpp",
        spec_hash="h",
        state="exited",
        exit_code=code,
        ip=None,
        port=8080,
        health_path="/health",
        max_concurrency=2,
        started_at="",
        finished_at=finished_at,
        oom_killed=oom,
    )


@dataclass
class FakeRuntime:
    """Listing and removal as the engine answers them; ``listing``/``removing`` raise when set."""

    containers: list[ObservedContainer] = field(default_factory=list)
    hash_key: bytes = b""
    listing: Exception | None = None
    removing: Exception | None = None
    removals: int = 0

    def list(self) -> list[ObservedContainer]:
        if self.listing:
            raise self.listing
        return list(self.containers)

    def remove(self, container_id: str, *, graceful: bool = True) -> None:
        self.removals += 1
        if self.removing:
            raise self.removing
        self.containers = [c for c in self.containers if c.id != container_id]

    def logs(self, container_id: str, tail: int = 50) -> str:
        return STRAY


class NoDrains:
    def draining(self, container_id: str) -> bool:
        return False

    def draining_ids(self) -> frozenset[str]:
        return frozenset()

    def start(self, container: ObservedContainer, **_: object) -> None:
        raise AssertionError("nothing is desired, so nothing should drain")


class NeverReady:
    async def ready(self, url: str) -> bool:
        return False


@dataclass
class Clocks:
    mono: float = 0.0
    wall: float = 1000.0

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture(autouse=True)
def _capture_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller")


def reconciler(runtime: FakeRuntime, clocks: Clocks) -> Reconciler:
    return Reconciler(
        runtime=runtime,  # type: ignore[arg-type]
        load_models=list,
        store=EndpointStore(),
        prober=NeverReady(),  # type: ignore[arg-type]
        drainer=NoDrains(),  # type: ignore[arg-type]
        lifecycle=LifecycleSettings(backoff_initial_s=2, backoff_max_s=300),
        read_inventory=Inventory,
        clock=lambda: clocks.mono,
        wall_clock=lambda: clocks.wall,
    )


async def one_pass(r: Reconciler, clocks: Clocks) -> None:
    """A pass as ``run`` makes it (its failure noted the same way), then half a second."""
    try:
        await r.reconcile_once()
    except ModelctlError as exc:
        r.pass_failed(exc, repeated=False)
    clocks.tick(0.5)


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("replica smollm2-1")]


GONE = RuntimeUnavailable("removing container c1: Docker engine unreachable (Connection aborted.)")


async def test_engine_shutdown_is_counted_once_said_so_and_not_backed_off(
    clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    # The engine got SIGTERM at 1000.0: the replica exited 0 at once, the socket is gone.
    runtime = FakeRuntime([exited("c1", finished_at=1000.1)], removing=GONE)
    r = reconciler(runtime, clocks)
    clocks.tick(1.0)
    for _ in range(20):  # ten seconds of passes every 0.5 s while the engine stops its containers
        await one_pass(r, clocks)
    runtime.listing = RuntimeUnavailable("listing containers: Docker engine unreachable")
    for _ in range(10):  # the engine is gone
        await one_pass(r, clocks)
    runtime.listing = runtime.removing = None  # it is back, with the same exited container
    for _ in range(3):
        await one_pass(r, clocks)

    record = r.lifecycle.slot(("smollm2", 1))
    assert (record.restarts, record.failures, record.reason) == (1, 0, ENGINE_REASON)
    assert r.lifecycle.may_start(("smollm2", 1), clocks.mono)  # at once: no backoff
    assert failure_lines(caplog) == [f"replica smollm2-1 {ENGINE_REASON}"]
    removal_warnings = [m for m in caplog.messages if m.startswith("could not remove")]
    assert len(removal_warnings) == 1 and "Docker engine unreachable" in removal_warnings[0]
    assert runtime.containers == [] and r.lifecycle.counted == set()  # removed, then forgotten
    assert not r.lifecycle.engine.down


async def test_a_container_that_exits_while_the_engine_is_away_is_the_engines_too(clocks: Clocks) -> None:
    runtime = FakeRuntime([], listing=RuntimeUnavailable("listing containers: unreachable"))
    r = reconciler(runtime, clocks)
    clocks.tick(5)
    await one_pass(r, clocks)  # the engine went away at 1005
    clocks.tick(8)
    runtime.listing = None  # back at 1013.5 with a container SIGKILLed after the stop timeout
    runtime.containers = [exited("c1", code=137, finished_at=1011.0)]
    await one_pass(r, clocks)
    record = r.lifecycle.slot(("smollm2", 1))
    assert (record.restarts, record.failures) == (1, 0)
    assert record.reason.startswith("stopped by the Docker engine's shutdown (exit code 137")


async def test_a_crash_whose_removal_fails_is_counted_and_logged_once(
    clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = FakeRuntime(
        [exited("c1", code=1, finished_at=1002)], removing=BackendRuntimeError("removal already in progress")
    )
    r = reconciler(runtime, clocks)
    clocks.tick(3)
    for _ in range(10):
        await one_pass(r, clocks)
    record = r.lifecycle.slot(("smollm2", 1))
    assert (record.restarts, record.failures) == (1, 1)  # backoff 2 s, not doubled each pass
    assert failure_lines(caplog) == [
        "replica smollm2-1 failed: exited with code 1: srv  operator(): got exception: 'input' is required;"
        " restarting in 2s"
    ]
    assert runtime.removals == 10  # retried on every pass
    assert not r.lifecycle.engine.down  # the engine answered: refusing is not being away


@pytest.mark.parametrize(
    ("code", "finished_at", "oom", "reason", "failures"),
    [
        # No outage seen: exit codes say nothing about the engine; the log line is the reason.
        (0, 1002.0, False, "exited with code 0: srv  operator(): got exception: 'input' is required", 1),
        (137, 1002.0, False, "killed (exit code 137, SIGKILL): stopped from outside", 1),
        (143, 1002.0, False, "exited with code 143: srv  operator()", 1),
        # Stopped before this controller started (it watches from 1000): SIGTERM is not a crash.
        (0, 990.0, False, "stopped before this controller started (exit code 0, not a crash", 0),
        (143, 990.0, False, "stopped before this controller started (exit code 143, not a crash", 0),
        (137, 990.0, False, "killed (exit code 137, SIGKILL)", 1),  # could be the host's OOM killer
        (1, 990.0, False, "exited with code 1: srv", 1),
    ],
)
async def test_reason_and_backoff_without_an_outage(
    clocks: Clocks, code: int, finished_at: float, oom: bool, reason: str, failures: int
) -> None:
    runtime = FakeRuntime([exited("c1", code=code, finished_at=finished_at, oom=oom)])
    r = reconciler(runtime, clocks)
    clocks.tick(3)
    await one_pass(r, clocks)
    record = r.lifecycle.slot(("smollm2", 1))
    assert record.reason.startswith(reason)
    assert (record.restarts, record.failures) == (1, failures)


LOST, BACK = 1000.0, 1020.0


@pytest.mark.parametrize(
    ("finished_at", "cause"),
    [
        (LOST - SHUTDOWN_GRACE_S - 1, "unwatched"),  # before the controller watched, not in the outage
        (LOST - SHUTDOWN_GRACE_S + 1, "outage"),  # just before the outage was noticed
        (LOST + 5, "outage"),
        (BACK, "outage"),
        (BACK + 1, None),  # after the engine came back: a crash like any other
        (None, None),  # never finished
    ],
)
def test_engine_cause_by_finished_at(finished_at: float | None, cause: str | None) -> None:
    engine = EngineRecord(watched_from=980.0)
    engine.lost(LOST)
    engine.lost(LOST + 10)  # still the same outage
    assert engine.down
    engine.answered(LOST + 5)  # a pass that began before the last failure proves nothing
    assert engine.down
    engine.answered(BACK)
    assert not engine.down and (engine.lost_at, engine.back_at) == (LOST, BACK)
    assert engine.cause(finished_at) == cause


def test_while_the_engine_is_down_every_later_stop_is_in_the_outage() -> None:
    engine = EngineRecord(watched_from=0.0)
    assert engine.cause(500.0) is None
    engine.lost(1000.0)
    assert engine.cause(1000.0 + 3600) == "outage"
    assert engine.cause(1000.0 - SHUTDOWN_GRACE_S - 1) is None


@pytest.mark.parametrize(
    ("code", "oom", "cause", "starts"),
    [
        (0, False, "outage", "stopped by the Docker engine's shutdown (exit code 0, not a crash)"),
        (143, False, "outage", "stopped by the Docker engine's shutdown (exit code 143"),
        (137, False, "outage", "stopped by the Docker engine's shutdown (exit code 137"),
        (137, True, "outage", None),  # OOM-killed: a real problem, whatever the engine did
        (1, False, "outage", None),  # an error exit is the replica's own
        (139, False, "outage", None),
        (None, False, "outage", None),
        (0, False, "unwatched", "stopped before this controller started (exit code 0"),
        (137, False, "unwatched", None),
        (0, False, None, None),
    ],
)
def test_stopped_by_engine(code: int | None, oom: bool, cause: str | None, starts: str | None) -> None:
    reason = stopped_by_engine(code, oom_killed=oom, cause=cause)  # type: ignore[arg-type]
    assert reason == starts if starts is None else (reason or "").startswith(starts)


@pytest.mark.parametrize(
    ("finished_at", "seconds"),
    [
        ("2026-12-01T21:53:01.056121591Z", 1796161981.056121),  # as Docker 20.10 writes it
        ("0001-01-01T00:00:00Z", None),  # Docker's zero time: never finished
        ("", None),
    ],
)
def test_docker_finished_at_as_unix_seconds(finished_at: str, seconds: float | None) -> None:
    from controller.runtime.docker import unix_time

    assert unix_time(finished_at) == (pytest.approx(seconds) if seconds else None)
