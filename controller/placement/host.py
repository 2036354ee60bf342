"""CPU replicas on the host: a memory budget they share, and the cores each one gets.

GPU replicas are placed against each GPU's memory (``place``); CPU replicas (``num_gpus: 0``) are
placed the same way against the host: each needs the memory the same estimate gives
(``memory.gpu_need``: weights + KV cache + overhead), and together they must fit the **CPU memory
budget** (what the host has available, plus what our running CPU replicas already hold, minus a
reserve; or a size the operator sets). What does not fit stays Pending with the reason, which is
what lets the reconciler evict an idle on-demand model to make room.

Cores: llama-server (and vLLM's CPU backend) start a compute thread per core, so two replicas on
one host fight over every core; measured here, two such replicas served less than one alone. So
each CPU replica gets a **disjoint set of cores** (a cpuset, with as many threads): running
replicas keep theirs, new ones split the cores nobody holds. When more replicas must run than there
are free cores (an on-demand model starting beside always-on ones), the new ones share the least
used cores evenly and the placement says the host is oversubscribed.

Pure functions over plain data, like ``place``; ``read_host`` is the one edge (/proc/meminfo).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controller.placement.memory import GiB

Slot = tuple[str, int]

DEFAULT_RESERVE = 1 * GiB  # left to the OS, the controller, the gateway and the page cache


@dataclass(frozen=True, slots=True)
class Host:
    """What CPU replicas may use: these cores, and this many bytes of memory together."""

    cores: tuple[int, ...]
    memory_budget: int
    budget_source: str = "set"  # how the budget was found, for reasons: "set" or "available"


@dataclass(frozen=True, slots=True)
class CpuRequest:
    """One CPU replica: the memory it needs, and whether modelctl picks its cores."""

    model: str
    replica: int
    memory: int
    pin: bool = True  # False: the manifest sets its own threads, so no cpuset either

    @property
    def slot(self) -> Slot:
        return (self.model, self.replica)


@dataclass(frozen=True, slots=True)
class CpuAssignment:
    model: str
    replica: int
    cpus: tuple[int, ...]  # empty: not pinned
    shared: bool = False  # its cores are also another replica's

    @property
    def slot(self) -> Slot:
        return (self.model, self.replica)


@dataclass(frozen=True, slots=True)
class CpuPending:
    model: str
    replica: int
    reason: str


@dataclass(frozen=True, slots=True)
class CpuPlacement:
    assignments: tuple[CpuAssignment, ...] = ()
    pending: tuple[CpuPending, ...] = ()
    used: int = 0  # bytes claimed of the budget
    oversubscribed: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def place_cpu(
    requests: Sequence[CpuRequest],
    host: Host,
    *,
    running: Mapping[Slot, tuple[int, ...]] | None = None,
    leaving: int = 0,
) -> CpuPlacement:
    """Place CPU replicas: memory against ``host.memory_budget``, cores from ``host.cores``.

    ``running`` maps the slots that run now to their cpusets: they keep them and always fit (they
    run already). ``leaving`` is memory still held by containers on their way out (draining):
    taken until they are gone. New replicas are placed in request order.
    """
    running = running or {}
    kept = [r for r in requests if r.slot in running]
    new = [r for r in requests if r.slot not in running]
    used = leaving + sum(r.memory for r in kept)
    fitting: list[CpuRequest] = []
    pending: list[CpuPending] = []
    for request in new:
        if used + request.memory > host.memory_budget:
            pending.append(CpuPending(request.model, request.replica, memory_reason(request, host, used)))
            continue
        used += request.memory
        fitting.append(request)
    assignments = [CpuAssignment(r.model, r.replica, running[r.slot] if r.pin else ()) for r in kept]
    fresh, shared = split_cores(host.cores, [a.cpus for a in assignments], sum(r.pin for r in fitting))
    chunks = iter(fresh)
    for request in fitting:
        assignments.append(
            CpuAssignment(request.model, request.replica, next(chunks) if request.pin else (), shared)
        )
    oversubscribed = shared or cores_shared(assignments)
    notes = (oversubscribed_note(host, assignments),) if oversubscribed else ()
    return CpuPlacement(tuple(assignments), tuple(pending), used, oversubscribed, notes)


def split_cores(
    cores: Sequence[int], held: Sequence[tuple[int, ...]], count: int
) -> tuple[list[tuple[int, ...]], bool]:
    """Core sets for ``count`` new replicas: disjoint chunks of the free cores when there are
    enough, else (shared = True) the least used cores, an even share each."""
    if count == 0:
        return [], False
    taken = {c for cpus in held for c in cpus}
    free = [c for c in sorted(cores) if c not in taken]
    if len(free) >= count:
        size, extra = divmod(len(free), count)
        chunks, start = [], 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            chunks.append(tuple(free[start:end]))
            start = end
        return chunks, False
    users = Counter(c for cpus in held for c in cpus)
    share = max(1, len(cores) // (len(held) + count))
    chunks = []
    for _ in range(count):
        chosen = tuple(sorted(sorted(cores, key=lambda c: (users[c], c))[:share]))
        users.update(chosen)
        chunks.append(chosen)
    return chunks, True


def cores_shared(assignments: Sequence[CpuAssignment]) -> bool:
    counts = Counter(c for a in assignments for c in a.cpus)
    return any(n > 1 for n in counts.values())


def oversubscribed_note(host: Host, assignments: Sequence[CpuAssignment]) -> str:
    pinned = sum(1 for a in assignments if a.cpus)
    return (
        f"host oversubscribed: {pinned} CPU replicas share {len(host.cores)} cores "
        "(more replicas than cores; each still gets an even share)"
    )


def memory_reason(request: CpuRequest, host: Host, used: int) -> str:
    free = max(host.memory_budget - used, 0)
    where = (
        "MODELCTL_CPU_MEMORY"
        if host.budget_source == "set"
        else "the host's available memory minus MODELCTL_CPU_MEMORY_RESERVE"
    )
    return (
        f"needs {gib(request.memory)} of host memory, {gib(free)} of the CPU budget "
        f"({gib(host.memory_budget)}, {where}) is free"
    )


def gib(value: int) -> str:
    return f"{value / GiB:.2f} GiB"


def read_host(
    *,
    budget: int | None,
    reserve: int = DEFAULT_RESERVE,
    ours: int = 0,
    meminfo: Path = Path("/proc/meminfo"),
) -> Host:
    """The host's cores (this process's affinity) and the CPU memory budget: ``budget`` when set,
    else MemAvailable + ``ours`` (what our running CPU replicas hold, counted as theirs) - reserve."""
    cores = tuple(sorted(os.sched_getaffinity(0)))
    if budget is not None:
        return Host(cores, budget, "set")
    available = mem_available(meminfo.read_text())
    return Host(cores, max(available + ours - reserve, 0), "available")


def mem_available(meminfo: str) -> int:
    """MemAvailable from /proc/meminfo's text, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemAvailable in /proc/meminfo")
