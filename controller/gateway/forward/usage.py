"""Streams are counted in tokens whether or not the client asked for their usage.

An OpenAI chat or text completion stream carries its usage only when the request says
``stream_options.include_usage``: then the engine (llama-server, vLLM) ends it with one more chunk,
``{"choices": [], "usage": {...}}``, before ``data: [DONE]``. Without it the gateway would count a
stream as zero tokens: ``tokens_per_minute`` limits would not hold for streams, and the console would
show no output tokens. So the gateway asks for it on the client's behalf (``ask_for_usage``: the
forwarded body gains ``"stream_options": {"include_usage": true}``) and takes that chunk out of what
the client receives (``UsageStrip``), so the client gets the stream it asked for. A client that
asked for usage itself gets it exactly once, untouched.

Cheap on the hot path: the body is spliced, not re-serialised, unless it has ``stream_options`` of its
own (then they are kept, with ``include_usage`` set); a stream is cut at event ends (one ``rfind``
per chunk) and only an event that names ``"usage"`` is parsed as JSON: the last one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

# The OpenAI paths whose streams end with a usage chunk when asked (``stream_options``).
USAGE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_ASK = b'"stream_options":{"include_usage":true},'
# An event longer than this without its end (or CRLF ends): stop looking for usage, pass what comes.
MAX_EVENT_BYTES = 1024 * 1024


class Tail(Protocol):
    """Where the stripped chunk still goes, to be counted (``relay._Tail``)."""

    def add(self, chunk: bytes) -> None: ...


def ask_for_usage(body: bytes, document: dict[str, Any]) -> bytes:
    """Return ``body`` (the JSON object ``document`` was parsed from) asking for the stream's usage.

    Without ``stream_options`` in the document (none anywhere in the body, then) the member is
    spliced in after the opening brace, so nothing else of the body is touched; with some, the
    document is written again with ``include_usage`` set among them.
    """
    at = body.find(b"{")
    if "stream_options" not in document and at >= 0 and not body[:at].strip():
        at += 1  # after the object's opening brace (UTF-8: only whitespace comes before it)
        return body[:at] + _ASK + body[at:]
    options = document.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    return json.dumps({**document, "stream_options": options}).encode()


class UsageStrip:
    """Takes the usage-only chunk out of an OpenAI event stream; what it takes goes to ``tail``.

    ``feed`` returns the whole events a chunk completes (a part of an event waits for its end: no
    SSE client can read an event before its blank line anyway), ``flush`` what is left at the end.
    The mend protocol (``mend.Mend``), so the relay treats it as it treats a mend.
    """

    __slots__ = ("_passing", "_rest", "_tail")

    def __init__(self, tail: Tail | None) -> None:
        self._tail = tail
        self._rest = b""
        self._passing = False  # no event end found in time: the rest passes as it comes

    def feed(self, chunk: bytes) -> bytes:
        if self._passing:
            return chunk
        data = self._rest + chunk if self._rest else chunk
        end = data.rfind(b"\n\n") + 2
        if end == 1:  # no event ends in it
            if len(data) > MAX_EVENT_BYTES or b"\r\n\r\n" in data:  # too long, or CRLF events
                log.debug("no event end in %d bytes: usage chunks pass from here", len(data))
                self._passing, self._rest = True, b""
                return data
            self._rest = data
            return b""
        if end == len(data):
            self._rest = b""
        else:
            self._rest, data = data[end:], data[:end]
        if b'"usage"' not in data:
            return data
        return self._stripped(data)

    def flush(self) -> bytes:
        rest, self._rest = self._rest, b""
        return rest

    def _stripped(self, data: bytes) -> bytes:
        """``data`` (whole events) without the usage-only ones, which go to the tail instead."""
        kept = []
        for event in data[:-2].split(b"\n\n"):
            if b'"usage"' in event and usage_only(event):
                if self._tail is not None:
                    self._tail.add(event + b"\n\n")
            else:
                kept.append(event + b"\n\n")
        return b"".join(kept)


def usage_only(event: bytes) -> bool:
    """True if the SSE ``event`` is the chunk that ``include_usage`` adds: no choices, a usage."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                document = json.loads(line[5:])
            except (ValueError, RecursionError):
                return False
            return isinstance(document, dict) and document.get("choices") == [] and "usage" in document
    return False
