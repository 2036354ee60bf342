"""Starting replicas are probed every few tens of milliseconds and wake the reconciler when ready."""

from __future__ import annotations

import asyncio
import time

from controller.reconcile.readiness import ReadinessWatch
from controller.runtime.observed import ObservedContainer


class Prober:
    """Answers not-ready until ``ready_after`` seconds have passed since it was made."""

    def __init__(self, ready_after: float) -> None:
        self.since = time.monotonic()
        self.ready_after = ready_after
        self.calls: list[str] = []

    async def ready(self, url: str) -> bool:
        self.calls.append(url)
        return time.monotonic() - self.since >= self.ready_after

    async def fetch(self, url: str) -> str | None:
        return None


def starting(cid: str) -> ObservedContainer:
    return ObservedContainer(
        cid, f"c-{cid}", "m", 0, "llamacpp", "h", "running", None, "10.0.0.9", 8080, "/health", 1, ""
    )


async def test_the_reconciler_is_woken_within_one_probe_interval_of_readiness() -> None:
    prober, woken = Prober(ready_after=0.2), asyncio.Event()
    watch = ReadinessWatch(prober, woken.set, interval_s=0.02)
    watch.watch([starting("a")])
    await asyncio.wait_for(woken.wait(), 2)
    lag = time.monotonic() - prober.since - prober.ready_after
    assert lag < 0.1, lag
    assert set(prober.calls) == {"http://10.0.0.9:8080/health"} and len(prober.calls) >= 5
    await watch.close()


async def test_a_container_no_longer_starting_is_not_probed_any_more() -> None:
    prober, woken = Prober(ready_after=60), asyncio.Event()
    watch = ReadinessWatch(prober, woken.set, interval_s=0.01)
    watch.watch([starting("a")])
    await asyncio.sleep(0.05)
    watch.watch([])  # ready (seen by a pass), gone or failed: stop
    await asyncio.sleep(0.02)
    calls = len(prober.calls)
    await asyncio.sleep(0.1)
    assert len(prober.calls) == calls and not woken.is_set()
    await watch.close()
