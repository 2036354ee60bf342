"""Balancer: least outstanding requests, ties in turn, exclusions, idempotent done."""

from __future__ import annotations

import pytest

from controller.endpoints import ModelEndpoints, Replica
from controller.gateway.balancer import Balancer


def model(*ids: str) -> ModelEndpoints:
    return ModelEndpoints("m", replicas=tuple(Replica(i, f"http://{i}") for i in ids))


def loaded(loads: dict[str, int]) -> Balancer:
    balancer = Balancer()
    for replica_id, count in loads.items():
        for _ in range(count):
            balancer.acquire(replica_id)
    return balancer


@pytest.mark.parametrize(
    ("replicas", "loads", "exclude", "expected"),
    [
        pytest.param(("a", "b"), {}, set(), "a", id="idle: first in table order"),
        pytest.param(("a", "b"), {"a": 2, "b": 1}, set(), "b", id="least outstanding"),
        pytest.param(("a", "b", "c"), {"a": 1, "b": 1}, set(), "c", id="only idle one"),
        pytest.param(("a", "b"), {"b": 3}, {"a"}, "b", id="excluded despite idle"),
        pytest.param(("a", "b"), {}, {"a", "b"}, None, id="all excluded"),
        pytest.param((), {}, set(), None, id="no replicas"),
        pytest.param(("a",), {"a": 9}, set(), "a", id="busy but the only one"),
    ],
)
def test_pick(
    replicas: tuple[str, ...], loads: dict[str, int], exclude: set[str], expected: str | None
) -> None:
    picked = loaded(loads).pick(model(*replicas), exclude)
    assert (picked.id if picked else None) == expected


@pytest.mark.parametrize(
    ("replicas", "loads", "expected"),
    [
        pytest.param(("a", "b"), {}, ["a", "b", "a", "b"], id="two alternate"),
        pytest.param(("a", "b", "c"), {}, ["a", "b", "c", "a"], id="three rotate"),
        pytest.param(("a", "b", "c"), {"b": 1}, ["a", "c", "a", "c"], id="busy one skipped"),
    ],
)
def test_sequential_requests_take_turns(
    replicas: tuple[str, ...], loads: dict[str, int], expected: list[str]
) -> None:
    balancer = loaded(loads)
    picks = []
    for _ in expected:
        replica = balancer.pick(model(*replicas))
        assert replica is not None
        balancer.acquire(replica.id)()  # one request, done before the next starts
        picks.append(replica.id)
    assert picks == expected


def test_concurrent_requests_spread_then_return() -> None:
    balancer = Balancer()
    m = model("a", "b")
    held = []
    for _ in range(4):
        replica = balancer.pick(m)
        assert replica is not None
        held.append(balancer.acquire(replica.id))
    assert (balancer.in_flight("a"), balancer.in_flight("b")) == (2, 2)
    for done in held:
        done()
    assert (balancer.in_flight("a"), balancer.in_flight("b")) == (0, 0)


def test_done_is_idempotent() -> None:
    balancer = Balancer()
    first = balancer.acquire("a")
    balancer.acquire("a")
    first()
    first()
    assert balancer.in_flight("a") == 1
