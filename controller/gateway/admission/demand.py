"""Demand: what this gateway process sees of each model's load, reported to the controller.

The controller scales models to zero and back (docs/on-demand.md), but only the data plane sees
the requests. So each process counts, per model, the requests a replica is serving (``Demand``:
``started`` / ``ended``, called by admission when a slot is taken and given back: two dict updates
and a clock read per request, nothing else on the request path), and ``DemandReporter``, one
background task per process, sends a ``DemandReport`` (``controller.endpoints.demand``, which also
has the wire format) to a sink:

- every ``demand_interval_s`` while any model has load or the figures changed since the last
  report, and at least every ``HEARTBEAT_S`` (the controller forgets a silent reporter);
- at once when a request starts waiting for a model with no ready replica (``Demand.cold``), so a
  cold start begins without waiting for the interval.

Waiting requests are not counted here: admission's queues hold them, and the reporter reads their
lengths when it reports. A sink that fails (the controller is down) is logged once per distinct
error and never touches requests. ``ControllerSink`` posts the report to the controller's
``POST /v1/demand``; an in-process controller passes its own function instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp

from controller.endpoints.demand import DemandReport, ModelDemand

log = logging.getLogger(__name__)

DemandSink = Callable[[DemandReport], Awaitable[None]]

# The longest silence between two reports: the controller forgets a reporter a few seconds after it.
HEARTBEAT_S = 5.0
# A sink that takes longer than this is treated as failed (the next report follows).
SEND_TIMEOUT_S = 5.0


def reporter_id() -> str:
    """Return a reporter id unique to this process: host, pid and a random tag (pids repeat)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Demand:
    """Per-model in-flight counts and last activity of one process; written by the event loop only."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._last_active: dict[str, float] = {}
        self._keep_alive: dict[str, float] = {}  # seconds a client asked the model to stay (-1: ever)
        self.urgent = asyncio.Event()  # set: report now (a request waits for a cold model)
        # A request waits for a cold model (as of the last report): a model going idle meanwhile
        # may be what it waits for (its memory, by eviction), so that is reported at once too.
        self.holding = False

    def started(self, model: str) -> None:
        """A replica took a request for ``model`` (a slot was acquired)."""
        counts = self._in_flight
        counts[model] = counts.get(model, 0) + 1
        self._last_active[model] = time.time()

    def ended(self, model: str) -> None:
        """A request for ``model`` gave its slot back."""
        counts = self._in_flight
        left = counts[model] = counts.get(model, 1) - 1
        self._last_active[model] = time.time()
        if not left and self.holding:
            self.urgent.set()

    def cold(self, model: str) -> None:
        """A request starts waiting for ``model``, which has no ready replica: ask for a report now."""
        self._last_active[model] = time.time()
        self.holding = True
        self.urgent.set()

    def keep_alive(self, model: str, seconds: float) -> None:
        """A client asked ``model`` to stay loaded ``seconds`` after its request (-1: for ever)."""
        if self._keep_alive.get(model) != seconds:
            self._keep_alive[model] = seconds
            self.urgent.set()  # 0 means "unload now": say so without waiting for the interval

    def in_flight(self, model: str) -> int:
        """Return how many requests for ``model`` replicas are serving for this process."""
        return self._in_flight.get(model, 0)

    def figures(self, waiting: Mapping[str, int]) -> dict[str, ModelDemand]:
        """Return every model seen so far (and every one in ``waiting``) with its figures now."""
        names = {**self._last_active, **waiting}
        return {
            name: ModelDemand(
                self._in_flight.get(name, 0),
                waiting.get(name, 0),
                self._last_active.get(name, 0.0),
                self._keep_alive.get(name),
            )
            for name in names
        }


class DemandReporter:
    """Sends this process's demand to ``sink`` until cancelled (``run``); never raises for the sink."""

    def __init__(
        self,
        demand: Demand,
        waiting: Callable[[], Mapping[str, int]],
        sink: DemandSink,
        *,
        interval_s: float,
        reporter: str | None = None,
    ) -> None:
        self._demand = demand
        self._waiting = waiting
        self._sink = sink
        self._interval_s = min(interval_s, HEARTBEAT_S)
        self.reporter = reporter or reporter_id()
        self._error: str | None = None  # the last failure logged, until a report gets through

    def report(self) -> DemandReport:
        """Return the report as it would be sent now."""
        return DemandReport(self.reporter, self._demand.figures(self._waiting()))

    async def run(self) -> None:
        """Report on change, load or heartbeat every interval, and at once when ``urgent`` is set."""
        urgent = self._demand.urgent
        last: Mapping[str, ModelDemand] | None = None
        sent_at = -math.inf
        while True:
            if not urgent.is_set():
                try:
                    async with asyncio.timeout(self._interval_s):
                        await urgent.wait()
                except TimeoutError:
                    pass
            urgent.clear()
            report = self.report()
            now = time.monotonic()
            loaded = any(d.load for d in report.models.values())
            due = loaded or report.models != last or now - sent_at >= HEARTBEAT_S
            # Figures the sink did not take go again at the next interval.
            if due and await self._send(report):
                last, sent_at = report.models, now
                self._demand.holding = any(d.waiting for d in report.models.values())

    async def _send(self, report: DemandReport) -> bool:
        """Hand ``report`` to the sink; return whether it took it (a failure is logged once per
        distinct error)."""
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self._sink(report)
        except Exception as exc:  # the sink is someone else's code: it must not end the reports
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if reason != self._error:
                log.warning("demand report not delivered (%s); retrying with the next report", reason)
                self._error = reason
            return False
        if self._error is not None:
            log.info("demand reports are delivered again")
            self._error = None
        return True


class DemandNotDelivered(Exception):
    """The controller answered a demand report with an unexpected status."""


class ControllerSink:
    """Posts reports to the controller's ``POST /v1/demand`` (204); ``session`` is the caller's.

    An older controller without the endpoint answers 404: that is said once, and reports pause for
    ``pause_s`` before the next try (the controller may be upgraded meanwhile).
    """

    def __init__(
        self,
        controller_url: str,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 2.0,
        pause_s: float = 60.0,
    ) -> None:
        self._url = controller_url.rstrip("/") + "/v1/demand"
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pause_s = pause_s
        self._paused_until = -math.inf
        self._said_404 = False

    async def __call__(self, report: DemandReport) -> None:
        """Post ``report``; raise aiohttp.ClientError, TimeoutError or DemandNotDelivered on failure."""
        if time.monotonic() < self._paused_until:
            return
        async with self._session.post(self._url, json=report.to_json(), timeout=self._timeout) as resp:
            if resp.status == 404:
                if not self._said_404:
                    log.warning(
                        "the controller at %s has no demand endpoint (an older version?); "
                        "models will not scale on demand. Trying again every %gs",
                        self._url,
                        self._pause_s,
                    )
                    self._said_404 = True
                self._paused_until = time.monotonic() + self._pause_s
                return
            if resp.status >= 300:
                raise DemandNotDelivered(f"HTTP {resp.status} from {self._url}")
