"""Deadlines of the requests in flight, kept by one timer: none per request, none per chunk.

An event loop timer costs a few microseconds to arm and to cancel (uvloop: a libuv timer each), per
request and, for a timeout around each read, per chunk. The proxy instead registers a small deadline
object per request with the ``Watchdog``, whose one timer sweeps them every ``tick_s`` while any is
registered. A deadline therefore fires up to ``tick_s`` late, which is why ``tick_s`` is a small part
of the timeouts (``Proxy`` uses min(1 s, a tenth of the shortest)).
"""

from __future__ import annotations

import asyncio

from controller.gateway.upstream import Answer, ReadTimeout


class Watchdog:
    """The deadlines of every request in flight, swept every ``tick_s`` by one timer."""

    __slots__ = ("_entries", "_handle", "_tick_s")

    def __init__(self, tick_s: float) -> None:
        self._tick_s = tick_s
        self._entries: set[OpenDeadline | ReadDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, entry: OpenDeadline | ReadDeadline) -> None:
        self._entries.add(entry)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self._tick_s, self._sweep)

    def discard(self, entry: OpenDeadline | ReadDeadline) -> None:
        self._entries.discard(entry)

    def _sweep(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = [entry for entry in self._entries if entry.expired_at(now)]
        for entry in expired:
            self._entries.discard(entry)
            entry.expire()
        if self._entries:
            self._handle = loop.call_later(self._tick_s, self._sweep)


class OpenDeadline:
    """Until the replica's status line and headers: cancels the waiting task, as asyncio.timeout does."""

    __slots__ = ("cancelling", "due", "expired", "task")

    def __init__(self, due: float, task: asyncio.Task[object]) -> None:
        self.due = due
        self.task = task
        self.cancelling = task.cancelling()  # cancellations requested before ours: not ours to eat
        self.expired = False

    def expired_at(self, now: float) -> bool:
        return now >= self.due

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def timed_out(self) -> bool:
        """After a CancelledError: True if it was (only) this deadline's doing, now taken back."""
        return self.expired and self.task.uncancel() <= self.cancelling


class ReadDeadline:
    """The longest wait for one read of a streamed answer (``read_timeout_s``).

    ``reading_since`` is set before each read and cleared after it, so time spent writing to a slow
    client does not count, as with a timeout around each read. A read that waited ``timeout_s`` fails
    the answer with ReadTimeout, which the read in progress raises (and its connection is closed).
    """

    __slots__ = ("answer", "reading_since", "timeout_s")

    def __init__(self, timeout_s: float, answer: Answer) -> None:
        self.timeout_s = timeout_s
        self.answer = answer
        self.reading_since: float | None = None

    def expired_at(self, now: float) -> bool:
        since = self.reading_since
        return since is not None and now - since >= self.timeout_s

    def expire(self) -> None:
        self.answer.fail(ReadTimeout(f"no data from the replica for {self.timeout_s:g}s"))
