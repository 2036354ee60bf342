"""Recent events: the reconciler's real passes record each one once (created, ready, crashed and
backoff, rolled, deleted, evicted, drained, pending), and Starting rows say what the engine does.

The passes run over a fake runtime shaped like DockerRuntime (containers as plain data, logs from
the real llama-server log recorded in tests/fixtures/logs), a prober answering for the URLs a
test marks ready, and the real Drainer. Passes repeat on purpose: the loop is level-based, and an
event must not be recorded again because the next pass sees the same thing.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.api import create_api, replica_named
from controller.cli.render import render_table
from controller.endpoints.demand import DemandReport, ModelDemand
from controller.endpoints.store import EndpointStore
from controller.errors import BackendRuntimeError
from controller.gpus.inventory import Inventory
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.host import Host
from controller.placement.memory import GiB
from controller.reconcile.demand import DemandBoard
from controller.reconcile.drain import Drainer
from controller.reconcile.events import CAPACITY, EventLog, reason_shape
from controller.reconcile.lifecycle import LifecycleSettings
from controller.reconcile.loop import Reconciler
from controller.reconcile.ondemand import OnDemand
from controller.reconcile.scaling import Scaler
from controller.reconcile.status import ReplicaStatus
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

LLAMA_LOG = (Path(__file__).resolve().parents[1] / "fixtures" / "logs" / "llamacpp-start.log").read_text()
LOADING = LLAMA_LOG[: LLAMA_LOG.index("\n", LLAMA_LOG.index("load_model: loading model")) + 1]
MISSING = "E llama_model_load: error loading model: llama_model_loader: failed to load model from /m.gguf\n"


@dataclass
class FakeRuntime:
    """Containers as DockerRuntime reports them; ``start`` runs one at once, ``logs`` per ID."""

    instance: str = "default"
    hash_key: bytes = b""
    containers: list[ObservedContainer] = field(default_factory=list)
    output: dict[str, str] = field(default_factory=dict)  # container ID -> its log
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def list(self) -> list[ObservedContainer]:
        return list(self.containers)

    def start(self, spec: ContainerSpec) -> str:
        cid = f"c{next(self.ids)}"
        self.containers.append(
            ObservedContainer(
                cid, spec.container_name(self.instance), spec.model, spec.replica, spec.engine,
                spec.spec_hash(), "running", None, f"10.0.0.{len(self.containers) + 2}", spec.port,
                spec.health_path, spec.max_concurrency, "2026-12-02T00:00:00Z", cpus=spec.cpuset,
            )
        )  # fmt: skip
        self.output[cid] = LOADING
        return cid

    def remove(self, container_id: str, *, graceful: bool = True) -> None:
        self.containers = [c for c in self.containers if c.id != container_id]

    def logs(self, container_id: str, tail: int = 50) -> str:
        return "\n".join(self.output.get(container_id, "").splitlines()[-tail:])

    def host_pids(self, container_id: str) -> tuple[int, ...]:
        return ()

    def exit(self, cid: str, code: int, log: str) -> None:
        exited = {c.id: replace(c, state="exited", exit_code=code) for c in self.containers if c.id == cid}
        self.containers = [exited.get(c.id, c) for c in self.containers]
        self.output[cid] = log

    def named(self, model: str) -> tuple[ObservedContainer, ...]:
        return tuple(c for c in self.containers if c.model == model)


@dataclass
class Prober:
    """Answers 200 for the URLs in ``ready``; the drain's idle check finds nothing in flight."""

    ready_urls: set[str] = field(default_factory=set)

    async def ready(self, url: str) -> bool:
        return url in self.ready_urls

    async def fetch(self, url: str) -> str | None:
        return None

    def mark(self, container: ObservedContainer) -> None:
        self.ready_urls.add(f"{container.url}{container.health_path}")


def model(name: str = "smol", **fields: Any) -> LoadedModel:
    doc = {"model": f"hf://org/{name}:Q4", "name": name, "gpu_memory": "1GiB", **fields}
    return LoadedModel(ModelManifest.model_validate(doc), "models/m.yaml", 1, None)


@dataclass
class Stack:
    runtime: FakeRuntime
    prober: Prober
    reconciler: Reconciler
    models: list[LoadedModel]
    clock: list[float]

    async def passes(self, n: int = 1) -> None:
        """``n`` passes, half a second apart, each followed by the drains it started."""
        for _ in range(n):
            await self.reconciler.reconcile_once()
            for task in list(self.reconciler.drainer.tasks.values()):
                await task
            self.clock[0] += 0.5

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.kind, f"{e.model}-{e.replica}") for e in self.reconciler.events.events]


