"""``decide``: one pure function from a snapshot to a decision, the one the pass executes and the
plan preview reads back. Tables over plain snapshots; the pass-level cases run the real loop over
the fakes of test_events."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from controller.endpoints.demand import DemandReport, ModelDemand
from controller.engines import build_spec
from controller.placement.host import Host
from controller.placement.memory import GiB
from controller.reconcile.decide import Snapshot, decide
from controller.reconcile.demand import DemandBoard
from controller.reconcile.lifecycle import SlotFacts
from controller.reconcile.ondemand import OnDemand
from controller.reconcile.preview import rows
from controller.reconcile.scaling import Load, Scaler
from tests.reconcile.test_events import stack
from tests.reconcile.test_preview import NO_GPUS, model, seen

A = model("a")
LAZY = model("d", min_replicas=0, max_replicas=3)
SMALL = Host(cores=(0, 1), memory_budget=int(1.5 * GiB))  # room for one 1 GiB model


def test_a_crashed_slot_is_created_only_once_its_backoff_has_passed() -> None:
    crashed = {("a", 0): SlotFacts(failures=1, retry_at=10.0, reason="exited 1")}
    waiting = decide(Snapshot((A,), slots=crashed, now=9.0))
    assert [s.model for s in waiting.plan.create] == ["a"] and waiting.starts == ()
    assert waiting.backing_off(crashed) == {("a", 0): "exited 1"}
    due = decide(Snapshot((A,), slots=crashed, now=10.0))
    assert [s.model for s in due.starts] == ["a"]


def test_serving_is_ready_kept_and_not_draining() -> None:
    running = seen(build_spec(A, 0))
    both = Snapshot((A,), observed=(running,), ready=frozenset({running.id}))
    assert decide(both).serving == (running,)
    assert decide(dataclasses.replace(both, draining=frozenset({running.id}))).serving == ()
    assert decide(dataclasses.replace(both, ready=frozenset())).serving == ()


def test_a_container_removed_before_deciding_is_not_planned_around() -> None:
    """A stuck container the pass replaced (``gone``) still holds its slot's placement (what was
    listed), but the plan creates its successor."""
    stuck = seen(build_spec(A, 0))
    kept = decide(Snapshot((A,), observed=(stuck,)))
    assert kept.plan.remain == (stuck,) and kept.plan.create == ()
    replaced = decide(Snapshot((A,), observed=(stuck,), gone=frozenset({stuck.id})))
    assert replaced.plan.remain == () and [s.model for s in replaced.plan.create] == ["a"]


@pytest.mark.parametrize(
    ("load", "demand", "running", "count", "reason"),
    [
        (Load(count=0), ModelDemand(), 0, 0, "idle for 0s: scaled to zero"),
        (Load(count=0), ModelDemand(waiting=2), 0, 1, "2 request(s) waiting: starting"),
        (Load(), ModelDemand(), 2, 2, "steady"),  # unseen: starts from what runs
        (Load(count=1, full_window=True, idle_s=999), ModelDemand(), 1, 0, "idle for 999s"),
        (Load(count=1, average=5, peak=5, full_window=True), ModelDemand(in_flight=5), 1, 3, "load 5.0"),
    ],
)
def test_scaling_is_the_rule_over_what_the_scaler_knows(
    load: Load, demand: ModelDemand, running: int, count: int, reason: str
) -> None:
    observed = tuple(seen(build_spec(LAZY, i)) for i in range(running))
    decision = decide(Snapshot((LAZY,), observed=observed, demand={"d": demand}, loads={"d": load}))
    assert decision.counts == {"d": count} and decision.scaling["d"].reason.startswith(reason)


def test_a_raised_min_replicas_is_honoured_whatever_the_scaler_held() -> None:
    """The scaler held 0 under min_replicas 0; the manifest now says 1 to 3."""
    raised = model("d", min_replicas=1, max_replicas=3)
    assert decide(Snapshot((raised,), demand={}, loads={"d": Load(count=0)})).counts == {"d": 1}


def test_deciding_changes_nothing_and_applying_tells_the_scaler() -> None:
    """An eviction in the decision: the scaler and the counters change only when the pass applies."""
    a, b = (model(n, gpu_memory="1GiB", min_replicas=0, max_replicas=1) for n in ("a", "b"))
    board = DemandBoard()
    board.record(DemandReport("gw", {"a": ModelDemand(last_active=1.0), "b": ModelDemand(waiting=1)}))
    on_demand = OnDemand(demand=board, scaler=Scaler())
    demand = board.current()
    loads = on_demand.loads([a, b], demand)
    inputs = {
        "observed": (seen(build_spec(a, 0, cpus=(0,))),),
        "host": SMALL,
        "demand": demand,
        "loads": loads,
    }
    snapshot = Snapshot((a, b), **inputs)  # type: ignore[arg-type]
    before = Snapshot(copy.deepcopy((a, b)), **copy.deepcopy(inputs))  # type: ignore[arg-type]
    decision = decide(snapshot)
    assert [(e.model, e.for_model) for e in decision.evictions] == [("a", "b")]
    assert decision.scaling["a"].reason == "evicted for b" and decision.counts == {"a": 0, "b": 1}
    assert decide(snapshot) == decision and snapshot == before  # pure: again the same, input intact
    assert on_demand.evictions == 0 and on_demand.scaling == {}
    assert on_demand.views([a], demand)["a"].count is None  # the scaler holds nothing yet
    on_demand.applied(decision.scaling, decision.evictions)
    assert on_demand.evictions == 1 and on_demand.scaling["a"].reason == "evicted for b"
    assert on_demand.views([a], demand)["a"].count == 0


async def test_the_preview_of_the_running_manifests_is_what_the_pass_decided() -> None:
    """``/v1/plan`` of the watched folder re-decides the last pass's snapshot: no changes once
    it settled, and the pass's own counts."""
    s = stack([model("smol", replicas=2)])
    await s.passes(1)
    for container in s.runtime.containers:
        s.prober.mark(container)
    await s.passes(2)
    report = s.reconciler.reports.current()
    assert report.snapshot is not None and report.passes == 3
    again = decide(report.snapshot)
    assert again.counts == {"smol": 2} and not again.plan.changes
    assert not rows(report.snapshot, again).changes
    posted = dataclasses.replace(report.snapshot, models=(model("smol", replicas=3),), current=None)
    assert [r.line for r in rows(posted, decide(posted)).rows][-1] == "+ create smol-2"


