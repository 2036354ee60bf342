"""An OpenAI chat event stream, out as Anthropic's Messages events, as it arrives.

The stream half of ``messages_translate`` (a Messages request for a llama.cpp model with LoRA
adapters goes to its replica as a chat completion, ``messages.py``): OpenAI chunks become
``message_start``, ``content_block_start``/``_delta``/``_stop`` (thinking, text, each tool call),
``message_delta`` (stop reason, the replica's usage) and ``message_stop``, each chunk held only
until its end (``events.Events``, capped); nothing of the answer is kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from controller.gateway.doors.messages_translate import (
    MAX_TOOLS,
    message_id,
    stop_reason,
    thinking_of,
    tokens,
    usage,
)
from controller.gateway.forward.events import Translator

log = logging.getLogger(__name__)


def event(name: str, data: Mapping[str, Any]) -> bytes:
    """One Anthropic SSE event (compact JSON, as llama-server writes its own)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return b"event: " + name.encode() + b"\ndata: " + payload.encode() + b"\n\n"


def error_event(message: str, type_: str = "api_error") -> bytes:
    return event("error", {"type": "error", "error": {"type": type_, "message": message}})


class MessagesStream(Translator):
    """An OpenAI chat event stream, fed as it arrives, out as Anthropic's Messages events
    (``Translator``: ``feed``, ``end``; the end says the closing events if ``data: [DONE]`` never
    came). Blocks open and close as the deltas change kind (thinking, text, each tool call);
    ``message_delta`` carries the stop reason and the replica's usage. An error (the replica's, or
    the gateway's own error event written into the stream) becomes Anthropic's ``error`` event and
    ends it. An event longer than ``events.MAX_EVENT_BYTES`` raises ``events.EventTooLarge``.
    """

    __slots__ = ("_block", "_blocks", "_model", "_reason", "_tools", "_usage", "started")

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model  # the name the client asked for: the Message echoes it
        self._block: tuple[str, int] | None = None  # the open block: (kind, tool call index or -1)
        self._blocks = 0  # blocks started so far (the next one's index)
        self._tools: set[int] = set()  # the tool call indexes seen (at most MAX_TOOLS)
        self._reason: Any = None
        self._usage: Any = None
        self.started = False  # message_start went out

    def usage(self) -> tuple[int, int] | None:
        """(prompt, completion) tokens of the replica's usage, once it came."""
        if not isinstance(self._usage, dict):
            return None
        return tokens(self._usage.get("prompt_tokens")), tokens(self._usage.get("completion_tokens"))

    def _error(self, document: dict[str, Any]) -> bytes:
        """The replica's error (OpenAI's shape) or the gateway's (Anthropic's) as the last event."""
        self.done = self.failed = True
        error = document.get("error")
        text = error.get("message") if isinstance(error, dict) else error
        kind = error.get("type") if isinstance(error, dict) and document.get("type") == "error" else None
        return error_event(
            str(text or "the model server failed"), kind if isinstance(kind, str) else "api_error"
        )

    def _start(self, chat_id: Any) -> bytes:
        self.started = True
        start: dict[str, Any] = {"id": message_id(chat_id), "type": "message", "role": "assistant"}
        start["model"] = self._model
        start |= {"content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = {"input_tokens": 0, "output_tokens": 0}  # known at the end: message_delta
        return event("message_start", {"type": "message_start", "message": start})

    def _chunk(self, document: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start(document.get("id"))
        if document.get("usage"):
            self._usage = document["usage"]
        choices = document.get("choices") or []
        if not choices:
            return out
        choice = choices[0]
        if choice.get("finish_reason"):
            self._reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        if thinking_of(delta):
            out += self._delta(("thinking", -1), {"type": "thinking_delta", "thinking": thinking_of(delta)})
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._delta(("text", -1), {"type": "text_delta", "text": delta["content"]})
        for call in delta.get("tool_calls") or ():
            out += self._tool(call)
        return out

    def _tool(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        if not isinstance(index, int) or not 0 <= index < MAX_TOOLS:
            raise ValueError(f"a tool call index of {str(index)[:20]}")
        function = call.get("function") or {}
        arguments = function.get("arguments")
        key = ("tool_use", index)
        if self._block == key or index in self._tools:
            if self._block != key:  # more of a call whose block was closed: nowhere to put it
                log.warning("a replica streamed tool call %d after another began; its rest is dropped", index)
                return b""
            return (
                self._delta(key, {"type": "input_json_delta", "partial_json": arguments})
                if arguments
                else b""
            )
        self._tools.add(index)
        name = str(function.get("name") or "")
        opening = {
            "type": "tool_use",
            "id": str(call.get("id") or f"toolu_{index}"),
            "name": name,
            "input": {},
        }
        out = self._open(key, opening)
        if isinstance(arguments, str) and arguments:
            out += self._delta(key, {"type": "input_json_delta", "partial_json": arguments})
        return out

    def _delta(self, key: tuple[str, int], delta: dict[str, Any]) -> bytes:
        """A delta for block ``key``, opening it first (and closing the one before) if need be."""
        out = b""
        if self._block != key:
            kind = key[0]
            opening = {"type": kind, kind: ""} | ({"signature": ""} if kind == "thinking" else {})
            out = self._open(key, opening)
        index = self._blocks - 1
        return out + event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _open(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._close()
        self._block = key
        self._blocks += 1
        start = {"type": "content_block_start", "index": self._blocks - 1, "content_block": block}
        return out + event("content_block_start", start)

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})

    def _final(self) -> bytes:
        out = b"" if self.started else self._start(None)
        out += self._close()
        self.done = True
        delta = {"stop_reason": stop_reason(self._reason), "stop_sequence": None}
        out += event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage(self._usage)})
        return out + event("message_stop", {"type": "message_stop"})
