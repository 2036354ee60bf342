"""CPU replicas on the host: the memory budget they share and the disjoint cores they get."""

from __future__ import annotations

import pytest

from controller.placement.host import CpuRequest, Host, mem_available, place_cpu, read_host, split_cores
from controller.placement.memory import GiB


def req(model: str, replica: int, gib: float = 1, pin: bool = True) -> CpuRequest:
    return CpuRequest(model, replica, int(gib * GiB), pin)


@pytest.mark.parametrize(
    ("cores", "held", "count", "chunks", "shared"),
    [
        ((0, 1), [], 2, [(0,), (1,)], False),  # the example stack: one core each
        ((0, 1, 2, 3), [], 3, [(0, 1), (2,), (3,)], False),
        ((0, 1, 2, 3), [(0, 1)], 2, [(2,), (3,)], False),  # running replicas keep theirs
        ((0, 1), [(0,), (1,)], 1, [(0,)], True),  # no free core: share the least used, say so
        ((0, 1, 2, 3), [(0, 1), (2, 3)], 2, [(0,), (1,)], True),
        ((0, 1), [], 0, [], False),
    ],
)
def test_split_cores(
    cores: tuple[int, ...],
    held: list[tuple[int, ...]],
    count: int,
    chunks: list[tuple[int, ...]],
    shared: bool,
) -> None:
    assert split_cores(cores, held, count) == (chunks, shared)


def test_new_replicas_fit_the_budget_beside_running_and_leaving_ones() -> None:
    host = Host(cores=(0, 1), memory_budget=3 * GiB)
    placed = place_cpu(
        [req("a", 0), req("b", 0), req("c", 0)], host, running={("a", 0): (0,)}, leaving=1 * GiB
    )
    assert [(a.model, a.cpus) for a in placed.assignments] == [("a", (0,)), ("b", (1,))]
    assert [p.model for p in placed.pending] == ["c"]
    assert "needs 1.00 GiB of host memory, 0.00 GiB of the CPU budget (3.00 GiB" in placed.pending[0].reason
    assert placed.used == 3 * GiB and not placed.oversubscribed


def test_running_replicas_always_fit_even_when_the_budget_shrank() -> None:
    placed = place_cpu([req("a", 0, 5)], Host((0,), 1 * GiB), running={("a", 0): (0,)})
    assert [a.model for a in placed.assignments] == ["a"] and not placed.pending


def test_more_replicas_than_cores_share_evenly_and_say_the_host_is_oversubscribed() -> None:
    placed = place_cpu([req("a", 0), req("a", 1), req("b", 0)], Host((0, 1), 10 * GiB))
    cpus = [a.cpus for a in placed.assignments]
    assert all(len(c) == 1 for c in cpus) and {c for cs in cpus for c in cs} == {0, 1}
    assert placed.oversubscribed and "3 CPU replicas share 2 cores" in placed.notes[0]


def test_a_replica_that_sets_its_own_threads_is_not_pinned_and_takes_no_cores() -> None:
    placed = place_cpu([req("a", 0, pin=False), req("b", 0)], Host((0, 1), 10 * GiB))
    assert [(a.model, a.cpus) for a in placed.assignments] == [("a", ()), ("b", (0, 1))]


def test_the_budget_follows_the_host_unless_set(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    8388608 kB\n")
    assert mem_available(meminfo.read_text()) == 8 * GiB
    host = read_host(budget=None, reserve=1 * GiB, ours=2 * GiB, meminfo=meminfo)
    assert host.memory_budget == 9 * GiB and host.budget_source == "available" and host.cores
    assert read_host(budget=3 * GiB, meminfo=meminfo).memory_budget == 3 * GiB
