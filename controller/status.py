"""Replica status rows, for `modelctl status` and the controller's /v1/status: every model and
replica with its state, container, endpoint, restarts and last reason.

States: Pending (cannot be placed or built), Starting (container up, not ready yet), Ready,
Outdated (old spec, still serving while its replacement starts), Draining (leaving: finishing its
requests), BackingOff (crashed; waiting before the next start), Waiting (rolls after another
replica of the same model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.lifecycle import Lifecycle
from controller.spec import ContainerSpec

if TYPE_CHECKING:
    from controller.drain import Drainer
    from controller.plan import Plan


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    model: str
    replica: int
    state: str
    container: str | None = None
    endpoint: str | None = None
    restarts: int = 0
    reason: str = ""


def statuses(
    pending: list[ReplicaStatus],
    specs: list[ContainerSpec],
    plan: Plan,
    ready: set[str],
    lifecycle: Lifecycle,
    drainer: Drainer,
) -> list[ReplicaStatus]:
    """One row per pending replica, per container kept or leaving, and per replica not running."""
    rows = list(pending)
    current = {spec.spec_hash() for spec in specs}
    for container in [*plan.remain, *plan.delete]:
        record = lifecycle.slot(container.slot)
        if drainer.draining(container.id) or container in plan.delete:
            state = "Draining"
        elif container.spec_hash not in current:
            state = "Outdated"
        else:
            state = "Ready" if container.id in ready else "Starting"
        endpoint = container.url if state == "Ready" else None
        reason = "" if state == "Ready" else record.reason
        rows.append(ReplicaStatus(*container.slot, state, container.name, endpoint, record.restarts, reason))
    covered = {(c.model, c.replica) for c in plan.remain if c.spec_hash in current}
    for spec in specs:
        slot = (spec.model, spec.replica)
        if slot in covered:
            continue
        record = lifecycle.slot(slot)
        state = "Waiting" if spec in plan.waiting else "BackingOff" if record.failures else "Starting"
        rows.append(ReplicaStatus(*slot, state, None, None, record.restarts, record.reason))
    return sorted(rows, key=lambda r: (r.model, r.replica, r.state))
