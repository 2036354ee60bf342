"""Models on demand, as the reconciler runs them: the demand and the scaler's memory, and room made
by eviction.

``OnDemand`` is the stateful side, in three steps of a pass: while the pass reads, ``loads`` samples
the gateway's demand into the scaler and ``host`` reads what the host offers CPU replicas (memory
budget and cores); ``decide`` (pure) then runs the rule and ``make_room``; once the pass acts on
the decision, ``applied`` records it: each model's count held by the scaler, the evictions and
scale-ups from zero counted, the status rows of scaling kept for the report.

``make_room`` is the pure part: when a wanted model is short of memory (GPU or host), idle
on-demand replicas of other models are stopped for it, lowest priority first, then least recently
used (``scaling.pick_victim``), and the desired state is computed again. Nothing is evicted while
an earlier eviction is still leaving (its memory is not free yet), so one swap evicts one model,
not every idle one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from controller.endpoints.demand import ModelDemand
from controller.errors import ModelctlError
from controller.manifests.model import LoadedModel
from controller.placement.host import Host
from controller.placement.memory import cpu_need
from controller.reconcile.demand import DemandBoard
from controller.reconcile.desired import Desired
from controller.reconcile.scaling import Candidate, Load, Scaler, pick_victim
from controller.reconcile.status import ModelScaling
from controller.runtime.observed import ObservedContainer

log = logging.getLogger(__name__)

Place = Callable[..., Desired]  # place(counts=...) -> the desired state

# Why a wanted model is Pending although room is being made for it, or cannot be.
WAITING_FOR_LEAVERS = "waiting for stopped replicas to leave"
NO_VICTIM = "no idle on-demand model to stop for it"


class OnDemand:
    """The demand the gateway reports, the scaler, the host reader, and what the passes applied."""

    def __init__(
        self,
        *,
        demand: DemandBoard | None = None,
        scaler: Scaler | None = None,
        read_host: Callable[[int], Host] | None = None,
    ) -> None:
        self.demand = demand or DemandBoard()  # POST /v1/demand records here
        self.scaler = scaler or Scaler()
        self.read_host = read_host  # (bytes our CPU replicas hold) -> Host; None: CPU unbounded
        self.scaling: dict[str, ModelScaling] = {}  # each model's count now and why, as applied
        self.evictions = 0  # models stopped to make room, since start (a metric)
        self.from_zero: dict[str, int] = {}  # scale-ups from zero per model, since start (a metric)

    def loads(self, models: Sequence[LoadedModel], demand: Mapping[str, ModelDemand]) -> dict[str, Load]:
        """Record this pass's load of every model; returns what the scaler knows of each."""
        return {m.name: self.scaler.sample(m.name, demand.get(m.name, ModelDemand())) for m in models}

    def views(self, models: Sequence[LoadedModel], demand: Mapping[str, ModelDemand]) -> dict[str, Load]:
        """What ``loads`` would return now, recording nothing."""
        return {m.name: self.scaler.view(m.name, demand.get(m.name, ModelDemand())) for m in models}

    def host(self, models: Sequence[LoadedModel], observed: Sequence[ObservedContainer]) -> Host | None:
        """What CPU replicas may use now; our running CPU replicas' memory counts as theirs."""
        if self.read_host is None:
            return None
        return self.read_host(held_by_ours(models, observed))

    def applied(self, scaling: Mapping[str, ModelScaling], evictions: Sequence[Eviction]) -> None:
        """The pass acted on a decision's ``scaling`` and ``evictions``: the scaler holds each model's
        count (an evicted one its min_count), evictions and scale-ups from zero are counted, models
        gone are forgotten."""
        for name, now in scaling.items():
            previous = self.scaling.get(name)
            if previous is not None and previous.desired == 0 and now.desired > 0:
                self.from_zero[name] = self.from_zero.get(name, 0) + 1
            if previous is not None and previous.desired != now.desired:
                log.info("model %s: %d -> %d replicas (%s)", name, previous.desired, now.desired, now.reason)
            self.scaler.settle(name, now.desired)
        for eviction in evictions:
            self.evictions += 1
            log.info(
                "evicting model %s (idle, priority %d) to make room for %s",
                eviction.model,
                eviction.priority,
                eviction.for_model,
            )
        self.scaling = dict(scaling)
        self.scaler.forget(set(scaling))


