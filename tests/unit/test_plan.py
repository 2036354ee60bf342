"""The plan: desired specs vs observed containers, as a table."""

from __future__ import annotations

import pytest

from controller.plan import calculate_plan
from controller.runtime.docker import ObservedContainer
from controller.spec import ContainerSpec


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
        id=cid or f"{s.model}-{s.replica}-{s.spec_hash()}-{state}",
        name=s.container_name("default"),
        model=s.model,
        replica=s.replica,
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
A0_NEW = spec("a", 0, image="img:2")

CASES = {
    # name: (desired, observed, expected create, expected delete ids, expected kept)
    "nothing to do": ([], [], [], [], []),
    "fresh start creates all": ([A0, A1], [], [A0, A1], [], []),
    "running and matching is kept": ([A0], [seen(A0)], [], [], [A0]),
    "starting container is kept": ([A0], [seen(A0, "created")], [], [], [A0]),
    "exited container is replaced": ([A0], [seen(A0, "exited")], [A0], [seen(A0, "exited").id], []),
    "changed spec replaces": ([A0_NEW], [seen(A0)], [A0_NEW], [seen(A0).id], []),
    "scale down deletes the extra replica": ([A0], [seen(A0), seen(A1)], [], [seen(A1).id], [A0]),
    "removed model is deleted": ([A0], [seen(A0), seen(B0)], [], [seen(B0).id], [A0]),
    "duplicate of a slot is deleted": (
        [A0],
        [seen(A0, cid="x1"), seen(A0, cid="x2")],
        [],
        ["x2"],
        [A0],
    ),
}


@pytest.mark.parametrize(("desired", "observed", "create", "delete", "kept"), CASES.values(), ids=CASES)
def test_plan(desired, observed, create, delete, kept) -> None:  # type: ignore[no-untyped-def]
    plan = calculate_plan(desired, observed)
    assert plan.create == create
    assert [c.id for c in plan.delete] == delete
    assert [k.spec for k in plan.remain] == kept
    assert plan.changes == bool(create or delete)


def test_plan_is_idempotent_once_applied() -> None:
    desired = [A0, A1, B0]
    first = calculate_plan(desired, [])
    second = calculate_plan(desired, [seen(s) for s in first.create])
    assert not second.changes
