"""What the reconciler remembers between passes: restart backoff per replica slot, and when each
container was first seen and last answered its health check.

Docker is the truth about what exists; this is only the timing Docker does not keep. It is plain
bookkeeping over an injected clock (seconds), so it is tested without sleeping. A controller that
restarts starts with an empty memory: replicas that are running are simply adopted.
"""

from __future__ import annotations

from dataclasses import dataclass

Slot = tuple[str, int]


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


@dataclass(slots=True)
class ContainerRecord:
    first_seen: float
    last_ready: float | None = None
    ready_since: float | None = None


class Lifecycle:
    """Backoff and health timing; ``now`` is passed in by the caller on every call."""

    def __init__(self, settings: LifecycleSettings | None = None) -> None:
        self.settings = settings or LifecycleSettings()
        self.slots: dict[Slot, SlotRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}

    def slot(self, slot: Slot) -> SlotRecord:
        return self.slots.setdefault(slot, SlotRecord())

    def failed(self, slot: Slot, reason: str, now: float) -> float:
        """Record a failure; returns the delay before the replica may start again."""
        record = self.slot(slot)
        record.failures += 1
        record.restarts += 1
        record.reason = reason
        delay = min(self.settings.backoff_initial_s * 2 ** (record.failures - 1), self.settings.backoff_max_s)
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

    def forget(self, live_ids: set[str]) -> None:
        """Drop records of containers that no longer exist."""
        for gone in set(self.containers) - live_ids:
            del self.containers[gone]
