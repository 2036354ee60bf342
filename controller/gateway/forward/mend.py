"""Streams mended on their way through, where an engine leaves out what the clients' SDKs need.

Anthropic Messages: the SDKs build the answer from ``message_start`` and fail without it (the
Python SDK's ``get_final_message()`` asserts; Claude Code retries forever). llama-server sends it
only with the partial result of the first decoded token (``n_decoded == 1`` in server-task.cpp) and
holds back a token that ends inside a UTF-8 character, so an answer opening with an emoji starts at
``content_block_start`` (6 streams in 80 with SmolLM2 on b11434). ``MessagesStart`` writes one
ahead of the first chunk then, with the served model's name and zero input tokens (the engine's
count was in the event it skipped); a stream that starts right passes untouched.

Responses: llama-server's events carry ``item_id`` but no ``output_index``, ``content_index`` or
``sequence_number``, and the ``openai`` SDK's ``responses.stream()`` indexes its snapshot with them
(every stream failed with ``TypeError: list indices must be integers or slices, not NoneType``).
``ResponsesIndexes`` adds the missing ones, as OpenAI numbers them: outputs in the order their
``output_item.added`` came, content parts in the order of their ``content_part.added`` per item,
and events from 0. Fields an event has are never changed; an engine whose first event carries a
``sequence_number`` (vLLM) numbers its own, and its stream passes untouched from there on.

Both work on whole events: ``feed`` returns what can be sent now (possibly nothing, when a chunk
ends inside an event), ``flush`` the rest at the end of the stream. ``feed`` raises
``events.EventTooLarge`` for an event longer than ``events.MAX_EVENT_BYTES`` (the relay then
ends the stream with an error event).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

from controller.gateway.errors import ANTHROPIC, RESPONSES
from controller.gateway.forward.events import Events


class Mend(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def for_stream(api: str, model: str) -> Mend | None:
    """The mend a 200 event stream of ``api`` goes through (None: it passes as it is)."""
    if api == ANTHROPIC:
        return MessagesStart(model)
    if api == RESPONSES:
        return ResponsesIndexes()
    return None


class MessagesStart:
    """A ``message_start`` ahead of a Messages stream that lacks one."""

    _MARKS = (b"event: message_start", b'data: {"type":"message_start"')

    def __init__(self, model: str) -> None:
        self._model = model
        self._first = True

    def feed(self, chunk: bytes) -> bytes:
        if not self._first or not chunk:
            return chunk
        self._first = False
        return chunk if self.starts_right(chunk) else self.message_start() + chunk

    def flush(self) -> bytes:
        return b""

    @classmethod
    def starts_right(cls, chunk: bytes) -> bool:
        """True if ``chunk`` begins with ``message_start``, or may (it is cut short inside it)."""
        head = chunk.lstrip()
        return any(head.startswith(mark) or mark.startswith(head) for mark in cls._MARKS)

    def message_start(self) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        data = json.dumps({"type": "message_start", "message": message}, separators=(",", ":"))
        return b"event: message_start\ndata: " + data.encode() + b"\n\n"


class ResponsesIndexes:
    """``output_index``, ``content_index`` and ``sequence_number`` where a Responses event lacks them."""

    def __init__(self) -> None:
        self._events = Events()
        self._sequence = 0
        self._outputs: dict[str, int] = {}  # item id -> output index
        self._parts: dict[str, int] = {}  # item id -> content parts added so far
        self._passing = False  # the engine numbers its own events

    def feed(self, chunk: bytes) -> bytes:
        if self._passing:
            return chunk
        data = self._events.feed(chunk).replace(b"\r\n", b"\n")
        if not data:
            return b""
        out = [self._event(block) for block in data[: data.rfind(b"\n\n")].split(b"\n\n")]
        if self._passing:  # learnt from this chunk: what followed passes as it came
            return b"".join(out) + self._events.flush()
        return b"".join(out)

    def flush(self) -> bytes:
        return self._events.flush()

    def _event(self, block: bytes) -> bytes:
        """One event (its lines without the blank line that ended it), numbered, with that blank line."""
        if self._passing:
            return block + b"\n\n"
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            if line.startswith(b"data: {") or line.startswith(b"data:{"):
                try:
                    event = json.loads(line.partition(b":")[2])
                    if isinstance(event, dict):
                        lines[i] = b"data: " + self._numbered(event)
                except (ValueError, RecursionError):  # not JSON (or nested past reason): as it came
                    pass
                break
        return b"\n".join(lines) + b"\n\n"

    def _numbered(self, event: dict[str, Any]) -> bytes:
        if "sequence_number" in event and self._sequence == 0:
            self._passing = True
            return json.dumps(event, separators=(",", ":")).encode()
        event.setdefault("sequence_number", self._sequence)
        self._sequence += 1
        kind = event.get("type", "")
        item = event.get("item")
        item_id = item.get("id") if isinstance(item, dict) else event.get("item_id")
        if isinstance(item_id, str):
            if kind == "response.output_item.added" and item_id not in self._outputs:
                self._outputs[item_id] = len(self._outputs)
            if item_id in self._outputs:
                event.setdefault("output_index", self._outputs[item_id])
            if kind == "response.content_part.added":
                event.setdefault("content_index", self._parts.get(item_id, 0))
                self._parts[item_id] = self._parts.get(item_id, 0) + 1
            elif "item_id" in event:  # text and part events of the item's latest part
                event.setdefault("content_index", max(self._parts.get(item_id, 1) - 1, 0))
        return json.dumps(event, separators=(",", ":")).encode()