def stack(models: list[LoadedModel], *, on_demand: OnDemand | None = None) -> Stack:
    runtime, prober, clock = FakeRuntime(), Prober(), [0.0]
    holder = Stack(runtime, prober, None, models, clock)  # type: ignore[arg-type]
    holder.reconciler = Reconciler(
        runtime=runtime,  # type: ignore[arg-type]
        load_models=lambda: list(holder.models),
        store=EndpointStore(),
        prober=prober,
        drainer=Drainer(runtime, prober.fetch, settle_s=0, poll_s=0),  # type: ignore[arg-type]
        lifecycle=LifecycleSettings(backoff_initial_s=2, backoff_max_s=300),
        read_inventory=Inventory,
        clock=lambda: clock[0],
        wall_clock=lambda: 1796170000.0 + clock[0],
        on_demand=on_demand,
    )
    return holder


async def test_created_then_ready_once_and_a_starting_replica_says_what_it_does() -> None:
    s = stack([model()])
    await s.passes(3)
    (container,) = s.runtime.containers
    (row,) = s.reconciler.reports.current().replicas
    assert (row.state, row.progress) == ("Starting", "loading weights")
    assert "Starting (loading weights)" in render_table({"replicas": [asdict(row)]})
    s.prober.mark(container)
    await s.passes(3)
    assert s.kinds() == [("created", "smol-0"), ("ready", "smol-0")]
    created, ready = s.reconciler.events.events
    assert created.container == ready.container == container.name
    assert (created.seq, ready.seq, ready.time) == (1, 2, "2026-12-02T00:06:41.500+00:00")
    (row,) = s.reconciler.reports.current().replicas
    assert (row.state, row.progress) == ("Ready", "")


async def test_a_crash_is_recorded_once_with_its_reason_and_its_backoff() -> None:
    s = stack([model()])
    await s.passes(2)
    (container,) = s.runtime.containers
    s.runtime.exit(container.id, 1, LOADING + MISSING)
    await s.passes(3)  # 1.5 s: still backing off
    assert s.kinds() == [("created", "smol-0"), ("crashed", "smol-0"), ("backoff", "smol-0")]
    crashed, backoff = list(s.reconciler.events.events)[1:]
    assert crashed.container == container.name
    assert crashed.reason.startswith("exited with code 1: ") and "error loading model" in crashed.reason
    assert backoff.reason == "restarting in 2s"
    await s.passes(2)  # the backoff is over: a new container
    assert s.kinds()[-1] == ("created", "smol-0") and len(s.kinds()) == 4


async def test_a_roll_records_rolled_then_drained_for_the_old_container() -> None:
    s = stack([model(max_batch_size=2)])
    await s.passes(1)
    (old,) = s.runtime.containers
    s.prober.mark(old)
    await s.passes(2)
    s.models = [model(max_batch_size=4)]  # a changed manifest: a new container beside the old
    await s.passes(2)
    new = next(c for c in s.runtime.containers if c.id != old.id)
    s.prober.mark(new)
    await s.passes(3)
    assert s.kinds() == [
        ("created", "smol-0"), ("ready", "smol-0"), ("created", "smol-0"), ("ready", "smol-0"),
        ("rolled", "smol-0"), ("drained", "smol-0"),
    ]  # fmt: skip
    rolled, drained = list(s.reconciler.events.events)[-2:]
    assert (rolled.container, rolled.reason) == (old.name, f"replaced by {new.name}")
    assert (drained.container, drained.reason) == (old.name, "drained and removed")
    assert s.runtime.containers == [new]


async def test_a_model_taken_out_of_the_manifests_is_deleted_then_drained() -> None:
    s = stack([model(), model("other")])
    await s.passes(1)
    s.models = [model()]
    await s.passes(3)
    assert s.kinds()[-2:] == [("deleted", "other-0"), ("drained", "other-0")]
    assert list(s.reconciler.events.events)[-2].reason == "its model is no longer in the manifests"
    assert s.kinds().count(("deleted", "other-0")) == 1


async def test_an_eviction_is_recorded_as_evicted_and_the_waiting_model_as_pending_once() -> None:
    host = Host(cores=(0, 1), memory_budget=int(1.5 * GiB))  # room for one 1 GiB model
    board = DemandBoard()
    on_demand = OnDemand(demand=board, scaler=Scaler(), read_host=lambda held: host)
    s = stack([model("a", min_replicas=0), model("b", min_replicas=0)], on_demand=on_demand)
    s.reconciler.report_demand(DemandReport("gateway", {"a": ModelDemand(waiting=1)}))
    await s.passes(1)
    (a,) = s.runtime.named("a")
    s.prober.mark(a)
    await s.passes(1)
    s.prober.ready_urls.add("http://10.0.0.2:8080/health")  # b's, once it runs where a ran
    board.record(DemandReport("gateway", {"a": ModelDemand(last_active=1.0), "b": ModelDemand(waiting=1)}))
    await s.passes(4)
    kinds = s.kinds()
    assert kinds[:3] == [("created", "a-0"), ("ready", "a-0"), ("evicted", "a-0")]
    evicted = list(s.reconciler.events.events)[2]
    assert (evicted.container, evicted.reason) == (a.name, "evicted for b")
    assert kinds[3:] == [("pending", "b-0"), ("drained", "a-0"), ("created", "b-0"), ("ready", "b-0")]
    pending = [e for e in s.reconciler.events.events if e.kind == "pending"]
    assert [e.model for e in pending] == ["b"]
    assert pending[0].reason.endswith("is free; waiting for stopped replicas to leave")


