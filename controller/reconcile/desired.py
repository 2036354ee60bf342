"""The desired state: which replica containers should exist, with which GPUs, and why the rest wait.

CPU replicas (num_gpus: 0) always have a spec. GPU replicas go through placement (pure, in
``controller.placement.place``) against the live inventory, keeping the devices running replicas already
own; what does not fit stays Pending with the placement's one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.engines import build_spec
from controller.errors import ModelctlError
from controller.manifests.loader import LoadedModel
from controller.placement.inventory import Inventory
from controller.placement.place import Current, place, requests_for
from controller.reconcile.status import ReplicaStatus
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec


@dataclass(frozen=True, slots=True)
class Desired:
    specs: list[ContainerSpec]
    pending: list[ReplicaStatus]


def desired_state(
    models: Sequence[LoadedModel],
    inventory: Inventory,
    observed: Sequence[ObservedContainer] = (),
    managed_pids: frozenset[int] = frozenset(),
    counts: Mapping[str, int] | None = None,
) -> Desired:
    """Specs for every replica that can run now; Pending rows (with reasons) for the others.
    ``counts`` is how many replicas each model should have now (the scaler's; default each
    manifest's min_count). ``managed_pids`` are the host PIDs of our replicas: their GPU memory is
    theirs, not foreign."""
    specs: list[ContainerSpec] = []
    pending: list[ReplicaStatus] = []
    by_name = {m.name: m for m in models}
    wanted = {m.name: m.manifest.min_count for m in models} | dict(counts or {})
    for model in models:
        if model.manifest.num_gpus == 0:
            for index in range(wanted[model.name]):
                add_spec(model, index, (), None, specs, pending)
    requests, unknown = requests_for([m for m in models if m.manifest.num_gpus], counts=wanted)
    assignments = {c.slot: c.gpus for c in observed if c.gpus and c.alive}
    current = Current(assignments=assignments, managed_pids=managed_pids)
    placement = place(requests, inventory, current)
    for a in placement.assignments:
        add_spec(by_name[a.model], a.replica, a.devices, a.gpu_memory_utilization, specs, pending)
    for p in (*unknown, *placement.pending):
        pending.append(ReplicaStatus(p.model, p.replica, "Pending", reason=p.reason))
    return Desired(specs, pending)


def add_spec(
    model: LoadedModel,
    index: int,
    gpus: tuple[str, ...],
    share: float | None,
    specs: list[ContainerSpec],
    pending: list[ReplicaStatus],
) -> None:
    try:
        specs.append(build_spec(model, index, gpus, share))
    except ModelctlError as exc:
        pending.append(ReplicaStatus(model.name, index, "Pending", reason=str(exc)))
