"""Replica status rows, for `modelctl status` and the controller's /v1/status: every model and
replica with its state, container, endpoint, restarts and last reason.

States (``states.ReplicaState``, with the moves between them): Pending (cannot be placed or
built), Starting (container up, not ready yet; its ``progress`` says what the engine is doing,
``engines.progress``), Ready, Outdated (old spec, still serving while its replacement starts),
Draining (leaving: finishing its requests), BackingOff (crashed; waiting before the next start),
Waiting (rolls after another replica of the same model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from controller.reconcile.lifecycle import Lifecycle
from controller.reconcile.states import ReplicaState
from controller.runtime.spec import ContainerSpec

if TYPE_CHECKING:
    from controller.endpoints.demand import ModelDemand
    from controller.manifests.model import LoadedModel
    from controller.reconcile.plan import Plan
    from controller.reconcile.scaling import Decision


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    model: str
    replica: int
    state: ReplicaState
    container: str | None = None
    endpoint: str | None = None
    restarts: int = 0
    reason: str = ""
    started_at: str = ""  # Docker's StartedAt (RFC 3339) of the container, if any
    progress: str = ""  # a Starting replica's phase from its engine's log ("loading weights 42%")


@dataclass(frozen=True, slots=True)
class ModelScaling:
    """A model's replica count now, its bounds, its load and why it has that count."""

    model: str
    min_replicas: int
    max_replicas: int
    desired: int
    reason: str  # "fixed", "idle for 305s", "1 request(s) waiting: starting", ...
    in_flight: int = 0
    waiting: int = 0
    last_used: str = ""  # RFC 3339 (UTC) of the last request's start or end; "" if none seen

    @classmethod
    def evicted(cls, scaling: ModelScaling, count: int, reason: str) -> ModelScaling:
        """``scaling`` held at ``count`` by an eviction (``reason``: for whom)."""
        return replace(scaling, desired=count, reason=reason)

    @classmethod
    def of(cls, model: LoadedModel, decision: Decision, demand: ModelDemand) -> ModelScaling:
        manifest = model.manifest
        used = datetime.fromtimestamp(demand.last_active, UTC).isoformat() if demand.last_active else ""
        return cls(
            model.name,
            manifest.min_count,
            manifest.max_count,
            decision.count,
            decision.reason,
            demand.in_flight,
            demand.waiting,
            used,
        )


def statuses(
    pending: Sequence[ReplicaStatus],
    specs: Sequence[ContainerSpec],
    plan: Plan,
    ready: set[str],
    lifecycle: Lifecycle,
    draining: frozenset[str],
) -> list[ReplicaStatus]:
    """One row per pending replica, per container kept or leaving, and per replica not running."""
    rows = list(pending)
    current = {spec.spec_hash() for spec in specs}
    for container in [*plan.remain, *plan.delete]:
        record = lifecycle.slot(container.slot)
        if container.id in draining or container in plan.delete:
            state = ReplicaState.DRAINING
        elif container.spec_hash not in current:
            state = ReplicaState.OUTDATED
        else:
            state = ReplicaState.READY if container.id in ready else ReplicaState.STARTING
        endpoint = container.url if state == ReplicaState.READY else None
        reason = record.reason  # the last failure of this replica, kept while it is healthy again
        rows.append(
            ReplicaStatus(
                *container.slot,
                state,
                container.name,
                endpoint,
                record.restarts,
                reason,
                container.started_at,
            )
        )
    covered = {(c.model, c.replica) for c in plan.remain if c.spec_hash in current}
    for spec in specs:
        slot = (spec.model, spec.replica)
        if slot in covered:
            continue
        record = lifecycle.slot(slot)
        state = slot_state(waiting=spec in plan.waiting, failures=record.failures)
        rows.append(ReplicaStatus(*slot, state, None, None, record.restarts, record.reason))
    return sorted(rows, key=lambda r: (r.model, r.replica, r.state))


def slot_state(*, waiting: bool, failures: int) -> ReplicaState:
    """The state of a desired replica without a container of its spec yet."""
    if waiting:
        return ReplicaState.WAITING
    return ReplicaState.BACKING_OFF if failures else ReplicaState.STARTING
