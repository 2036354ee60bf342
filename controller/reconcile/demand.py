"""The controller's copy of the gateway's demand reports: per model, added up over gateway processes.

Each gateway process reports for itself (``POST /v1/demand``); a report replaces that reporter's
previous one. Figures of a reporter silent for ``stale_after_s`` are dropped (its process died or
the gateway restarted), but a model's last activity is remembered, so idle timeouts and
least-recently-used eviction survive a gateway restart. Plain bookkeeping over an injected clock.

Bounded: at most ``max_reporters`` reporters are kept (a gateway runs a few processes; a new one
past the cap, while none has gone silent, is refused with ``TooManyReporters``, and those already
reporting keep their place), and the models are those the API let through (``POST /v1/demand``
keeps only the names of known models: ``DemandReport.known``), so client input cannot grow it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controller.endpoints.demand import DemandReport, ModelDemand

MAX_REPORTERS = 64  # gateway processes heard from at once (workers x replicas of the gateway)


class TooManyReporters(Exception):
    """A report from a new reporter while ``max_reporters`` others are still reporting."""


class DemandBoard:
    """The latest report of every gateway process, and each model's last activity."""

    def __init__(
        self,
        *,
        stale_after_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        max_reporters: int = MAX_REPORTERS,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.max_reporters = max_reporters
        self.clock = clock
        self._reports: dict[str, tuple[float, DemandReport]] = {}
        self._last_active: dict[str, float] = {}
        self._keep_alive: dict[str, float] = {}  # the latest keep-alive a client asked, per model

    def record(self, report: DemandReport) -> bool:
        """Keep ``report``; returns True when a request waits for some model (reconcile now).
        Raises TooManyReporters (keeping nothing) for a new reporter past ``max_reporters``."""
        if report.reporter not in self._reports and len(self._reports) >= self.max_reporters:
            self._forget_silent(self.clock())
            if len(self._reports) >= self.max_reporters:
                raise TooManyReporters(
                    f"{len(self._reports)} reporters are reporting (at most {self.max_reporters}); "
                    f"a reporter silent for {self.stale_after_s:g} s is forgotten"
                )
        self._reports[report.reporter] = (self.clock(), report)
        for name, demand in report.models.items():
            if demand.last_active >= self._last_active.get(name, 0.0):
                self._last_active[name] = demand.last_active
                if demand.keep_alive_s is not None:
                    self._keep_alive[name] = demand.keep_alive_s
        return any(d.waiting for d in report.models.values())

    def current(self) -> dict[str, ModelDemand]:
        """Every model's demand summed over the reporters heard from within ``stale_after_s``."""
        self._forget_silent(self.clock())
        total = {
            name: ModelDemand(last_active=at, keep_alive_s=self._keep_alive.get(name))
            for name, at in self._last_active.items()
        }
        for _, report in self._reports.values():
            for name, demand in report.models.items():
                total[name] = total.get(name, ModelDemand()).plus(demand)
        return total

    @property
    def reporters(self) -> int:
        """Reporters kept now (silent ones until the next ``current`` or refused ``record``)."""
        return len(self._reports)

    def _forget_silent(self, now: float) -> None:
        for reporter, (at, _) in list(self._reports.items()):
            if now - at > self.stale_after_s:
                del self._reports[reporter]

    def demand(self, name: str) -> ModelDemand:
        return self.current().get(name, ModelDemand())
