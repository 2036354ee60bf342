"""What the reconciler remembers between passes: restart backoff per replica slot, which
containers' failures were already counted, when each container was first seen and last answered
its health check, and when the Docker engine went away and came back.

Docker is the truth about what exists; this is only the timing Docker does not keep. It is plain
bookkeeping over injected clocks (seconds: monotonic for backoff and health, Unix time for the
engine, to compare with Docker's FinishedAt), so it is tested without sleeping. A controller that
restarts starts with an empty memory: replicas that are running are simply adopted.

One failure of one container is counted once: a dead container stays listed until its removal
succeeds (the engine may refuse while it shuts down), and later passes only retry the removal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Slot = tuple[str, int]

# How long before the controller noticed the engine going away a container may have been stopped
# by its shutdown: dockerd SIGTERMs every container at once, SIGKILLs after the stop timeout (10 s)
# and the controller notices at its next pass (every 5 s when settled).
SHUTDOWN_GRACE_S = 30.0

EngineCause = Literal["outage", "unwatched"]


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    # First retry after a crash; doubles with each consecutive failure of the same replica.
    backoff_initial_s: float = 2.0
    # Cap on the delay between restarts: a broken replica is retried at least this often.
    backoff_max_s: float = 300.0
    # A replica that was ready and stops answering /health this long is restarted.
    unhealthy_after_s: float = 30.0
    # A replica that never becomes ready this long is restarted (vLLM + big weights can be slow).
    start_timeout_s: float = 900.0
    # Ready this long without failing: the failure count starts again from zero.
    stable_after_s: float = 60.0


@dataclass(slots=True)
class SlotRecord:
    failures: int = 0
    retry_at: float = 0.0
    reason: str = ""
    restarts: int = 0  # total, for status; never reset


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """A slot's restart backoff as a decision sees it (a copy: the record goes on changing)."""

    failures: int = 0
    retry_at: float = 0.0
    reason: str = ""
    restarts: int = 0


@dataclass(slots=True)
class ContainerRecord:
    first_seen: float
    last_ready: float | None = None
    ready_since: float | None = None


@dataclass(slots=True)
class EngineRecord:
    """When this controller lost and regained the Docker engine, in Unix seconds (Docker's clock)."""

    watched_from: float  # when this controller started watching
    lost_at: float | None = None  # the first failure of the latest outage
    last_failure: float | None = None
    back_at: float | None = None  # the start of the first clean pass after that outage

    @property
    def down(self) -> bool:
        return self.lost_at is not None and (self.back_at is None or self.back_at < self.lost_at)

    def lost(self, now: float) -> None:
        """The engine did not answer (or answered on an old connection but refused new ones)."""
        if not self.down:
            self.lost_at = now
        self.last_failure = now

    def answered(self, pass_started: float) -> None:
        """A whole pass that began at ``pass_started`` talked to the engine without failing."""
        if self.down and self.last_failure is not None and self.last_failure < pass_started:
            self.back_at = pass_started

    def cause(self, finished_at: float | None) -> EngineCause | None:
        """Why a container that stopped at ``finished_at`` may not have crashed: "outage" when it
        stopped while the engine was going away or away (from SHUTDOWN_GRACE_S before the outage
        was noticed until the engine came back), "unwatched" when it stopped before this controller
        started watching; None otherwise."""
        if finished_at is None:
            return None
        after_start = self.lost_at is not None and finished_at >= self.lost_at - SHUTDOWN_GRACE_S
        before_end = self.down or (self.back_at is not None and finished_at <= self.back_at)
        if after_start and before_end:
            return "outage"
        return "unwatched" if finished_at < self.watched_from else None


class Lifecycle:
    """Backoff and health timing; ``now`` is passed in by the caller on every call."""

    def __init__(self, settings: LifecycleSettings | None = None, *, watched_from: float = 0.0) -> None:
        self.settings = settings or LifecycleSettings()
        self.slots: dict[Slot, SlotRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self.engine = EngineRecord(watched_from)
        self.counted: set[str] = set()  # containers whose failure is recorded (removal may be pending)
        self.removal_failed: set[str] = set()  # containers whose failed removal was reported

    def slot(self, slot: Slot) -> SlotRecord:
        return self.slots.setdefault(slot, SlotRecord())

    def facts(self) -> dict[Slot, SlotFacts]:
        """Every slot's backoff now, as immutable facts for a ``decide.Snapshot``."""
        return {
            slot: SlotFacts(r.failures, r.retry_at, r.reason, r.restarts) for slot, r in self.slots.items()
        }

    def container_failed(
        self, container_id: str, slot: Slot, reason: str, now: float, *, crash: bool = True
    ) -> float | None:
        """Record the failure of one container, once. Returns the delay before its replica may
        start again, or None if this container was counted already (its removal is retried)."""
        if container_id in self.counted:
            return None
        self.counted.add(container_id)
        return self.failed(slot, reason, now, crash=crash)

    def failed(self, slot: Slot, reason: str, now: float, *, crash: bool = True) -> float:
        """Record a failure; returns the delay before the replica may start again. Not a crash
        (the engine stopped it): counted as a restart, but no backoff: it may start at once."""
        record = self.slot(slot)
        record.restarts += 1
        record.reason = reason
        if not crash:
            record.retry_at = now
            return 0.0
        record.failures += 1
        delay = float(
            min(self.settings.backoff_initial_s * 2 ** (record.failures - 1), self.settings.backoff_max_s)
        )
        record.retry_at = now + delay
        return delay

    def may_start(self, slot: Slot, now: float) -> bool:
        return now >= self.slot(slot).retry_at

    def observe(self, container_id: str, slot: Slot, *, ready: bool, now: float) -> str | None:
        """Note a health result; returns why the container must be replaced, or None."""
        record = self.containers.setdefault(container_id, ContainerRecord(first_seen=now))
        if ready:
            record.last_ready = now
            record.ready_since = record.ready_since if record.ready_since is not None else now
            if now - record.ready_since >= self.settings.stable_after_s:
                self.slot(slot).failures = 0
            return None
        record.ready_since = None
        if record.last_ready is not None and now - record.last_ready >= self.settings.unhealthy_after_s:
            return f"stopped answering its health check for {self.settings.unhealthy_after_s:g}s"
        if record.last_ready is None and now - record.first_seen >= self.settings.start_timeout_s:
            return f"not ready {self.settings.start_timeout_s:g}s after it started"
        return None

    def ready_once(self, container_id: str) -> bool:
        record = self.containers.get(container_id)
        return record is not None and record.last_ready is not None

    def first_removal_failure(self, container_id: str) -> bool:
        """True the first time a container's removal fails (report it once; it is retried)."""
        first = container_id not in self.removal_failed
        self.removal_failed.add(container_id)
        return first

    def forget(self, live_ids: set[str]) -> None:
        """Drop records of containers that no longer exist."""
        for gone in set(self.containers) - live_ids:
            del self.containers[gone]
        self.counted &= live_ids
        self.removal_failed &= live_ids
