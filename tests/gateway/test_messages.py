"""The first chunk of a Messages stream gets a ``message_start`` only when it lacks one."""

from __future__ import annotations

import json

from controller.gateway.messages import mended, starts_right

DELTA = b'event: content_block_start\ndata: {"type":"content_block_start","index":0}\n\n'


def test_a_stream_that_starts_right_is_untouched() -> None:
    first = b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
    assert mended(first, "m") == first
    assert mended(b'data: {"type":"message_start"}\n\n', "m").startswith(b"data:")


def test_a_first_chunk_cut_inside_the_event_name_is_not_mended() -> None:
    assert starts_right(b"event: mess")
    assert not starts_right(b"event: content")


def test_a_stream_without_it_gets_one_naming_the_model() -> None:
    out = mended(DELTA, "smollm2")
    start, rest = out.split(b"\n\n", 1)
    name, data = start.split(b"\n")
    assert name == b"event: message_start" and rest == DELTA
    message = json.loads(data.removeprefix(b"data: "))["message"]
    assert message["model"] == "smollm2" and message["role"] == "assistant"
    assert message["id"].startswith("msg_") and message["usage"] == {"input_tokens": 0, "output_tokens": 0}
