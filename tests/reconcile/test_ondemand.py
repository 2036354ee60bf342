"""Eviction when memory is short: idle on-demand models make room for wanted ones, never busy or
always-on ones; lowest priority first, then least recently used. Each pass here is what the
reconciler's is: ``decide`` over a snapshot, then ``OnDemand.applied`` (the scaler told)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.endpoints.demand import DemandReport, ModelDemand
from controller.gpus.inventory import GpuProcess, Inventory
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.host import Host
from controller.placement.memory import GiB
from controller.reconcile.decide import Decision, Snapshot, decide
from controller.reconcile.demand import DemandBoard
from controller.reconcile.desired import desired_state
from controller.reconcile.ondemand import OnDemand
from controller.reconcile.scaling import Scaler
from controller.runtime.observed import ObservedContainer

HOST = Host(cores=(0, 1), memory_budget=int(1.5 * GiB))  # room for one 1 GiB model


def model(name: str, **fields: Any) -> LoadedModel:
    doc = {"model": f"hf://org/{name}:Q4", "name": name, "gpu_memory": "1GiB", "min_replicas": 0, **fields}
    return LoadedModel(ModelManifest.model_validate(doc), "models/m.yaml", 1, None)


def running(name: str, replica: int = 0) -> ObservedContainer:
    return ObservedContainer(
        f"id-{name}-{replica}", f"c-{name}-{replica}", name, replica, "llamacpp", "h", "running",
        None, "10.0.0.2", 8080, "/health", 4, "", cpus=(0,),
    )  # fmt: skip


def decided(
    on_demand: OnDemand,
    models: list[LoadedModel],
    observed: list[ObservedContainer],
    *,
    inventory: Inventory | None = None,
    pids: Mapping[tuple[str, int], frozenset[int]] | None = None,
    host: Host | None = HOST,
) -> Decision:
    """One reconcile pass's decision, applied to ``on_demand`` as the pass applies it."""
    demand = on_demand.demand.current()
    snapshot = Snapshot(
        tuple(models),
        observed=tuple(observed),
        inventory=inventory or Inventory(gpus=()),
        pids=pids or {},
        host=host,
        demand=demand,
        loads=on_demand.loads(models, demand),
    )
    decision = decide(snapshot)
    on_demand.applied(decision.scaling, decision.evictions)
    return decision


def pass_once(
    on_demand: OnDemand, models: list[LoadedModel], observed: list[ObservedContainer]
) -> tuple[set[str], list[str]]:
    """One reconcile pass's desired state: the models with a spec, and the Pending reasons."""
    desired = decided(on_demand, models, observed).desired
    return {s.model for s in desired.specs}, [f"{r.model}: {r.reason}" for r in desired.pending]


def wanting(board: DemandBoard, **models: ModelDemand) -> OnDemand:
    board.record(DemandReport("gateway", models))
    return OnDemand(demand=board, scaler=Scaler())


def test_a_swap_evicts_the_idle_model_then_places_the_wanted_one() -> None:
    models = [model("a"), model("b")]
    on_demand = wanting(DemandBoard(), a=ModelDemand(last_active=1.0), b=ModelDemand(waiting=1))
    specs, pending = pass_once(on_demand, models, [running("a")])
    assert specs == set() and on_demand.evictions == 1  # a is stopped; its memory is not free yet
    assert pending == ["b: needs 1.00 GiB of host memory, 0.50 GiB of the CPU budget (1.50 GiB, "
                       "MODELCTL_CPU_MEMORY) is free; waiting for stopped replicas to leave"]  # fmt: skip
    assert on_demand.scaling["a"].reason == "evicted for b"
    specs, pending = pass_once(on_demand, models, [])  # a is gone
    assert specs == {"b"} and not pending and on_demand.evictions == 1


def test_a_model_with_a_request_in_flight_is_never_evicted() -> None:
    models = [model("a"), model("b")]
    on_demand = wanting(DemandBoard(), a=ModelDemand(in_flight=1), b=ModelDemand(waiting=1))
    specs, pending = pass_once(on_demand, models, [running("a")])
    assert specs == {"a"} and on_demand.evictions == 0
    assert pending[0].endswith("no idle on-demand model to stop for it")


def test_an_always_on_model_is_never_evicted() -> None:
    models = [model("a", min_replicas=None, replicas=1), model("b")]
    on_demand = wanting(DemandBoard(), b=ModelDemand(waiting=1))
    specs, pending = pass_once(on_demand, models, [running("a")])
    assert specs == {"a"} and on_demand.evictions == 0 and pending


