"""The plan: desired replicas versus observed containers -> what to create, delete and keep.

A pure function over plain data, so every case is a row in a table test. The reconciler executes
the plan and computes it again on its next pass from what Docker reports: nothing here remembers.

Changed specs roll one replica of a model at a time: the new container starts beside the old one,
the old one keeps serving until the new one is ready, and only then is the old one deleted
(the reconciler drains it first). A model without any old container starts all replicas at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

Slot = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to create, delete and keep: decided once, then only read (by the pass, the status
    rows and the preview)."""

    create: tuple[ContainerSpec, ...] = ()
    delete: tuple[ObservedContainer, ...] = ()  # drained, then removed
    remain: tuple[ObservedContainer, ...] = ()  # kept (serving or starting)
    waiting: tuple[ContainerSpec, ...] = ()  # rolls after an earlier replica

    @property
    def changes(self) -> bool:
        return bool(self.create or self.delete)


@dataclass(slots=True)
class Draft:
    """The plan while ``calculate_plan`` fills it, slot by slot; ``freeze`` makes the ``Plan``."""

    create: list[ContainerSpec] = field(default_factory=list)
    delete: list[ObservedContainer] = field(default_factory=list)
    remain: list[ObservedContainer] = field(default_factory=list)
    waiting: list[ContainerSpec] = field(default_factory=list)

    def freeze(self) -> Plan:
        return Plan(tuple(self.create), tuple(self.delete), tuple(self.remain), tuple(self.waiting))


def calculate_plan(
    desired: Sequence[ContainerSpec],
    observed: Sequence[ObservedContainer],
    ready: frozenset[str] = frozenset(),
) -> Plan:
    """Compare by slot (model, replica index). ``ready`` holds the IDs of containers whose engine
    answers its health check. Returns the plan; raises nothing.
    """
    by_slot: dict[Slot, list[ObservedContainer]] = defaultdict(list)
    for container in observed:
        by_slot[container.slot].append(container)
    plan = Draft()
    rolling: set[str] = set()  # models with a replica mid-roll: the next ones wait
    for spec in sorted(desired, key=lambda s: (s.model, s.replica)):
        containers = by_slot.pop((spec.model, spec.replica), [])
        plan.delete.extend(c for c in containers if not c.alive)
        plan_slot(spec, [c for c in containers if c.alive], ready, rolling, plan)
    for leftovers in by_slot.values():
        plan.delete.extend(leftovers)
    return plan.freeze()


def plan_slot(
    spec: ContainerSpec,
    alive: list[ObservedContainer],
    ready: frozenset[str],
    rolling: set[str],
    plan: Draft,
) -> None:
    """Decide one slot: keep the current container, roll from outdated ones, or create (into ``plan``)."""
    spec_hash = spec.spec_hash()
    current = [c for c in alive if c.spec_hash == spec_hash]
    outdated = [c for c in alive if c.spec_hash != spec_hash]
    if current:
        keep, *extra = current
        plan.remain.append(keep)
        plan.delete.extend(extra)
        if keep.id in ready or not outdated:
            plan.delete.extend(outdated)
        else:
            plan.remain.extend(outdated)  # the old one serves until the new one is ready
            rolling.add(spec.model)
    elif outdated and spec.model in rolling:
        plan.remain.extend(outdated)
        plan.waiting.append(spec)
    else:
        plan.create.append(spec)
        plan.remain.extend(outdated)
        if outdated:
            rolling.add(spec.model)
