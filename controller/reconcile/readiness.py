"""Readiness reaches the gateway fast: a starting replica is probed every few tens of milliseconds.

A reconcile pass lists, inspects and probes everything, so it runs every half second while replicas
start; a request held for a cold model would wait up to that long after the engine was ready. So
each running-but-not-ready container gets a small watcher that probes only its health endpoint
every ``interval_s`` and wakes the reconciler the moment it answers 200; that pass publishes it.
Watchers end when their container is ready, gone, or stops being watched; one that meets an
unexpected error is counted, logged once and started again (``supervise.supervised``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from functools import partial

from controller.reconcile.health import Prober
from controller.reconcile.supervise import Failures, supervised
from controller.runtime.observed import ObservedContainer

PROBE_INTERVAL_S = 0.025  # a refused connect or a 503 costs the engine next to nothing


class ReadinessWatch:
    """One probing task per starting container; ``wake`` is called when one becomes ready."""

    def __init__(
        self,
        prober: Prober,
        wake: Callable[[], None],
        interval_s: float = PROBE_INTERVAL_S,
        *,
        failures: Failures | None = None,
    ) -> None:
        self.prober = prober
        self.wake = wake
        self.interval_s = interval_s
        self.failures = failures or Failures()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, starting: Iterable[ObservedContainer]) -> None:
        """Watch exactly these containers (running, not ready yet); stop watching the others."""
        wanted = {c.id: c for c in starting if c.url}
        for cid in set(self._tasks) - set(wanted):
            self._tasks.pop(cid).cancel()
        for cid, container in wanted.items():
            task = self._tasks.get(cid)
            if task is None or task.done():
                url = f"{container.url}{container.health_path}"
                probe = supervised("readiness", partial(self._probe, url), failures=self.failures)
                self._tasks[cid] = asyncio.create_task(probe, name=f"readiness-{container.name}")

    async def _probe(self, url: str) -> None:
        while not await self.prober.ready(url):
            await asyncio.sleep(self.interval_s)
        self.wake()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