def test_lowest_priority_goes_first_then_the_least_recently_used() -> None:
    big = Host(cores=(0, 1), memory_budget=int(2.5 * GiB))  # two of the three fit
    used = {"old": 10.0, "new": 20.0, "low": 30.0}
    for runs, victim in ((["old", "low"], "low"), (["old", "new"], "old")):
        board = DemandBoard()
        board.record(
            DemandReport(
                "g", {**{n: ModelDemand(last_active=used[n]) for n in runs}, "want": ModelDemand(waiting=1)}
            )
        )
        on_demand = OnDemand(demand=board, scaler=Scaler())
        models = [model(n, priority=-1 if n == "low" else 0) for n in [*runs, "want"]]
        decided(on_demand, models, [running(n) for n in runs], host=big)
        assert on_demand.scaling[victim].reason == "evicted for want"
        assert on_demand.evictions == 1


def test_a_wanted_model_of_higher_priority_is_not_evicted_for_a_lower_one() -> None:
    models = [model("a", priority=5), model("b")]
    on_demand = wanting(DemandBoard(), a=ModelDemand(last_active=1.0), b=ModelDemand(waiting=1))
    specs, _ = pass_once(on_demand, models, [running("a")])
    assert specs == {"a"} and on_demand.evictions == 0


def test_on_a_gpu_the_wanted_model_waits_until_the_evicted_one_has_left() -> None:
    """Our own GPU processes' memory counts as theirs, not foreign: right after an eviction,
    placement sees the leaving replica's memory as free. Starting beside it could run out of
    memory, so the wanted model is held back until the evicted container is gone."""
    import dataclasses
    from pathlib import Path

    base = Inventory.from_json((Path(__file__).parents[1] / "fixtures/inventories/h200.json").read_text())
    total = base.gpus[0].memory_total
    usage = base.usage[0]
    held = int(total * 0.6)
    busy = dataclasses.replace(
        usage, memory_free=usage.memory_free - held, processes=(GpuProcess(pid=4242, used_memory=held),)
    )
    inventory = dataclasses.replace(base, usage=(busy,))
    models = [model(n, num_gpus=1, gpu_memory=0.6, model=f"hf://org/{n}") for n in ("a", "b")]
    on_demand = wanting(DemandBoard(), a=ModelDemand(last_active=1.0), b=ModelDemand(waiting=1))
    victim = dataclasses.replace(running("a"), engine="vllm", gpus=("0",), cpus=())
    pids = {("a", 0): frozenset({4242})}
    desired = decided(on_demand, models, [victim], inventory=inventory, pids=pids, host=None).desired
    assert desired.specs == () and on_demand.scaling["a"].reason == "evicted for b"
    assert any(
        r.model == "b" and "waiting for stopped replicas to leave" in r.reason for r in desired.pending
    )
    desired = decided(on_demand, models, [], inventory=base, host=None).desired
    assert [(s.model, s.gpus.device_ids if s.gpus else None) for s in desired.specs] == [("b", ("0",))]


def test_a_leaving_gpu_replicas_memory_is_taken_until_it_is_gone_a_staying_ones_is_its_own() -> None:
    """``desired_state`` counts the GPU memory of our replicas by slot: a replica still wanted
    keeps its own memory (so it is kept where it runs), one going away holds it until gone."""
    import dataclasses
    from pathlib import Path

    base = Inventory.from_json((Path(__file__).parents[1] / "fixtures/inventories/h200.json").read_text())
    held = int(base.gpus[0].memory_total * 0.6)
    usage = base.usage[0]
    busy = dataclasses.replace(
        usage, memory_free=usage.memory_free - held, processes=(GpuProcess(pid=4242, used_memory=held),)
    )
    inventory = dataclasses.replace(base, usage=(busy,))
    a, b = (model(n, num_gpus=1, gpu_memory=0.6, model=f"hf://org/{n}", min_replicas=1) for n in "ab")
    on_gpu = dataclasses.replace(running("a"), engine="vllm", gpus=("0",), cpus=())
    pids = {("a", 0): frozenset({4242})}
    both = desired_state([a, b], inventory, [on_gpu], pids)
    assert [s.model for s in both.specs] == ["a"], "a keeps its GPU; b does not fit beside it"
    only_b = desired_state([b], inventory, [on_gpu], pids)
    assert only_b.specs == () and "needs" in only_b.pending[0].reason, "a is leaving: its memory is taken"
    gone = desired_state([b], base, [], {})
    assert [s.model for s in gone.specs] == ["b"]


def test_a_model_that_left_the_manifests_leaves_the_scaling_rows() -> None:
    on_demand = wanting(DemandBoard(), a=ModelDemand(), b=ModelDemand())
    decided(on_demand, [model("a"), model("b")], [])
    assert set(on_demand.scaling) == {"a", "b"}
    decided(on_demand, [model("a")], [])
    assert set(on_demand.scaling) == {"a"}, "status would list b's on-demand row after its manifest went"
