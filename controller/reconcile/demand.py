"""The controller's copy of the gateway's demand reports: per model, added up over gateway processes.

Each gateway process reports for itself (``POST /v1/demand``); a report replaces that reporter's
previous one. Figures of a reporter silent for ``stale_after_s`` are dropped (its process died or
the gateway restarted), but a model's last activity is remembered, so idle timeouts and
least-recently-used eviction survive a gateway restart. Plain bookkeeping over an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controller.endpoints.demand import DemandReport, ModelDemand


class DemandBoard:
    """The latest report of every gateway process, and each model's last activity."""

    def __init__(self, *, stale_after_s: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._reports: dict[str, tuple[float, DemandReport]] = {}
        self._last_active: dict[str, float] = {}
        self._keep_alive: dict[str, float] = {}  # the latest keep-alive a client asked, per model

    def record(self, report: DemandReport) -> bool:
        """Keep ``report``; returns True when a request waits for some model (reconcile now)."""
        self._reports[report.reporter] = (self.clock(), report)
        for name, demand in report.models.items():
            if demand.last_active >= self._last_active.get(name, 0.0):
                self._last_active[name] = demand.last_active
                if demand.keep_alive_s is not None:
                    self._keep_alive[name] = demand.keep_alive_s
        return any(d.waiting for d in report.models.values())

    def current(self) -> dict[str, ModelDemand]:
        """Every model's demand summed over the reporters heard from within ``stale_after_s``."""
        now = self.clock()
        for reporter, (at, _) in list(self._reports.items()):
            if now - at > self.stale_after_s:
                del self._reports[reporter]
        total = {
            name: ModelDemand(last_active=at, keep_alive_s=self._keep_alive.get(name))
            for name, at in self._last_active.items()
        }
        for _, report in self._reports.values():
            for name, demand in report.models.items():
                total[name] = total.get(name, ModelDemand()).plus(demand)
        return total

    def demand(self, name: str) -> ModelDemand:
        return self.current().get(name, ModelDemand())