@dataclass(frozen=True, slots=True)
class Eviction:
    """An idle on-demand model stopped (down to its min_count) to make room for another."""

    model: str
    down_to: int
    priority: int
    for_model: str

    @property
    def reason(self) -> str:
        return f"evicted for {self.for_model}"


@dataclass(frozen=True, slots=True)
class Room:
    """The desired state after making room, and the evictions it took (victim, for whom)."""

    desired: Desired
    evicted: tuple[tuple[Candidate, str], ...] = ()


def make_room(
    place: Place,
    counts: Mapping[str, int],
    models: Sequence[LoadedModel],
    observed: Sequence[ObservedContainer],
    demand: Mapping[str, ModelDemand],
) -> Room:
    """Place ``counts``; while a wanted model is short of memory, stop the idle on-demand model
    ``pick_victim`` names for it (down to its min_count) and place again. Pure: ``decide`` returns
    the evictions, and the pass that acts on them tells the scaler (``OnDemand.applied``). Nothing
    is evicted while an earlier eviction is still leaving, and a wanted model waits for its
    victims to leave: their memory counts as taken until they are gone (GPU: ``desired_state``
    counts a leaving replica's processes as foreign; CPU: ``place_cpu(leaving=)``)."""
    counts = dict(counts)
    desired = place(counts=counts)
    by_name = {m.name: m for m in models}
    if leaving(observed, desired):  # an earlier eviction (or a scale-down) still frees memory
        needy = needy_model(desired, by_name, demand)
        return Room(with_reason(desired, needy, WAITING_FOR_LEAVERS) if needy else desired)
    evicted: list[tuple[Candidate, str]] = []
    for _ in range(len(models)):
        needy = needy_model(desired, by_name, demand)
        if needy is None:
            break
        victim = pick_victim(candidate(by_name[needy], counts, demand), candidates(models, counts, demand))
        if victim is None:
            return Room(with_reason(desired, needy, NO_VICTIM), tuple(evicted))
        evicted.append((victim, needy))
        counts[victim.name] = victim.low
        desired = place(counts=counts)
        if leaving(observed, desired):  # its memory counts as taken until it is gone
            return Room(with_reason(desired, needy, WAITING_FOR_LEAVERS), tuple(evicted))
    return Room(desired, tuple(evicted))


def needy_model(
    desired: Desired, by_name: Mapping[str, LoadedModel], demand: Mapping[str, ModelDemand]
) -> str | None:
    """The most important model short of memory that is wanted (always-on, or a request waits)."""
    wanted = {
        name
        for name, _ in desired.short
        if not by_name[name].manifest.on_demand or demand.get(name, ModelDemand()).waiting
    }
    return max(wanted, key=lambda n: (by_name[n].manifest.priority, n), default=None)


def candidate(model: LoadedModel, counts: Mapping[str, int], demand: Mapping[str, ModelDemand]) -> Candidate:
    manifest = model.manifest
    use = demand.get(model.name, ModelDemand())
    return Candidate(
        model.name,
        manifest.on_demand,
        counts.get(model.name, 0),
        manifest.min_count,
        manifest.priority,
        use.load,
        use.last_active,
    )


def candidates(
    models: Sequence[LoadedModel], counts: Mapping[str, int], demand: Mapping[str, ModelDemand]
) -> list[Candidate]:
    return [candidate(m, counts, demand) for m in models]


def leaving(observed: Sequence[ObservedContainer], desired: Desired) -> bool:
    """True when a running container is not wanted any more (its memory is not free yet)."""
    slots = {(s.model, s.replica) for s in desired.specs}
    return any(c.alive and c.slot not in slots for c in observed)


def with_reason(desired: Desired, model: str, why: str) -> Desired:
    """``desired`` with ``why`` added to the reason of ``model``'s Pending rows."""
    pending = tuple(
        replace(r, reason=f"{r.reason}; {why}") if r.model == model else r for r in desired.pending
    )
    return replace(desired, pending=pending)


def held_by_ours(models: Sequence[LoadedModel], observed: Sequence[ObservedContainer]) -> int:
    """Host memory our running CPU replicas hold, by their estimate (counted as theirs, not free)."""
    needs: dict[str, int] = {}
    for model in models:
        if not model.manifest.num_gpus:
            try:
                needs[model.name] = cpu_need(model)
            except (ModelctlError, ValueError):
                continue
    return sum(needs.get(c.model, 0) for c in observed if not c.gpus and c.alive)
