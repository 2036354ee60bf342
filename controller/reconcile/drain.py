"""Draining: a replica that goes (rolled, scaled down, model removed) first leaves the endpoint
table, then finishes its in-flight requests, and only then is stopped.

The engine itself is the truth about in-flight work (llama.cpp's /slots, vLLM's /metrics), so the
controller needs nothing from the gateway. Each drain is a task of its own, bounded by a grace
period, so one long generation never holds up the reconcile loop. A drain that meets an unexpected
error is counted and logged once (``supervise.Failures``); the next pass, still finding the
container, drains it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from controller.engines import IDLE_CHECKS
from controller.errors import ModelctlError
from controller.reconcile.supervise import Failures
from controller.runtime.docker import DockerRuntime
from controller.runtime.observed import ObservedContainer

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[str | None]]


class Drainer:
    """Runs one drain task per leaving container; ``draining(id)`` keeps it out of the table."""

    def __init__(
        self,
        runtime: DockerRuntime,
        fetch: Fetch,
        *,
        grace_s: float = 30.0,  # longest wait for in-flight requests before the container stops
        # Time for the gateway to drop the replica first: its long poll answers at once and waiting
        # requests look every 20 ms; a request dispatched just before reaches the engine meanwhile
        # (and one that finds it gone is retried before its first byte). Swaps wait on it.
        settle_s: float = 0.25,
        poll_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        failures: Failures | None = None,
    ) -> None:
        self.failures = failures or Failures()
        self.runtime = runtime
        self.fetch = fetch
        self.grace_s = grace_s
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.clock = clock
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def draining(self, container_id: str) -> bool:
        return container_id in self.tasks

    def draining_ids(self) -> frozenset[str]:
        """The IDs of the containers being drained now."""
        return frozenset(self.tasks)

    def start(self, container: ObservedContainer, *, wake: Callable[[], None]) -> None:
        """Begin draining ``container`` unless it already is; ``wake`` is called when it is gone."""
        if container.id not in self.tasks:
            task = asyncio.create_task(self._drain(container, wake), name=f"drain-{container.name}")
            self.tasks[container.id] = task

    async def close(self) -> None:
        """Stop draining (controller exit); the containers stay and a new controller drains them."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _drain(self, container: ObservedContainer, wake: Callable[[], None]) -> None:
        try:
            if container.running and container.url:
                await asyncio.sleep(self.settle_s)
                waited = await self._wait_idle(container)
                log.info("drained %s in %.1fs", container.name, waited)
            await asyncio.to_thread(self.runtime.remove, container.id)
            log.info("removed %s (replica %s-%d)", container.name, container.model, container.replica)
        except ModelctlError as exc:
            log.warning("removing %s failed, will retry: %s", container.name, exc)
        except Exception as exc:  # CancelledError is not one
            self.failures.record("drain", exc, subject=container.name, then="the next pass drains it again")
        finally:
            self.tasks.pop(container.id, None)
            wake()

    async def _wait_idle(self, container: ObservedContainer) -> float:
        """Wait until the engine reports no in-flight request, or the grace period ends."""
        started = self.clock()
        while self.clock() - started < self.grace_s and not await self._idle(container):
            await asyncio.sleep(self.poll_s)
        return self.clock() - started

    async def _idle(self, container: ObservedContainer) -> bool:
        check = IDLE_CHECKS.get(container.engine)
        if check is None:
            return True
        path, is_idle = check
        body = await self.fetch(f"{container.url}{path}")
        if body is None:
            return True  # not answering: nothing left to wait for
        try:
            return is_idle(body)
        except (ValueError, TypeError, AttributeError):
            return True
