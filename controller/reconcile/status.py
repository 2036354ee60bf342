"""Replica status rows, for `modelctl status` and the controller's /v1/status: every model and
replica with its state, container, endpoint, restarts and last reason.

States (``states.ReplicaState``, with the moves between them): Pending (cannot be placed or
built), Starting (container up, not ready yet; its ``progress`` says what the engine is doing,
``engines.progress``), Ready, Outdated (old spec, still serving while its replacement starts),
Draining (leaving: finishing its requests), BackingOff (crashed; waiting before the next start),
Waiting (rolls after another replica of the same model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controller.reconcile.lifecycle import Lifecycle
from controller.reconcile.states import ReplicaState
from controller.runtime.spec import ContainerSpec

if TYPE_CHECKING:
    from controller.endpoints.demand import ModelDemand
    from controller.manifests.loader import LoadedModel
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
    pending: list[ReplicaStatus],
    specs: list[ContainerSpec],
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


COLUMNS = ("MODEL", "REPLICA", "STATE", "RESTARTS", "AGE", "ENDPOINT", "CONTAINER", "REASON")


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time as Docker (nanoseconds, 'Z') or Python (microseconds, '+00:00') writes it."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text.strip())
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    parsed = datetime.fromisoformat(whole + (fraction or "")[:7])
    if zone in (None, "Z"):
        return parsed.replace(tzinfo=UTC)
    return parsed.replace(tzinfo=datetime.fromisoformat(f"2000-01-01T00:00:00{zone}").tzinfo)


def age(started_at: str, now: datetime) -> str:
    """'5s', '3m', '2h', '4d' since Docker's StartedAt; '-' when unknown."""
    started = parse_time(started_at)
    if started is None:
        return "-"
    seconds = max(0, int((now - started).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_table(payload: dict[str, Any], now: datetime | None = None) -> str:
    """The controller's /v1/status answer as a text table, manifest errors below it."""
    now = now or datetime.now(UTC)
    rows = [
        (
            r["model"],
            str(r["replica"]),
            f"{r['state']} ({r['progress']})" if r.get("progress") else r["state"],
            str(r["restarts"]),
            age(r.get("started_at", ""), now),
            r["endpoint"] or "-",
            r["container"] or "-",
            r["reason"] or "",
        )
        for r in payload["replicas"]
    ]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(COLUMNS)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [COLUMNS, *rows]
    ]
    if not rows and not payload.get("models"):
        lines.append("(no models)")
    on_demand = [m for m in payload.get("models", []) if m["min_replicas"] != m["max_replicas"]]
    if on_demand:
        lines.extend(["", *scaling_table(on_demand, payload["replicas"], now)])
    lines.extend(energy_lines(payload.get("energy")))
    lines.extend(f"note: {note}" for note in payload.get("notes", []))
    for error in payload.get("manifest_errors", []):
        lines.append(f"manifest error (serving the last good set): {error}")
    return "\n".join(lines)


def energy_lines(energy: dict[str, Any] | None) -> list[str]:
    """One line per model on a GPU ('energy: smollm2: 1.8 J/token over 5 min (exclusive)'), or one
    saying why there are no figures; none from a controller that does not report energy."""
    if not energy:
        return []
    if not energy.get("available") or not energy.get("models"):
        return [f"energy: {energy.get('reason') or 'no figures'}"]
    window = f"{energy['window_s'] / 60:g} min"
    lines = []
    for row in energy["models"]:
        per_token = row["joules_per_token"]
        figure = (
            f"{per_token:.3g} J/token over {window}"
            if per_token is not None
            else f"{row['joules']:.1f} J over {window}, no output tokens counted"
        )
        lines.append(f"energy: {row['model']}: {figure} ({row['basis']})")
    return lines


SCALING_COLUMNS = ("MODEL", "READY", "DESIRED", "RANGE", "IN FLIGHT", "WAITING", "LAST USED", "SCALING")


def scaling_table(models: list[dict[str, Any]], replicas: list[dict[str, Any]], now: datetime) -> list[str]:
    """The on-demand models: ready of desired replicas, bounds, load, last use and why."""
    rows = []
    for m in models:
        ready = sum(1 for r in replicas if r["model"] == m["model"] and r["state"] == "Ready")
        why = "scaled to zero (the next request starts it)" if m["desired"] == 0 else m["reason"]
        used = f"{age(m['last_used'], now)} ago" if m["last_used"] else "never"
        rows.append(
            (
                m["model"],
                str(ready),
                str(m["desired"]),
                f"{m['min_replicas']}-{m['max_replicas']}",
                str(m["in_flight"]),
                str(m["waiting"]),
                used,
                why,
            )
        )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(SCALING_COLUMNS)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [SCALING_COLUMNS, *rows]
    ]
