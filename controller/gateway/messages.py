"""Anthropic Messages streams that begin as the SDKs require: with ``message_start``.

Anthropic's clients build the answer from ``message_start`` and fail without it (the Python SDK's
``get_final_message()`` asserts; Claude Code retries forever). llama-server emits that event only
with the partial result of the first decoded token (``n_decoded == 1`` in server-task.cpp), and it
holds back a token that ends inside a UTF-8 character: an answer that opens with an emoji then
starts at ``content_block_start``. Measured on llama.cpp b11434 with SmolLM2: 6 streams in 80.

The gateway mends such a stream at its first chunk: a ``message_start`` it writes itself, with the
model the client asked for and usage it does not know (zero input tokens: the engine's count came
in the event it skipped). Streams that start right pass untouched.
"""

from __future__ import annotations

import json
import uuid

_START = b"event: message_start"
_START_DATA = b'data: {"type":"message_start"'


def starts_right(chunk: bytes) -> bool:
    """True if ``chunk`` (a stream's first) begins with ``message_start``, or may (it is cut short)."""
    head = chunk.lstrip()
    return any(head.startswith(mark) or mark.startswith(head) for mark in (_START, _START_DATA))


def message_start(model: str) -> bytes:
    """The ``message_start`` event a stream lacked, for ``model``, in llama-server's framing."""
    message = {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    data = json.dumps({"type": "message_start", "message": message}, separators=(",", ":"))
    return b"event: message_start\ndata: " + data.encode() + b"\n\n"


def mended(chunk: bytes, model: str) -> bytes:
    """``chunk``, the first of a Messages stream, with ``message_start`` ahead of it if it lacked one."""
    return chunk if starts_right(chunk) else message_start(model) + chunk
