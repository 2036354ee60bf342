"""The plan: desired replicas versus observed containers -> what to create, delete and keep.

A pure function over plain data, so every case is a row in a table test. The reconciler executes
the plan (deletes before creates) and computes it again on its next pass from what Docker reports:
nothing here remembers anything.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from controller.runtime.docker import ObservedContainer
from controller.spec import ContainerSpec

# Docker states in which a container is (or is about to be) serving; anything else is replaced.
ALIVE_STATES = frozenset({"created", "running", "restarting"})


@dataclass(frozen=True, slots=True)
class Kept:
    """A desired replica whose container is already there with the same spec."""

    spec: ContainerSpec
    container: ObservedContainer


@dataclass(slots=True)
class Plan:
    create: list[ContainerSpec] = field(default_factory=list)
    delete: list[ObservedContainer] = field(default_factory=list)
    remain: list[Kept] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.create or self.delete)


def calculate_plan(desired: list[ContainerSpec], observed: list[ObservedContainer]) -> Plan:
    """Compare by (model, replica): a live container with the spec's hash is kept, everything else
    for that slot is deleted, and a slot without one is created. Containers of models or replica
    indexes no longer desired are deleted. Returns the plan; raises nothing.
    """
    by_slot: dict[tuple[str, int], list[ObservedContainer]] = defaultdict(list)
    for container in observed:
        by_slot[(container.model, container.replica)].append(container)
    plan = Plan()
    for spec in desired:
        containers = by_slot.pop((spec.model, spec.replica), [])
        keep = next((c for c in containers if matches(spec, c)), None)
        plan.delete.extend(c for c in containers if c is not keep)
        if keep is None:
            plan.create.append(spec)
        else:
            plan.remain.append(Kept(spec, keep))
    for leftovers in by_slot.values():
        plan.delete.extend(leftovers)
    return plan


def matches(spec: ContainerSpec, container: ObservedContainer) -> bool:
    return container.spec_hash == spec.spec_hash() and container.state in ALIVE_STATES
