"""Recent events of the control plane, for the console and ``GET /v1/events``: what happened to
which replica, and why (created, ready, crashed + reason, backoff, rolled, drained, deleted,
evicted, pending, pulling and pulled hub weights).

The reconciler is level-based: every pass sees the same ready container, the same leaving one,
the same Pending slot again. So an event is recorded once per container and kind (a container ID
is never reused), a Pending slot only when its reason changes shape (its figures aside: free
memory moves every pass on a busy GPU), and the memory of what was recorded is dropped with the
containers that are gone. The log is a ring of the last ``CAPACITY`` events, numbered from 1, so a
reader asks for those after the last number it saw. Each event is logged once at INFO, too.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from controller.reconcile.lifecycle import Slot
from controller.reconcile.states import ReplicaState
from controller.reconcile.status import ReplicaStatus
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

log = logging.getLogger(__name__)

CAPACITY = 200  # events kept; older ones fall off
KINDS = (
    "created", "ready", "crashed", "rolled", "drained", "deleted", "evicted", "pending", "backoff",
    "pulling", "pulled",  # hub weights into the cache before a start (reconcile.pulls)
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Event:
    seq: int  # 1, 2, 3, ... since the controller started
    time: str  # RFC 3339, UTC
    kind: str  # one of KINDS
    model: str
    replica: int
    container: str  # the container's name ("" for a slot without one: pending, a failed start)
    reason: str


class EventLog:
    """The last ``capacity`` events, and what was recorded per container and slot (dedupe)."""

    def __init__(self, *, capacity: int = CAPACITY, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # Unix seconds, for the events' time
        self.events: deque[Event] = deque(maxlen=capacity)
        self.last = 0  # the seq of the newest event; 0 before the first
        self.recorded: set[tuple[str, str]] = set()  # (kind, container ID) recorded once
        self.leaving: dict[str, ObservedContainer] = {}  # ID -> container drained out, until gone
        self.pending_reasons: dict[Slot, str] = {}  # slot -> the shape of its last Pending reason

    def record(self, kind: str, slot: Slot, *, container: str = "", reason: str = "") -> Event:
        """Append one event (always) and log it; returns it."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
        self.last += 1
        when = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds")
        event = Event(self.last, when, kind, slot[0], slot[1], container, reason)
        self.events.append(event)
        log.info("event %s: replica %s-%d%s%s", kind, *slot, f" ({container})" if container else "",
                 f": {reason}" if reason else "")  # fmt: skip
        return event

    def once(self, kind: str, container: ObservedContainer, reason: str = "") -> Event | None:
        """Record ``kind`` for ``container`` unless it was recorded before; returns it or None."""
        key = (kind, container.id)
        if key in self.recorded:
            return None
        self.recorded.add(key)
        return self.record(kind, container.slot, container=container.name, reason=reason)

    def after(self, seq: int) -> list[Event]:
        """The kept events newer than ``seq``, oldest first."""
        return [e for e in self.events if e.seq > seq]

    def to_json(self, after: int = 0) -> dict[str, Any]:
        """The body of ``GET /v1/events?after=N``."""
        return {"last": self.last, "events": [asdict(e) for e in self.after(after)]}

    # What the reconciler saw in a pass, turned into events.

    def ready(self, observed: Iterable[ObservedContainer], ready: set[str]) -> None:
        """A container's health check passes for the first time (or this controller adopts it)."""
        for container in observed:
            if container.id in ready:
                self.once("ready", container)

    def failed(self, container: ObservedContainer, reason: str, delay: float, *, crash: bool) -> None:
        """A container exited or was replaced as unhealthy; a crash makes its slot back off."""
        self.once("crashed", container, reason)
        if crash and delay > 0:
            self.once("backoff", container, f"restarting in {delay:g}s")

    def start_failed(self, slot: Slot, reason: str, delay: float) -> None:
        """A replica's container could not be started: its slot waits ``delay`` before the next try."""
        self.record("backoff", slot, reason=f"could not start: {reason}; retrying in {delay:g}s")

    def deleting(
        self,
        containers: Iterable[ObservedContainer],
        *,
        kept: Iterable[ObservedContainer],
        specs: Iterable[ContainerSpec],
        ready: set[str],
        models: Collection[str],
        scaling: Mapping[str, str],
    ) -> None:
        """Containers the plan deletes (each drained out, once): rolled, evicted or deleted, and why.
        ``kept``: the containers that remain; ``models``: the manifests' model names; ``scaling``:
        each model's scaling reason."""
        fresh = [c for c in containers if c.id not in self.leaving]
        if not fresh:
            return
        current = {(s.model, s.replica): s.spec_hash() for s in specs}
        serving = {c.slot: c.name for c in kept if c.id in ready}
        for container in fresh:
            replacement = serving.get(container.slot)
            kind, reason = why_leaving(
                container, current=current, replacement=replacement, models=models, scaling=scaling
            )
            self.record(kind, container.slot, container=container.name, reason=reason)
            self.leaving[container.id] = container

    def pending(self, rows: Iterable[ReplicaStatus]) -> None:
        """Slots that became Pending, or whose Pending reason changed shape."""
        now: dict[Slot, str] = {}
        for row in rows:
            if row.state != ReplicaState.PENDING:
                continue
            slot, shape = (row.model, row.replica), reason_shape(row.reason)
            now[slot] = shape
            if self.pending_reasons.get(slot) != shape:
                self.record("pending", slot, reason=row.reason)
        self.pending_reasons = now

    def forget(self, listed: set[str]) -> None:
        """Containers not listed any more are gone: a drained one says so; their keys are dropped."""
        for cid in [cid for cid in self.leaving if cid not in listed]:
            container = self.leaving.pop(cid)
            self.record("drained", container.slot, container=container.name, reason="drained and removed")
        self.recorded = {(kind, cid) for kind, cid in self.recorded if cid in listed}


def reason_shape(reason: str) -> str:
    """A reason with its figures blanked: "0.51 GiB free" and "0.48 GiB free" are one shape."""
    return re.sub(r"\d+(\.\d+)?", "#", reason)


def why_leaving(
    container: ObservedContainer,
    *,
    current: Mapping[Slot, str],
    replacement: str | None,
    models: Collection[str],
    scaling: Mapping[str, str],
) -> tuple[str, str]:
    """The kind and reason of a container the plan deletes. ``current``: the desired spec hash per
    slot; ``replacement``: the name of the ready container that took its slot, if any; ``models``:
    the manifests' model names; ``scaling``: each model's scaling reason ("evicted for b", ...)."""
    wanted = current.get(container.slot)
    if wanted is not None and wanted != container.spec_hash and replacement is not None:
        return "rolled", f"replaced by {replacement}"
    model_reason = scaling.get(container.model, "")
    if wanted is None and model_reason.startswith("evicted for"):
        return "evicted", model_reason
    if wanted is not None:
        return "deleted", "a second container for the same replica"
    if container.model not in models:
        return "deleted", "its model is no longer in the manifests"
    if model_reason in ("", "fixed"):
        return "deleted", "fewer replicas in the manifest"
    return "deleted", f"scaled down ({model_reason})"
