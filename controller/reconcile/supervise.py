"""Supervision: nothing unexpected ends the controller's loop or its background tasks, and a loop
that stops turning is noticed.

The controller promises to keep converging whatever happens around it, so every long-lived task
(the reconcile loop, the Docker-events and manifest watchers, the console's energy meter and
gateway scraper, readiness probes, drains) meets an exception it did not expect the same way:

- ``Failures`` counts it by task and stage (``modelctl_reconcile_errors_total`` on the controller's
  ``/metrics``) and logs it with its traceback once; the same error again is not logged again
  (a pass failing every few seconds would bury the log), a different one is, and so is the same
  one after the task recovered in between.
- ``supervised`` starts the task again after a ``Backoff`` (doubling, capped), which resets once
  a run lasted long enough to count as healthy.
- ``Heartbeat`` is what liveness reads (``/healthz``, and the watchdog that exits the process, in
  ``controller.app``): when the reconcile loop last completed a pass, and how long ago that was,
  against a bound. A restarted process is the last resort for what supervision cannot mend: a
  pass hung in a Docker or NVML call, or state poisoned so that every pass fails.

``asyncio.CancelledError`` is not an ``Exception``: cancelling still stops every task here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0  # a repeating failure is retried at least this often


class Failures:
    """Unexpected errors of the controller's loop and tasks: counted, each logged once."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()  # (task, stage) -> errors
        self._logged: dict[tuple[str, str], str] = {}  # (task, subject) -> the error last logged

    def record(self, task: str, exc: BaseException, *, stage: str = "", subject: str = "", then: str) -> bool:
        """Count ``exc`` for ``task`` at ``stage``; log it with its traceback unless it repeats
        the error last logged for ``task`` and ``subject`` (a replica whose start keeps failing is
        a subject of its own; "" is the task's run or pass as a whole). ``then`` says what happens
        next ("next pass in 2s"). Returns True when it was logged."""
        self.counts[(task, stage)] += 1
        key, said = (task, subject), f"{stage}|{type(exc).__qualname__}|{exc}"
        if self._logged.get(key) == said:
            log.debug("%s failed again (%s): %r", task, stage or "run", exc)
            return False
        self._logged[key] = said
        where = " ".join(filter(None, (f"at {stage}" if stage else "", subject)))
        log.error(
            "%s failed%s; %s: %s: %s",
            task,
            f" ({where})" if where else "",
            then,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return True

    def recovered(self, task: str, subject: str = "") -> None:
        """``task`` (or its ``subject``) worked again: its next error is logged, even the same."""
        if self._logged.pop((task, subject), None) is not None:
            log.info("%s works again%s", task, f" ({subject})" if subject else "")


@dataclass(slots=True)
class Backoff:
    """Delays that double from ``first_s`` up to ``max_s`` while failures repeat."""

    first_s: float
    max_s: float = MAX_BACKOFF_S
    streak: int = 0  # failures in a row

    def next(self) -> float:
        """The delay before the next try, one failure further into the streak."""
        delay = float(min(self.first_s * 2 ** min(self.streak, 32), self.max_s))
        self.streak += 1
        return delay

    def reset(self) -> None:
        self.streak = 0


async def supervised(
    what: str,
    run: Callable[[], Awaitable[Any]],
    *,
    failures: Failures,
    first_s: float = 1.0,
    max_s: float = MAX_BACKOFF_S,
    healthy_after_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``run()`` until it returns or is cancelled. An unexpected error is recorded in
    ``failures`` (counted; logged with its traceback once) and ``run`` starts again after a
    backoff (``first_s`` doubling to ``max_s``); a run that lasted ``healthy_after_s`` counts as
    recovered, so the backoff and the logging start afresh."""
    backoff = Backoff(first_s, max_s)
    while True:
        started = clock()
        try:
            await run()
            return
        except Exception as exc:  # CancelledError is not one: cancelling still stops it
            if clock() - started >= healthy_after_s:
                backoff.reset()
                failures.recovered(what)
            delay = backoff.next()
            failures.record(what, exc, then=f"starting it again in {delay:g}s")
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Liveness:
    """What ``/healthz`` answers: is the loop turning, how long since its last completed pass."""

    ok: bool
    since_pass_s: float  # since the last completed pass (or progress inside a long one)
    bound_s: float
    stage: str  # what the pass in progress is doing, "" between passes
    error: str  # the kind of unexpected error the last pass ended in (its text is in the log), or ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "stalled",
            "since_last_pass_s": round(self.since_pass_s, 3),
            "bound_s": self.bound_s,
            "stage": self.stage,
            "error": self.error,
        }

    def describe(self) -> str:
        """One line for the log: how long the loop has not turned, and what it was doing."""
        doing = f"; the pass in progress is at {self.stage}" if self.stage else ""
        error = f"; passes fail with {self.error}" if self.error else ""
        return (
            f"no reconcile pass completed for {self.since_pass_s:.0f}s (bound {self.bound_s:g}s, "
            f"MODELCTL_LIVENESS_S){doing}{error}"
        )


class Heartbeat:
    """When the reconcile loop last completed a pass, or made progress inside a long one.

    Only completed passes count, with one allowance: a pass that starts many replicas does one
    Docker call after another, each bounded (docker-py's 60 s timeout), so each create or removal
    that returns marks ``progressed`` and a long pass that keeps moving never looks stalled.
    That allowance holds only while the loop is healthy: once a pass ended in an unexpected error,
    only a completed pass counts again (a loop that fails every pass after some progress is
    stalled, however busy it looks)."""

    def __init__(self, bound_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound_s = bound_s
        self.clock = clock
        self.completed_at = clock()  # the start counts: the first pass gets the whole bound
        self.progressed_at = self.completed_at
        self.error = ""
        self.stage = ""  # what the pass in progress is doing ("" between passes)

    def completed(self) -> None:
        self.completed_at = self.progressed_at = self.clock()
        self.error = ""

    def broke(self, exc: BaseException) -> None:
        self.error = type(exc).__name__  # /healthz is open to anyone: the message stays in the log

    def progressed(self) -> None:
        if not self.error:
            self.progressed_at = self.clock()

    def status(self, stage: str | None = None) -> Liveness:
        """The liveness now; ``stage`` None: the one the loop last set."""
        since = self.clock() - max(self.completed_at, self.progressed_at)
        stage = self.stage if stage is None else stage
        return Liveness(since <= self.bound_s, since, self.bound_s, stage, self.error)


def default_liveness_s(interval_s: float) -> float:
    """Six settled intervals, and never under 90 s: longer than one Docker call may take before
    docker-py's own 60 s timeout ends it, so one slow call never passes for a dead loop."""
    return max(6 * interval_s, 90.0)
