"""A reasoning model's thinking where OpenAI-compatible clients look for it, whichever engine served it.

llama-server (``--reasoning-format deepseek``) puts it in ``reasoning_content`` of each choice's
``message`` (whole answers) or ``delta`` (streams), as DeepSeek's API does and as Open WebUI, LiteLLM
and most SDK users read it. vLLM 0.32 names the same field ``reasoning``: it deprecated
``reasoning_content`` and renames it when a client sends it back (its chat protocol's
``_normalize_reasoning``). One endpoint serving both engines would give a client the thinking under
one name or the other by model. So for vLLM's OpenAI answers the gateway adds ``reasoning_content``
beside ``reasoning``, with the same value; clients reading either find it, nothing is taken away.

Only answers that carry the member are parsed: a bytes search for ``"reasoning"`` first (in JSON an
unescaped quote only delimits a string, so the quoted name cannot hide inside another string's text,
and ``"reasoning_content"`` does not match it).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from controller.gateway.forward.events import Events


class Mend(Protocol):  # as ``mend.Mend``
    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


MARK = b'"reasoning"'
FIELD, ALIAS = "reasoning", "reasoning_content"


def aliased(document: Any) -> bool:
    """Add ``reasoning_content`` beside ``reasoning`` in each choice's message or delta of
    ``document`` (in place); True if anything was added."""
    choices = document.get("choices") if isinstance(document, dict) else None
    changed = False
    for choice in choices if isinstance(choices, list) else ():
        for key in ("message", "delta"):
            part = choice.get(key) if isinstance(choice, dict) else None
            if isinstance(part, dict) and part.get(FIELD) is not None and ALIAS not in part:
                part[ALIAS] = part[FIELD]
                changed = True
    return changed


def alias_body(body: bytes) -> bytes:
    """A whole JSON answer with ``reasoning_content`` added where vLLM wrote ``reasoning``; the
    body as it came when there is nothing to add (or it is not JSON)."""
    if MARK not in body:
        return body
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body
    return json.dumps(document, separators=(",", ":")).encode() if aliased(document) else body


class ReasoningAlias:
    """The same for an OpenAI event stream, on whole events (the mend protocol, ``mend.Mend``): each
    ``data:`` line that carries the member gets the alias; every other byte passes as it came."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events = Events()  # a member cut between two chunks is whole once its event is

    def feed(self, chunk: bytes) -> bytes:
        data = self._events.feed(chunk)
        if MARK not in data:
            return data
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            if line.startswith(b"data:") and MARK in line:
                lines[i] = b"data: " + alias_body(line[5:].strip())
        return b"\n".join(lines)

    def flush(self) -> bytes:
        return self._events.flush()


class Chain:
    """Two mends, one after the other."""

    __slots__ = ("_first", "_then")

    def __init__(self, first: Mend, then: Mend) -> None:
        self._first, self._then = first, then

    def feed(self, chunk: bytes) -> bytes:
        return self._then.feed(self._first.feed(chunk))

    def flush(self) -> bytes:
        return self._then.feed(self._first.flush()) + self._then.flush()
