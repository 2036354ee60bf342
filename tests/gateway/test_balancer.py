"""Balancer: relative least-outstanding, round robin, bounded-load prefix affinity, capacity, done."""

from __future__ import annotations

from collections import Counter

import pytest

from controller.endpoints.table import ModelEndpoints, Replica
from controller.gateway.admission.balancer import LEAST_OUTSTANDING, PREFIX_AFFINITY, ROUND_ROBIN, Balancer
from controller.gateway.admission.hashring import HashRing, hash64


def model(*ids: str, cap: int = 16, balancing: str = LEAST_OUTSTANDING, **caps: int) -> ModelEndpoints:
    replicas = tuple(Replica(i, f"http://{i}", caps.get(i, cap)) for i in ids)
    return ModelEndpoints("m", replicas=replicas, balancing=balancing)


def loaded(loads: dict[str, int], **options: float) -> Balancer:
    balancer = Balancer(**options)  # type: ignore[arg-type]
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
        pytest.param(("a", "b"), {"a": 16, "b": 15}, set(), "b", id="full one skipped"),
        pytest.param(("a", "b"), {"a": 16, "b": 16}, set(), None, id="all full"),
        pytest.param(("a", "b"), {"b": 16}, {"a"}, None, id="left one full"),
    ],
)
def test_pick(
    replicas: tuple[str, ...], loads: dict[str, int], exclude: set[str], expected: str | None
) -> None:
    picked = loaded(loads).pick(model(*replicas), exclude)
    assert (picked.id if picked else None) == expected


@pytest.mark.parametrize(
    ("caps", "loads", "expected"),
    [
        pytest.param({"a": 8, "b": 2}, {"a": 3, "b": 1}, "a", id="3/8 under 1/2"),
        pytest.param({"a": 8, "b": 2}, {"a": 4, "b": 1}, "a", id="4/8 ties 1/2: turn order"),
        pytest.param({"a": 8, "b": 2}, {"a": 5, "b": 1}, "b", id="5/8 over 1/2"),
        pytest.param({"a": 1, "b": 4}, {"b": 3}, "a", id="idle small one first"),
        pytest.param({"a": 1, "b": 4}, {"a": 1, "b": 3}, "b", id="small one full"),
    ],
)
def test_least_outstanding_is_relative_to_capacity(
    caps: dict[str, int], loads: dict[str, int], expected: str
) -> None:
    picked = loaded(loads).pick(model("a", "b", **caps))
    assert picked is not None and picked.id == expected


@pytest.mark.parametrize(
    ("replicas", "loads", "balancing", "expected"),
    [
        pytest.param(("a", "b"), {}, LEAST_OUTSTANDING, ["a", "b", "a", "b"], id="two alternate"),
        pytest.param(("a", "b", "c"), {}, LEAST_OUTSTANDING, ["a", "b", "c", "a"], id="three rotate"),
        pytest.param(("a", "b", "c"), {"b": 1}, LEAST_OUTSTANDING, ["a", "c", "a", "c"], id="busy skipped"),
        pytest.param(("a", "b", "c"), {"b": 1}, ROUND_ROBIN, ["a", "b", "c", "a"], id="rr ignores load"),
        pytest.param(("a", "b", "c"), {"b": 16}, ROUND_ROBIN, ["a", "c", "a", "c"], id="rr skips full"),
        pytest.param(("a", "b"), {}, PREFIX_AFFINITY, ["a", "b", "a", "b"], id="no key: least outstanding"),
    ],
)
def test_sequential_requests_take_turns(
    replicas: tuple[str, ...], loads: dict[str, int], balancing: str, expected: list[str]
) -> None:
    balancer = loaded(loads)
    picks = []
    for _ in expected:
        replica = balancer.pick(model(*replicas, balancing=balancing))
        assert replica is not None
        balancer.acquire(replica.id)()  # one request, done before the next starts
        picks.append(replica.id)
    assert picks == expected


def test_round_robin_spreads_concurrent_requests_evenly_whatever_the_load() -> None:
    balancer = Balancer()
    m = model("a", "b", "c", balancing=ROUND_ROBIN)
    picks = []
    for _ in range(9):
        replica = balancer.pick(m)
        assert replica is not None
        balancer.acquire(replica.id)
        picks.append(replica.id)
    assert Counter(picks) == {"a": 3, "b": 3, "c": 3}


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


# Prefix affinity: bounded-load consistent hashing.

AFFINE = ("r0", "r1", "r2", "r3")


def home(key: int, ids: tuple[str, ...] = AFFINE) -> list[str]:
    """The replicas in the order the ring offers them to ``key``."""
    return list(HashRing(ids).walk(key))


def test_the_same_key_returns_to_the_same_replica_while_it_is_not_overloaded() -> None:
    balancer = Balancer()
    m = model(*AFFINE, balancing=PREFIX_AFFINITY)
    key = hash64(b"conversation 1")
    picks = set()
    for _ in range(10):  # sequential turns of one conversation
        replica = balancer.pick(m, key=key)
        assert replica is not None
        balancer.acquire(replica.id)()
        picks.add(replica.id)
    assert picks == {home(key)[0]}


