"""The plan: desired specs vs observed containers (and which are ready), as a table."""

from __future__ import annotations

import dataclasses

import pytest

from controller.reconcile.plan import calculate_plan
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec


def spec(model: str, replica: int, image: str = "img:1") -> ContainerSpec:
    return ContainerSpec(
        model=model,
        replica=replica,
        engine="llamacpp",
        image=image,
        command=("-m", "/m"),
        port=8080,
        health_path="/health",
        max_concurrency=2,
    )


def seen(s: ContainerSpec, state: str = "running", cid: str = "") -> ObservedContainer:
    return ObservedContainer(
        id=cid or f"{s.model}{s.replica}-{s.image}-{state}",
        name=s.container_name("default"),
        model=s.model,
        replica=s.replica,
        engine=s.engine,
        spec_hash=s.spec_hash(),
        state=state,
        exit_code=None,
        ip="172.18.0.2",
        port=8080,
        health_path="/health",
        max_concurrency=2,
        started_at="",
    )


A0, A1, B0 = spec("a", 0), spec("a", 1), spec("b", 0)
A0N, A1N = spec("a", 0, image="img:2"), spec("a", 1, image="img:2")
ALL_READY = frozenset({"a0-img:1-running", "a1-img:1-running", "b0-img:1-running"})
NEW0 = seen(A0N)

CASES = {
    # name: (desired, observed, ready ids, create, delete ids, remain ids, waiting)
    "nothing to do": ([], [], set(), [], [], [], []),
    "fresh start creates all at once": ([A0, A1], [], set(), [A0, A1], [], [], []),
    "running and matching is kept": ([A0], [seen(A0)], set(), [], [], ["a0-img:1-running"], []),
    "restarting container is kept": (
        [A0],
        [seen(A0, "restarting")],
        set(),
        [],
        [],
        ["a0-img:1-restarting"],
        [],
    ),
    "created but never started is replaced": (
        [A0],
        [seen(A0, "created")],
        set(),
        [A0],
        ["a0-img:1-created"],
        [],
        [],
    ),
    "exited container is replaced": (
        [A0],
        [seen(A0, "exited")],
        set(),
        [A0],
        ["a0-img:1-exited"],
        [],
        [],
    ),
    "changed spec: new starts beside the old, which keeps serving": (
        [A0N],
        [seen(A0)],
        ALL_READY,
        [A0N],
        [],
        ["a0-img:1-running"],
        [],
    ),
    "changed spec: old stays while the new one is not ready": (
        [A0N],
        [seen(A0), NEW0],
        ALL_READY,
        [],
        [],
        [NEW0.id, "a0-img:1-running"],
        [],
    ),
    "changed spec: old goes once the new one is ready": (
        [A0N],
        [seen(A0), NEW0],
        ALL_READY | {NEW0.id},
        [],
        ["a0-img:1-running"],
        [NEW0.id],
        [],
    ),
    "rolling: one replica of a model at a time": (
        [A0N, A1N],
        [seen(A0), seen(A1)],
        ALL_READY,
        [A0N],
        [],
        ["a0-img:1-running", "a1-img:1-running"],
        [A1N],
    ),
    "rolling: the next replica starts when the first is done": (
        [A0N, A1N],
        [NEW0, seen(A1)],
        ALL_READY | {NEW0.id},
        [A1N],
        [],
        [NEW0.id, "a1-img:1-running"],
        [],
    ),
    "scale down deletes the extra replica": (
        [A0],
        [seen(A0), seen(A1)],
        set(),
        [],
        ["a1-img:1-running"],
        ["a0-img:1-running"],
        [],
    ),
    "removed model is deleted": (
        [A0],
        [seen(A0), seen(B0)],
        set(),
        [],
        ["b0-img:1-running"],
        ["a0-img:1-running"],
        [],
    ),
    "duplicate of a slot is deleted": (
        [A0],
        [seen(A0, cid="x1"), seen(A0, cid="x2")],
        set(),
        [],
        ["x2"],
        ["x1"],
        [],
    ),
}


@pytest.mark.parametrize(
    ("desired", "observed", "ready", "create", "delete", "remain", "waiting"), CASES.values(), ids=CASES
)
def test_plan(desired, observed, ready, create, delete, remain, waiting) -> None:  # type: ignore[no-untyped-def]
    plan = calculate_plan(desired, observed, frozenset(ready))
    assert plan.create == tuple(create)
    assert [c.id for c in plan.delete] == delete
    assert [c.id for c in plan.remain] == remain
    assert plan.waiting == tuple(waiting)
    assert plan.changes == bool(create or delete)


def test_plan_is_idempotent_once_applied() -> None:
    desired = [A0, A1, B0]
    first = calculate_plan(desired, [])
    second = calculate_plan(desired, [seen(s) for s in first.create])
    assert not second.changes


def test_the_plan_cannot_change_once_calculated() -> None:
    """Decide once: what the pass executes, the status rows and the preview all read one plan."""
    plan = calculate_plan([A0, B0], [seen(A1)])
    assert (plan.create, [c.id for c in plan.delete]) == ((A0, B0), [seen(A1).id])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.create = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        plan.delete.append(seen(B0))  # type: ignore[attr-defined]
