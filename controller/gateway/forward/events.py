"""Server-sent events cut out of a replica's byte stream as they complete, with a cap on one event.

The stream mends (``mend``) and the Ollama and Messages translations (``ollama_translate``,
``messages_translate``) work on whole events, so they hold the start of an event until its end (a
blank line) arrives. An engine that never ends
one (no blank line for megabytes) must neither grow that without bound nor cost time quadratic in
it: ``Events`` keeps the pieces as they came, joins them once when an end arrives, and raises
EventTooLarge once an unfinished event passes ``MAX_EVENT_BYTES`` (the relay ends the stream with
an error event then). ``Translator`` is the framing both translations share: events in, each
event's JSON handed to the subclass, its own frames out.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

# The longest event held whole. A chat chunk is under 1 KiB; the longest are a Responses stream's
# last events, which carry the whole answer (a 128k-token context's text is about 0.5 MiB, and
# JSON escaping can double it). Past it the stream ends with an error event.
MAX_EVENT_BYTES = 4 * 1024 * 1024


class EventTooLarge(Exception):
    """An event of a replica's stream is longer than the gateway holds."""


class Events:
    """A stream's bytes in, its complete events out (up to and including their blank line)."""

    __slots__ = ("_last", "_limit", "_pieces", "_size")

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        self._pieces: list[bytes] = []  # the unfinished event, as it came
        self._size = 0
        self._last = b""  # its last two bytes: an end may start in them

    def feed(self, chunk: bytes) -> bytes:
        """Return the events ``chunk`` completes, joined (b"" if none); keep the rest.

        An event ends with an empty line: ``\\n\\n``, or ``\\n\\r\\n`` (CRLF lines). Raises
        EventTooLarge (and forgets what it held) once the unfinished event passes the limit.
        """
        last = self._last
        look = last + chunk if last else chunk
        end = max(_after(look, b"\n\n"), _after(look, b"\n\r\n"))
        if end < 0:
            self._hold(chunk)
            return b""
        cut = end - len(last)
        pieces, self._pieces = self._pieces, []
        rest = chunk[cut:]
        self._size = 0
        self._last = b""
        if rest:
            self._hold(rest)
        if not pieces:
            return chunk[:cut] if rest else chunk
        pieces.append(chunk[:cut])
        return b"".join(pieces)

    def flush(self) -> bytes:
        """Return what is held (an event that never ended) and forget it."""
        pieces, self._pieces = self._pieces, []
        self._size = 0
        self._last = b""
        return b"".join(pieces)

    def _hold(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._limit:
            self.flush()
            raise EventTooLarge(f"an event of the stream is longer than {self._limit} bytes")
        self._pieces.append(piece)
        self._last = (self._last + piece)[-2:] if len(piece) < 2 else piece[-2:]


def _after(data: bytes, end: bytes) -> int:
    """The index just after the last ``end`` in ``data``, or -1."""
    at = data.rfind(end)
    return at + len(end) if at >= 0 else -1


class Translator:
    """An OpenAI chat event stream in, another API's stream out, fed as it arrives: the part the
    translations (Ollama's NDJSON, Anthropic's Messages events) share. ``feed`` takes any slice of
    the stream and returns what its complete events make (maybe nothing); ``end`` what is left to
    say when the stream ends. Each event's data is parsed here: ``[DONE]`` calls ``_final``, an
    error ``_error``, a chunk ``_chunk``, and anything else is skipped (logged for the first of a
    stream). Subclasses set ``done`` (and ``failed`` for an error) when their last frame went out,
    and say the replica's token counts (``usage``)."""

    __slots__ = ("_events", "_skipped", "done", "failed")

    def __init__(self) -> None:
        self._events = Events()
        self._skipped = 0  # events that made no sense
        self.done = False  # the last frame went out (the end's, or an error's)
        self.failed = False  # ... an error's

    def usage(self) -> tuple[int, int] | None:
        """(prompt, completion) tokens of the replica's usage, once it came."""
        raise NotImplementedError

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""  # anything after the end
        complete = self._events.feed(data)
        if not complete:
            return b""
        *events, _ = complete.replace(b"\r\n", b"\n").split(b"\n\n")
        return b"".join(self._event(e) for e in events)

    def end(self) -> bytes:
        rest = self._events.flush()
        out = self._event(rest.replace(b"\r\n", b"\n")) if rest.strip() else b""
        return out + (self._final() if not self.done else b"")

    def _event(self, raw: bytes) -> bytes:
        data = b"\n".join(ln[5:].lstrip() for ln in raw.split(b"\n") if ln.startswith(b"data:"))
        if self.done or not data:
            return b""  # comments (": loading"), or anything after the end
        if data == b"[DONE]":
            return self._final()
        try:
            document = json.loads(data)
            if not isinstance(document, dict):
                return self._skip(data)
            if "error" in document:
                return self._error(document)
            return self._chunk(document)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, RecursionError):
            return self._skip(data)

    def _skip(self, data: bytes) -> bytes:
        """An event that is not an OpenAI chunk: left out (logged for the first of a stream)."""
        if not self._skipped:
            log.warning("a replica's event stream has an event that is not an OpenAI chunk: %r", data[:200])
        self._skipped += 1
        return b""

    def _chunk(self, document: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _error(self, document: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _final(self) -> bytes:
        raise NotImplementedError