def test_different_keys_spread_over_the_replicas() -> None:
    balancer = Balancer()
    m = model(*AFFINE, balancing=PREFIX_AFFINITY)
    homes = Counter()
    for i in range(400):
        replica = balancer.pick(m, key=hash64(f"conversation {i}".encode()))
        assert replica is not None
        homes[replica.id] += 1
    assert set(homes) == set(AFFINE)
    assert min(homes.values()) > 400 / len(AFFINE) / 2, homes


@pytest.mark.parametrize(
    ("home_load", "others_load", "stays"),
    [
        # Four replicas of 16: bound = max(ceil(1.25 * (total + 1) * 16 / 64), 8); home if load < bound.
        pytest.param(0, 0, True, id="total 0: bound 8 (half the slots) > 0"),
        pytest.param(1, 0, True, id="total 1: share 1, but half the slots free: stays"),
        pytest.param(7, 0, True, id="total 7: share 3, floor 8 > 7"),
        pytest.param(8, 0, False, id="total 8: share 3, floor 8, not > 8"),
        pytest.param(8, 8, True, id="total 32: share ceil(10.3)=11 > 8"),
        pytest.param(10, 6, False, id="total 28: share ceil(9.06)=10 > floor 8, not > 10"),
        pytest.param(9, 7, True, id="total 30: share ceil(9.69)=10 > 9"),
        pytest.param(15, 15, True, id="total 60: share ceil(19.06)=20 > 15"),
        pytest.param(16, 15, False, id="home full: the hard limit"),
    ],
)
def test_home_is_left_only_above_its_bounded_share(home_load: int, others_load: int, stays: bool) -> None:
    key = hash64(b"conversation 7")
    order = home(key)
    balancer = loaded({order[0]: home_load, **dict.fromkeys(order[1:], others_load)})
    picked = balancer.pick(model(*AFFINE, balancing=PREFIX_AFFINITY), key=key)
    assert picked is not None
    assert picked.id == (order[0] if stays else order[1]), "overflow goes to the next replica clockwise"


def test_overflow_goes_clockwise_and_never_past_the_hard_limit() -> None:
    balancer = Balancer()
    m = model(*AFFINE, cap=2, balancing=PREFIX_AFFINITY)
    key = hash64(b"one hot conversation")
    picks = []
    for _ in range(8):
        replica = balancer.pick(m, key=key)
        assert replica is not None
        balancer.acquire(replica.id)
        picks.append(replica.id)
    assert Counter(picks) == dict.fromkeys(AFFINE, 2)
    assert balancer.pick(m, key=key) is None  # all full: the caller queues


def test_excluded_home_moves_to_the_next_replica_clockwise() -> None:
    key = hash64(b"conversation 3")
    order = home(key)
    picked = Balancer().pick(model(*AFFINE, balancing=PREFIX_AFFINITY), exclude={order[0]}, key=key)
    assert picked is not None and picked.id == order[1]


def test_adding_a_replica_moves_few_conversations() -> None:
    keys = [hash64(f"c{i}".encode()) for i in range(1000)]
    before = {k: home(k, AFFINE)[0] for k in keys}
    after = {k: home(k, (*AFFINE, "r4"))[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "r4" for k in moved), "a key only ever moves to the new replica"
    assert len(moved) < 1000 * 0.35  # about 1/5 expected


def test_bad_load_factor_is_rejected() -> None:
    with pytest.raises(ValueError, match="load_factor"):
        Balancer(load_factor=0.9)


def test_adapters_settle_one_per_replica_so_each_batches_its_own() -> None:
    """Two adapters alternating over two replicas of 2 slots: without groups least-outstanding
    puts both adapters on each replica (llama.cpp then runs them in separate passes)."""
    balancer = Balancer()
    m = model("r0", "r1", cap=2)
    placed: dict[str, list[str]] = {"r0": [], "r1": []}
    for group in ("sea", "sky", "sky", "sea"):
        replica = balancer.pick(m, group=group)
        assert replica is not None
        balancer.acquire(replica.id, group)
        placed[replica.id].append(group)
    assert sorted(placed.values()) == [["sea", "sea"], ["sky", "sky"]]


def test_a_group_takes_a_mixing_replica_rather_than_wait() -> None:
    balancer = Balancer()
    m = model("r0", "r1", cap=2)
    balancer.acquire("r0", "sea")
    balancer.acquire("r1", "sky")
    balancer.acquire("r1", "sky")  # r1 full
    replica = balancer.pick(m, group="sky")
    assert replica is not None and replica.id == "r0"


def test_a_group_ends_with_its_last_request() -> None:
    balancer = Balancer()
    m = model("r0", "r1", cap=4)
    done = balancer.acquire("r0", "sea")
    balancer.acquire("r1", "sky")
    balancer.acquire("r1", "sky")
    assert balancer.pick(m, group="sky").id == "r1"  # type: ignore[union-attr]
    done()
    done()  # idempotent: counts never go below zero
    assert balancer.pick(m, group="sky").id == "r0"  # type: ignore[union-attr]  # r0 idle, less loaded


def test_without_groups_least_outstanding_is_unchanged() -> None:
    balancer = Balancer()
    m = model("r0", "r1", cap=2)
    balancer.acquire("r0", "sea")
    assert balancer.pick(m).id == "r1"  # type: ignore[union-attr]