async def test_a_start_that_fails_backs_off_each_try() -> None:
    s = stack([model()])

    def refuse(spec: ContainerSpec) -> str:
        raise BackendRuntimeError("starting replica smol-0: could not select device driver")

    s.runtime.start = refuse  # type: ignore[method-assign]
    await s.passes(6)  # tries at 0 s and 2 s (backoff 2 s, then 4 s)
    events = list(s.reconciler.events.events)
    assert [e.kind for e in events] == ["backoff", "backoff"]
    assert events[0].reason.endswith("; retrying in 2s") and events[1].reason.endswith("; retrying in 4s")
    assert events[0].reason.startswith("could not start: ") and events[0].container == ""


def row(reason: str, state: str = "Pending", replica: int = 0) -> ReplicaStatus:
    return ReplicaStatus("big", replica, state, reason=reason)


def test_pending_is_recorded_when_its_reason_changes_shape_not_its_figures() -> None:
    log = EventLog(clock=lambda: 0.0)
    log.pending([row("needs 80.00 GiB, 41.20 GiB free on GPU 1")])
    log.pending([row("needs 80.00 GiB, 40.87 GiB free on GPU 1")])  # free memory moved: same shape
    log.pending([row("needs 80.00 GiB, 40.87 GiB free on GPU 1"), row("no GPU", replica=1)])
    log.pending([row("waiting for stopped replicas to leave")])  # a new reason
    log.pending([row("", state="Starting")])  # placed
    log.pending([row("waiting for stopped replicas to leave")])  # Pending again: recorded again
    assert [(e.replica, e.reason) for e in log.events] == [
        (0, "needs 80.00 GiB, 41.20 GiB free on GPU 1"),
        (1, "no GPU"),
        (0, "waiting for stopped replicas to leave"),
        (0, "waiting for stopped replicas to leave"),
    ]
    assert reason_shape("needs 1.20 GiB, 0.51 GiB free") == reason_shape("needs 1.20 GiB, 0.48 GiB free")


def test_the_ring_keeps_the_last_events_and_after_gives_only_newer() -> None:
    log = EventLog(clock=lambda: 0.0)
    for i in range(CAPACITY + 5):
        log.record("pending", ("big", i))
    body = log.to_json()
    assert body["last"] == CAPACITY + 5 and len(body["events"]) == CAPACITY
    assert body["events"][0]["seq"] == 6 and body["events"][-1]["seq"] == CAPACITY + 5
    assert [e["seq"] for e in log.to_json(after=CAPACITY + 3)["events"]] == [CAPACITY + 4, CAPACITY + 5]
    assert log.to_json(after=CAPACITY + 5)["events"] == []
    assert set(body["events"][0]) == {"seq", "time", "kind", "model", "replica", "container", "reason"}
    with pytest.raises(ValueError, match="unknown event kind 'started'"):
        log.record("started", ("big", 0))


async def test_the_api_serves_events_and_only_its_own_containers_logs() -> None:
    s = stack([model()])
    await s.passes(1)
    (container,) = s.runtime.containers
    client = TestClient(
        TestServer(create_api(s.reconciler.store, s.reconciler.reports, s.reconciler.controls()))
    )
    await client.start_server()
    try:
        body = await (await client.get("/v1/events?after=0")).json()
        assert [e["kind"] for e in body["events"]] == ["created"] and body["last"] == 1
        assert (await (await client.get("/v1/events?after=1")).json())["events"] == []
        assert (await client.get("/v1/events?after=x")).status == 400
        logs = await client.get(f"/v1/replicas/{container.name}/logs?tail=2")
        assert logs.status == 200 and logs.content_type == "text/plain"
        assert (await logs.text()) == "\n".join(LOADING.splitlines()[-2:])
        missing = await client.get("/v1/replicas/someone-elses/logs")
        assert missing.status == 404 and "not a replica of this controller" in (await missing.json())["error"]
        assert (await client.get(f"/v1/replicas/{container.name}/logs?tail=-3")).status == 400
    finally:
        await client.close()


def test_a_container_is_found_by_name_id_or_a_long_enough_id_prefix() -> None:
    c = ObservedContainer(
        "f" * 64, "modelctl-smol-0-1234abcd", "smol", 0, "llamacpp", "h", "running", None, None, 8080,
        "/health", 1, "",
    )  # fmt: skip
    assert replica_named([c], c.name) is c and replica_named([c], c.id) is c
    assert replica_named([c], "f" * 12) is c and replica_named([c], "fff") is None
    assert replica_named([c], "modelctl-smol-0") is None
