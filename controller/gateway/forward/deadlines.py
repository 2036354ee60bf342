"""Deadlines of the requests in flight, kept by one timer: none per request, none per chunk.

An event loop timer costs a few microseconds to arm and to cancel (uvloop: a libuv timer each), per
request and, for a timeout around each read, per chunk. The proxy instead registers a small deadline
object per request with the ``Watchdog``, whose one timer sweeps them every ``tick_s`` while any is
registered. A deadline therefore fires up to ``tick_s`` late, which is why ``tick_s`` is a small part
of the timeouts (``Proxy`` uses min(1 s, a tenth of the shortest)).
"""

from __future__ import annotations

import asyncio
import logging

from controller.gateway.forward.upstream import Answer, ClientStalled, ReadTimeout

log = logging.getLogger(__name__)


class Watchdog:
    """The deadlines of every request in flight, swept every ``tick_s`` by one timer."""

    __slots__ = ("_entries", "_handle", "_tick_s")

    def __init__(self, tick_s: float) -> None:
        self._tick_s = tick_s
        self._entries: set[OpenDeadline | StreamDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, entry: OpenDeadline | StreamDeadline) -> None:
        self._entries.add(entry)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self._tick_s, self._sweep)

    def discard(self, entry: OpenDeadline | StreamDeadline) -> None:
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


class StreamDeadline:
    """The deadlines of a streamed answer: each read from the replica, each write to the client.

    ``reading_since`` is set before each read and cleared after it, ``writing_since`` likewise
    around each write, so each is timed on its own, as with a timeout around each call. A read
    that waited ``read_timeout_s`` fails the answer with ReadTimeout, which the read in progress
    raises (and its connection is closed). A write that waited ``write_timeout_s`` means the
    client stopped reading: its connection is aborted (the write returns or the handler is
    cancelled) and the answer failed with ClientStalled, so the replica's connection closes too
    and the engine stops generating for nobody.
    """

    __slots__ = (
        "answer",
        "client",
        "read_timeout_s",
        "reading_since",
        "stalled",
        "write_timeout_s",
        "writing_since",
    )

    def __init__(
        self,
        answer: Answer,
        client: asyncio.Transport | None,
        *,
        read_timeout_s: float,
        write_timeout_s: float,
    ) -> None:
        self.answer = answer
        self.client = client
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.reading_since: float | None = None
        self.writing_since: float | None = None
        self.stalled = False  # the write deadline fired

    def expired_at(self, now: float) -> bool:
        since = self.reading_since
        if since is not None and now - since >= self.read_timeout_s:
            return True
        since = self.writing_since
        return since is not None and now - since >= self.write_timeout_s

    def expire(self) -> None:
        if self.writing_since is None:
            self.answer.fail(ReadTimeout(f"no data from the replica for {self.read_timeout_s:g}s"))
            return
        log.warning("a client read nothing for %gs: its request is cut", self.write_timeout_s)
        self.stalled = True
        if self.client is not None:
            self.client.abort()
        self.answer.fail(ClientStalled(f"the client read nothing for {self.write_timeout_s:g}s"))
