"""Decide once: from a snapshot of the world to what should happen, in one pure function.

Every reader that wants to know "what would happen" calls ``decide``: the reconcile pass (which
then executes the decision, ``loop``), the plan preview of ``/v1/plan`` and ``modelctl plan --diff``
(which reads it back as rows, ``preview``). Two copies of a decision would be two decisions.

``Snapshot`` holds what a pass read (manifests, the containers Docker lists, which answer their
health check and which drain, the GPUs, our GPU processes, the host's memory and cores, the
gateway's demand, what the scaler knows of each model's load, each slot's restart backoff, the
clock, the spec-hash key); ``decide`` runs the scaling rule per model (``scaling.scale``), places
the counts with room made by evicting idle on-demand models (``ondemand.make_room``), and compares
the result with what runs (``plan.calculate_plan``). Nothing in here reads Docker, NVML or a clock,
and nothing changes: the scaler learns the counts from the pass after it applied them
(``OnDemand.applied``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

from controller.endpoints.demand import ModelDemand
from controller.gpus.inventory import Inventory
from controller.manifests.model import LoadedModel
from controller.placement.host import Host
from controller.reconcile.desired import Desired, Slot, desired_state
from controller.reconcile.lifecycle import SlotFacts
from controller.reconcile.ondemand import Eviction, Room, make_room
from controller.reconcile.plan import Plan, calculate_plan
from controller.reconcile.scaling import Bounds, Load, scale
from controller.reconcile.status import ModelScaling
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

NOTHING: Mapping[str, ModelDemand] = MappingProxyType({})
MAPPINGS = ("pids", "demand", "loads", "slots")  # Snapshot's mapping fields, frozen on construction


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a decision is made from. A pass fills it from what it read; a preview takes the last
    pass's and swaps in other manifests (``models``, with the running ones as ``current``)."""

    models: tuple[LoadedModel, ...]  # the manifests to decide for
    observed: tuple[ObservedContainer, ...] = ()  # the managed containers, as listed
    inventory: Inventory = field(default_factory=Inventory)
    pids: Mapping[Slot, frozenset[int]] = field(default_factory=dict)  # our GPU processes by slot
    host: Host | None = None  # CPU replicas' memory budget and cores; None: unbounded, unpinned
    demand: Mapping[str, ModelDemand] | None = None  # the gateway's; None: unknown (no eviction)
    loads: Mapping[str, Load] = field(default_factory=dict)  # the scaler's view; absent: unseen
    ready: frozenset[str] = frozenset()  # IDs of containers answering their health check
    draining: frozenset[str] = frozenset()  # IDs of containers being drained
    gone: frozenset[str] = frozenset()  # IDs removed before deciding (crashed, stuck)
    slots: Mapping[Slot, SlotFacts] = field(default_factory=dict)  # restart backoff per slot
    now: float = 0.0  # the backoff clock (monotonic seconds), against ``SlotFacts.retry_at``
    hash_key: bytes = b""  # the specs' hash key (the runtime's)
    current: tuple[LoadedModel, ...] | None = None  # the manifests running now; None: ``models``

    def __post_init__(self) -> None:
        """The report publishes the snapshot: its mappings become read-only copies, whatever the
        caller passed (a dict it keeps filling cannot change a decision already made)."""
        for name in MAPPINGS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    @property
    def running_models(self) -> tuple[LoadedModel, ...]:
        return self.models if self.current is None else self.current

    @property
    def kept(self) -> tuple[ObservedContainer, ...]:
        """The containers still there when the decision is made (``gone`` ones removed)."""
        return tuple(c for c in self.observed if c.id not in self.gone)


@dataclass(frozen=True, slots=True)
class Decision:
    """What should happen: the desired replicas (specs placed, Pending rows with their reasons,
    notes about the host), the plan against what runs (create, delete, remain, waiting to roll),
    which creates may start now (their restart backoff passed), which containers serve, each
    model's count and why, and the evictions that count took."""

    desired: Desired
    plan: Plan
    starts: tuple[ContainerSpec, ...]
    serving: tuple[ObservedContainer, ...]  # kept, ready and not draining: the endpoint table's
    scaling: Mapping[str, ModelScaling]
    evictions: tuple[Eviction, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        return self.desired.notes

    @property
    def counts(self) -> dict[str, int]:
        return {name: s.desired for name, s in self.scaling.items()}

    def backing_off(self, slots: Mapping[Slot, SlotFacts]) -> dict[Slot, str]:
        """Slots the plan creates whose replica failed before, with its last failure."""
        created = ((s.model, s.replica) for s in self.plan.create)
        return {slot: slots[slot].reason for slot in created if slot in slots and slots[slot].failures}


def decide(snapshot: Snapshot) -> Decision:
    """The decision for ``snapshot``. Pure; raises nothing for a replica that cannot be placed or
    built (that is a Pending row with the reason)."""
    demand = snapshot.demand if snapshot.demand is not None else NOTHING
    scaling = {m.name: scaled(m, snapshot, demand) for m in snapshot.models}
    room = fit(snapshot, {name: s.desired for name, s in scaling.items()})
    evictions = tuple(
        Eviction(victim.name, victim.low, victim.priority, needy) for victim, needy in room.evicted
    )
    for e in evictions:
        if e.model in scaling:
            scaling[e.model] = ModelScaling.evicted(scaling[e.model], e.down_to, e.reason)
    plan = calculate_plan(room.desired.specs, snapshot.kept, snapshot.ready)
    starts = tuple(spec for spec in plan.create if may_start(snapshot, (spec.model, spec.replica)))
    serving = tuple(c for c in plan.remain if c.id in snapshot.ready and c.id not in snapshot.draining)
    return Decision(room.desired, plan, starts, serving, MappingProxyType(scaling), evictions)


def scaled(model: LoadedModel, snapshot: Snapshot, demand: Mapping[str, ModelDemand]) -> ModelScaling:
    """``model``'s count now, by the scaling rule over what the scaler knows of its load."""
    running = len({c.replica for c in snapshot.observed if c.model == model.name and c.alive})
    wanted = demand.get(model.name, ModelDemand())
    load = snapshot.loads.get(model.name, Load())
    return ModelScaling.of(model, scale(Bounds.of(model.manifest), load, wanted, running=running), wanted)


def fit(snapshot: Snapshot, counts: Mapping[str, int]) -> Room:
    """The desired state for ``counts``; with the gateway's demand known, room made by eviction."""
    place = partial(
        desired_state,
        snapshot.models,
        snapshot.inventory,
        snapshot.observed,
        snapshot.pids,
        host=snapshot.host,
        hash_key=snapshot.hash_key,
    )
    if snapshot.demand is None:
        return Room(place(counts=counts))
    return make_room(place, counts, snapshot.models, snapshot.observed, snapshot.demand)


def may_start(snapshot: Snapshot, slot: Slot) -> bool:
    """True when ``slot``'s restart backoff (if any) has passed at ``snapshot.now``."""
    facts = snapshot.slots.get(slot)
    return facts is None or snapshot.now >= facts.retry_at
