"""Admission: a slot on a replica now, a bounded wait for one, or a clear "no" (429 / 503).

Replicas take ``max_concurrency`` requests at once (their batch size); more would only queue inside
the engine, out of sight, where no deadline or fairness applies. So the gateway holds the excess in one
bounded FIFO queue per model and hands a freed slot to the longest waiter, synchronously in the
``done`` callback of the request that freed it (no other request can barge in between). The bounds:

- queue length ``max(queue_min, queue_per_slot * total max_concurrency)``: beyond it 429 at once;
- the bytes of the bodies waiting, all models together, ``max_queued_bytes``: beyond it 429 (503 for
  a model without replica) at once, so waiting requests cannot take the gateway's memory;
- waiting for a slot longer than ``queue_timeout_s``: 429 (the model is up, only busy);
- a model with no ready replica (cold start, scaled to zero, all replicas restarting) waits its
  ``load_timeout_s`` (from the table; else ``cold_start_wait_s``) for the table to gain one, then
  503; a request that arrives before any table waits ``cold_start_wait_s`` for it.

Such a cold hold asks the demand reporter to tell the controller at once (``Demand.cold``), and
calls the caller's ``tick`` (if any) at once and every ``loading_comment_interval_s`` while it lasts:
the proxy keeps a held stream's client with SSE comments that way. Admission counts each slot taken
and given back into ``Demand`` (what replicas serve, per model); its queue lengths are the waiting.

A model with LoRA adapters (requests carry a ``group``, ``balancer``): a freed slot on a replica
running adapter A goes to the oldest waiter that would not mix adapters there, looking at most
``GROUP_WINDOW`` waiters deep, rather than to the head of the queue when the head runs under
another adapter (llama.cpp would run the two in separate passes and drop the slot's cache). A
waiter passed over ``GROUP_PASSES`` times takes the next free slot whatever runs there, so the
queue stays fair within a bound.

Retries (another replica after a failure) skip the length bound and wait at the front of the queue:
they have waited their turn already. The endpoint table may change at any time; ``follow`` watches it
(``TableSource`` offers no notification, so it compares the current table every ``table_poll_s``) and
gives waiting requests the new replicas' slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import errors
from controller.gateway.admission.balancer import Balancer, Done
from controller.gateway.admission.demand import Demand
from controller.gateway.errors import Refusal
from controller.gateway.tables.source import TableSource

if TYPE_CHECKING:
    from controller.gateway.settings import GatewaySettings

Slot = tuple[Replica, Done]
# How deep the queue is searched for a waiter of the adapter a freed replica runs, and how often one
# waiter may be passed over that way before it goes first whatever it mixes.
GROUP_WINDOW = 32
GROUP_PASSES = 4
# Called while a request is held for a model with no ready replica (at once, then every interval).
Tick = Callable[[], Awaitable[None]]


@dataclass(slots=True, eq=False)
class _Waiter:
    future: asyncio.Future[Slot | None]
    exclude: Collection[str]
    key: int | None
    group: str | None = None
    passed: int = 0  # times a waiter behind it went first (adapters: ``_next``)


class Admission:
    """Per-model wait queues over one balancer and one table source."""

    def __init__(
        self,
        source: TableSource,
        balancer: Balancer,
        settings: GatewaySettings,
        *,
        demand: Demand | None = None,
    ) -> None:
        self._source = source
        self._balancer = balancer
        self._settings = settings
        self.demand = demand if demand is not None else Demand()
        self._queues: dict[str, deque[_Waiter]] = {}
        self._queued_bytes = 0  # of the bodies of the requests waiting (``acquire``'s ``size``)
        self._seen: EndpointTable = source.current()
        self._changed = asyncio.Event()

    def queue_depth(self, model: str) -> int:
        """Return how many requests for ``model`` (its name) wait for a slot."""
        return len(self._queues.get(model, ()))

    def waiting(self) -> dict[str, int]:
        """Return the requests waiting (for a slot or a ready replica) per model that has any."""
        return {model: len(queue) for model, queue in self._queues.items() if queue}

    def entry(self, model: str) -> ModelEndpoints | None:
        """Return ``model``'s entry in the current table (None if it is no longer served)."""
        return self._source.current().lookup(model)

    def load_timeout_s(self, entry: ModelEndpoints) -> float:
        """Return how long a request may wait for ``entry`` to gain a ready replica."""
        timeout_s = entry.load_timeout_s
        return self._settings.cold_start_wait_s if timeout_s is None else timeout_s

    def queue_limit(self, entry: ModelEndpoints) -> int:
        """Return how many requests ``entry`` may have waiting."""
        capacity = sum(r.max_concurrency for r in entry.replicas)
        return max(self._settings.queue_min, self._settings.queue_per_slot * capacity)

    async def acquire(
        self,
        entry: ModelEndpoints,
        *,
        exclude: Collection[str] = (),
        key: int | None = None,
        tick: Tick | None = None,
        size: int = 0,
        group: str | None = None,
    ) -> Slot | None:
        """Return a slot (replica, done) for a request to ``entry``; call ``done`` when it ends.

        Returns None when every replica is in ``exclude`` (they failed this request: the caller
        answers 503). Waits, bounded, while all are busy or none is ready; raises ``errors.Refusal`` (429
        or 503) when a bound is hit. A non-empty ``exclude`` marks a retry. While held because ``entry``
        has no ready replica, ``tick`` is awaited at once and then every
        ``loading_comment_interval_s``; what it raises ends the wait (the request leaves the queue).
        ``size``: the bytes the request holds while it waits (its body), for ``max_queued_bytes``.
        ``group``: the adapter (or base) the request runs under, for a model with adapters
        (``balancer``).
        """
        if not self._queues.get(entry.name):
            slot, left = self._try(entry, exclude, key, group)
            if slot is not None or not left:
                return slot
        return await self._wait(
            entry, _Waiter(asyncio.get_running_loop().create_future(), exclude, key, group), tick, size
        )

    async def wait_for_table(self) -> EndpointTable:
        """Return the current table once one has arrived (version > 0), or after cold_start_wait_s."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.cold_start_wait_s):
                while self._source.current().version == 0:
                    await self._changed.wait()
        return self._source.current()

    async def follow(self) -> None:
        """Watch the table until cancelled; a new table wakes waiting requests."""
        while True:
            await asyncio.sleep(self._settings.table_poll_s)
            self.check_table()

    def check_table(self) -> None:
        """Dispatch waiting requests if the table changed since the last look."""
        table = self._source.current()
        if table is self._seen:
            return
        self._seen = table
        self._changed.set()
        self._changed = asyncio.Event()
        for name in list(self._queues):
            self._dispatch(name)

    def _try(
        self, entry: ModelEndpoints, exclude: Collection[str], key: int | None, group: str | None = None
    ) -> tuple[Slot | None, bool]:
        """Return (a slot if one is free now, whether any replica is left to wait for)."""
        replica = self._balancer.pick(entry, exclude, key, group)
        if replica is not None:
            return (replica, self._slot(entry.name, replica, group)), True
        if not entry.replicas:
            return None, not exclude  # a cold start is worth waiting for, not a retry
        return None, any(r.id not in exclude for r in entry.replicas)

    def _slot(self, model: str, replica: Replica, group: str | None = None) -> Done:
        release = self._balancer.acquire(replica.id, group)
        demand = self.demand
        demand.started(model)
        ended = False

        def done() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            release()
            demand.ended(model)
            if self._queues.get(model):
                self._dispatch(model)

        return done

    async def _wait(
        self, entry: ModelEndpoints, waiter: _Waiter, tick: Tick | None, size: int
    ) -> Slot | None:
        queue = self._queues.setdefault(entry.name, deque())
        retry = bool(waiter.exclude)
        if not retry:
            self._check_room(entry, len(queue), size)
        self._queued_bytes += size
        if retry:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)
        self._dispatch(entry.name)  # a slot may be free for this one (queued retries could not take it)
        cold = not entry.replicas
        if cold:
            timeout_s = self.load_timeout_s(entry)
            self.demand.cold(entry.name)  # the controller hears of it now, not at the next report
        else:
            timeout_s = self._settings.queue_timeout_s
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                if not cold:
                    return await waiter.future
                return await self._hold(
                    waiter.future, tick, lambda: self._pulling(entry.name, deadline, timeout_s)
                )
        except TimeoutError:
            self._abandon(entry.name, waiter)
            raise self._timed_out(entry.name, timeout_s) from None
        except BaseException:
            self._abandon(entry.name, waiter)
            raise
        finally:
            self._queued_bytes -= size

    def _check_room(self, entry: ModelEndpoints, waiting: int, size: int) -> None:
        """Raise a Refusal if ``entry``'s queue is full, or the gateway's queues hold too many bytes."""
        if waiting >= self.queue_limit(entry):
            why = f"{waiting} requests are already waiting"
        elif self._queued_bytes + size > self._settings.max_queued_bytes:
            why = f"the requests waiting in the gateway hold {self._queued_bytes} bytes already"
        else:
            return
        if not self._queues[entry.name]:
            del self._queues[entry.name]
        if not entry.replicas:  # not at capacity: there is no replica to be at capacity
            raise self._gone(entry.name, f"it has no ready replica and {why}")
        raise self._busy(entry.name, why)

    async def _hold(
        self, future: asyncio.Future[Slot | None], tick: Tick | None, check: Callable[[], None]
    ) -> Slot | None:
        """Wait for ``future``, awaiting ``tick`` (if any) at once and then every comment interval,
        and calling ``check`` as often."""
        every_s = self._settings.loading_comment_interval_s
        while not future.done():
            check()
            if tick is not None:
                await tick()
            if not future.done():
                await asyncio.wait((future,), timeout=every_s)
        return future.result()

    def _pulling(self, model: str, deadline: asyncio.Timeout, timeout_s: float) -> None:
        """While the controller pulls the model's weights (its table entry says what it waits for),
        the load timeout starts again: it counts from the end of the download."""
        entry = self._source.current().lookup(model)
        if entry is not None and entry.loading:
            deadline.reschedule(asyncio.get_running_loop().time() + timeout_s)

    def _abandon(self, model: str, waiter: _Waiter) -> None:
        """Take a waiter that gave up out of the queue, or give back the slot it got meanwhile."""
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            slot = future.result()
            if slot is not None:
                slot[1]()
            return
        queue = self._queues.get(model)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._queues[model]

    def _dispatch(self, model: str) -> None:
        """Hand free slots to waiters in order; stop at the first one that finds every replica full."""
        queue = self._queues.get(model)
        if not queue:
            return
        entry = self._source.current().lookup(model)
        skipped: list[_Waiter] = []
        while queue:
            waiter = queue.popleft() if entry is None else self._next(queue, entry)
            if waiter.future.done():
                continue
            if entry is None:
                waiter.future.set_exception(self._gone(model))
                continue
            slot, left = self._try(entry, waiter.exclude, waiter.key, waiter.group)
            if slot is not None or not left:
                waiter.future.set_result(slot)
            elif waiter.exclude:
                skipped.append(waiter)  # a retry barred from the free replica: others may fit
            else:
                queue.appendleft(waiter)  # every replica is full: nobody behind it fits either
                break
        queue.extendleft(reversed(skipped))
        if not queue:
            del self._queues[model]

    def _next(self, queue: deque[_Waiter], entry: ModelEndpoints) -> _Waiter:
        """Pop the waiter to serve next: the head, unless it runs under an adapter that would mix
        with what every free replica runs while a waiter close behind it would not (then that one,
        and everyone it overtook counts a pass). Retries and waiters passed over ``GROUP_PASSES``
        times are served in order."""
        head = queue[0]
        if head.group is None or head.exclude or head.passed >= GROUP_PASSES:
            return queue.popleft()
        fits = self._balancer.fits
        if fits(entry, head.group):
            return queue.popleft()
        for index in range(1, min(len(queue), GROUP_WINDOW)):
            waiter = queue[index]
            if waiter.exclude or waiter.passed >= GROUP_PASSES:
                break  # nobody overtakes a retry or a waiter at its bound
            if waiter.group is not None and not waiter.future.done() and fits(entry, waiter.group):
                for ahead in itertools.islice(queue, index):
                    ahead.passed += 1
                del queue[index]
                return waiter
        return queue.popleft()

    def _busy(self, model: str, why: str) -> Refusal:
        return errors.overloaded(
            f"The model '{model}' is at capacity and {why}. Retry later.",
            code="queue_full",
            retry_after=self._settings.busy_retry_after_s,
        )

    def _timed_out(self, model: str, waited_s: float) -> Refusal:
        entry = self._source.current().lookup(model)
        if entry is None:
            return self._gone(model, "it is no longer served")
        if not entry.replicas:
            return errors.unavailable(
                f"The model '{model}' is loading: it did not become ready within {waited_s:g} seconds. "
                "Retry later.",
                retry_after=self._settings.retry_after_s,
            )
        return errors.overloaded(
            f"The model '{model}' stayed at capacity for {waited_s:g} seconds. Retry later.",
            code="queue_timeout",
            retry_after=self._settings.busy_retry_after_s,
        )

    def _gone(self, model: str, why: str = "it has no ready replica") -> Refusal:
        return errors.unavailable(
            f"The model '{model}' is not available: {why}. Retry later.",
            retry_after=self._settings.retry_after_s,
        )