def test_without_demand_nothing_is_evicted() -> None:
    a, b = (model(n, gpu_memory="1GiB", min_replicas=0, max_replicas=1) for n in ("a", "b"))
    observed = (seen(build_spec(a, 0, cpus=(0,))),)
    loads = {"a": Load(count=1), "b": Load(count=1)}
    blind = decide(Snapshot((a, b), observed=observed, host=SMALL, loads=loads, inventory=NO_GPUS))
    assert blind.evictions == () and [p.model for p in blind.desired.pending] == ["b"]


def test_the_decision_holds_nothing_that_can_change() -> None:
    """Decide once: the decision, its plan and its desired state hold tuples, frozen sets and
    read-only mappings, so the pass, the report and the preview all read the one decided."""
    a, b = (model(n, gpu_memory="1GiB", min_replicas=0, max_replicas=1) for n in ("a", "b"))
    observed = (seen(build_spec(a, 0, cpus=(0,))),)
    loads = {"a": Load(count=1), "b": Load(count=1)}
    snapshot = Snapshot((a, b), observed=observed, host=SMALL, loads=loads, inventory=NO_GPUS)
    decision = decide(snapshot)
    assert decision.desired.specs and decision.desired.pending and decision.plan.remain
    for part in (snapshot, decision, decision.plan, decision.desired):
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            assert not isinstance(value, list | dict | set), f"{type(part).__name__}.{f.name}"
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(part, f.name, value)


def test_a_snapshot_keeps_what_it_was_given() -> None:
    """The report publishes the pass's snapshot: a mapping its caller goes on filling does not
    reach it, and a reader cannot write into it."""
    loads = {"a": Load(count=1)}
    snapshot = Snapshot((A,), loads=loads)
    loads["a"] = Load(count=3)
    assert snapshot.loads == {"a": Load(count=1)}
    with pytest.raises(TypeError):
        snapshot.loads["a"] = Load(count=3)  # type: ignore[index]
