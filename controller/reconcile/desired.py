"""The desired state: which replica containers should exist, with which GPUs, and why the rest wait.

Each model gets the count the scaler chose (default its min_count). GPU replicas go through
placement (pure, ``controller.placement.place``) against the live inventory, keeping the devices
running replicas already own; CPU replicas (num_gpus: 0) through ``controller.placement.host``
against the host's memory budget and cores, keeping the cores running replicas hold. What does not
fit stays Pending with the placement's one-line reason, and is marked ``short`` (of memory) so the
reconciler can evict idle on-demand replicas for it.

Every spec carries the controller's ``hash_key``, so that the hashes compared with the running
containers' labels (and put on new ones) are keyed (``runtime.spec``: names show no secret).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from controller.engines import build_spec, sets_own_threads
from controller.errors import ModelctlError
from controller.gpus.inventory import Inventory
from controller.manifests.model import LoadedModel
from controller.placement.host import CpuRequest, Host, place_cpu
from controller.placement.memory import cpu_need
from controller.placement.place import Current, place, requests_for
from controller.reconcile.states import ReplicaState
from controller.reconcile.status import ReplicaStatus
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

Slot = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Desired:
    """Decided once, then only read: ``desired_state`` builds it in lists and hands it over frozen."""

    specs: tuple[ContainerSpec, ...]
    pending: tuple[ReplicaStatus, ...]
    short: frozenset[Slot] = frozenset()  # Pending because memory (GPU or host) is short
    notes: tuple[str, ...] = ()  # about the whole host, e.g. oversubscribed cores


def desired_state(
    models: Sequence[LoadedModel],
    inventory: Inventory,
    observed: Sequence[ObservedContainer] = (),
    managed_pids: Mapping[Slot, frozenset[int]] | None = None,
    counts: Mapping[str, int] | None = None,
    host: Host | None = None,
    hash_key: bytes = b"",
) -> Desired:
    """Specs for every replica that can run now; Pending rows (with reasons) for the others.
    ``counts`` is how many replicas each model should have now (the scaler's; default each
    manifest's min_count). ``managed_pids`` are the host PIDs of our GPU replicas by slot: the
    memory of those still wanted is theirs, not foreign; that of replicas going away (scaled
    down, evicted, removed from the manifests) counts as taken until they are gone. ``host``:
    place CPU replicas against its memory budget and cores (None: unbounded and unpinned).
    ``hash_key``: the key of the specs' hashes (the runtime's, ``runtime.speckey``)."""
    specs: list[ContainerSpec] = []
    pending: list[ReplicaStatus] = []
    by_name = {m.name: m for m in models}
    wanted = {m.name: m.manifest.min_count for m in models} | dict(counts or {})
    cpu_models = [m for m in models if m.manifest.num_gpus == 0]
    short: set[Slot] = set()
    notes: tuple[str, ...] = ()
    if host is None:
        for model in cpu_models:
            for index in range(wanted[model.name]):
                add_spec(model, index, (), None, specs, pending)
    else:
        notes = cpu_replicas(cpu_models, wanted, host, observed, specs, pending, short)
    requests, unknown = requests_for([m for m in models if m.manifest.num_gpus], counts=wanted)
    assignments = {c.slot: c.gpus for c in observed if c.gpus and c.alive}
    asked = {r.slot for r in requests}
    staying = frozenset(pid for slot, pids in (managed_pids or {}).items() if slot in asked for pid in pids)
    current = Current(assignments=assignments, managed_pids=staying)
    placement = place(requests, inventory, current)
    for a in placement.assignments:
        add_spec(by_name[a.model], a.replica, a.devices, a.gpu_memory_utilization, specs, pending)
    for p in (*unknown, *placement.pending):
        pending.append(ReplicaStatus(p.model, p.replica, ReplicaState.PENDING, reason=p.reason))
    short.update(p.slot for p in placement.pending)
    keyed = tuple(replace(spec, hash_key=hash_key) for spec in specs)
    return Desired(keyed, tuple(pending), frozenset(short), notes)


def cpu_replicas(
    models: Sequence[LoadedModel],
    wanted: Mapping[str, int],
    host: Host,
    observed: Sequence[ObservedContainer],
    specs: list[ContainerSpec],
    pending: list[ReplicaStatus],
    short: set[Slot],
) -> tuple[str, ...]:
    """Place the CPU replicas against the host (memory budget, cores) and add their specs; returns
    notes about the host (oversubscribed cores)."""
    by_name = {m.name: m for m in models}
    needs: dict[str, int] = {}
    requests: list[CpuRequest] = []
    for model in models:
        try:
            needs[model.name] = cpu_need(model)
        except (ModelctlError, ValueError) as exc:
            pending.extend(
                ReplicaStatus(model.name, i, ReplicaState.PENDING, reason=str(exc))
                for i in range(wanted[model.name])
            )
            continue
        pin = not sets_own_threads(model)
        requests.extend(CpuRequest(model.name, i, needs[model.name], pin) for i in range(wanted[model.name]))
    asked = {r.slot for r in requests}
    alive = [c for c in observed if not c.gpus and c.alive]
    running = {c.slot: c.cpus for c in alive if c.slot in asked}
    leaving = sum(needs.get(c.model, 0) for c in alive if c.slot not in asked)
    placed = place_cpu(requests, host, running=running, leaving=leaving)
    for a in placed.assignments:
        add_spec(by_name[a.model], a.replica, (), None, specs, pending, cpus=a.cpus)
    for p in placed.pending:
        pending.append(ReplicaStatus(p.model, p.replica, ReplicaState.PENDING, reason=p.reason))
        short.add((p.model, p.replica))
    return placed.notes


def add_spec(
    model: LoadedModel,
    index: int,
    gpus: tuple[str, ...],
    share: float | None,
    specs: list[ContainerSpec],
    pending: list[ReplicaStatus],
    *,
    cpus: tuple[int, ...] = (),
) -> None:
    try:
        specs.append(build_spec(model, index, gpus, share, cpus=cpus))
    except ModelctlError as exc:
        pending.append(ReplicaStatus(model.name, index, ReplicaState.PENDING, reason=str(exc)))
