"""Mended streams: Messages get the message_start they lacked; Responses events their indexes."""

from __future__ import annotations

import json
from typing import Any

from controller.gateway.errors import ANTHROPIC, OPENAI, RESPONSES
from controller.gateway.forward.mend import MessagesStart, ResponsesIndexes, for_stream

DELTA = b'event: content_block_start\ndata: {"type":"content_block_start","index":0}\n\n'


def events(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: ")]


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def llama_responses_stream() -> list[bytes]:
    """What llama-server b11434 sends (recorded): item ids, no indexes, no sequence numbers."""
    item = {"content": [], "id": "msg_1", "role": "assistant", "status": "in_progress", "type": "message"}
    resp = {"id": "resp_1", "object": "response", "status": "in_progress"}
    return [
        sse("response.created", {"type": "response.created", "response": resp}),
        sse("response.in_progress", {"type": "response.in_progress", "response": resp}),
        sse("response.output_item.added", {"type": "response.output_item.added", "item": item}),
        sse(
            "response.content_part.added",
            {
                "type": "response.content_part.added",
                "item_id": "msg_1",
                "part": {"type": "output_text", "text": ""},
            },
        ),
        sse(
            "response.output_text.delta",
            {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Hi"},
        ),
        sse(
            "response.output_text.done",
            {"type": "response.output_text.done", "item_id": "msg_1", "text": "Hi"},
        ),
        sse(
            "response.output_item.done",
            {"type": "response.output_item.done", "item": {**item, "status": "completed"}},
        ),
    ]


def test_each_api_gets_its_mend_and_chat_none() -> None:
    assert isinstance(for_stream(ANTHROPIC, "m"), MessagesStart)
    assert isinstance(for_stream(RESPONSES, "m"), ResponsesIndexes)
    assert for_stream(OPENAI, "m") is None


def test_a_messages_stream_that_starts_right_is_untouched() -> None:
    first = b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
    mend = MessagesStart("m")
    assert mend.feed(first) == first and mend.feed(DELTA) == DELTA
    assert MessagesStart.starts_right(b"event: mess"), "cut inside the event name: it may be it"
    assert not MessagesStart.starts_right(b"event: content")


def test_a_messages_stream_without_it_gets_one_naming_the_model_once() -> None:
    mend = MessagesStart("smollm2")
    out = mend.feed(DELTA)
    assert mend.feed(DELTA) == DELTA, "only the first chunk"
    start, rest = out.split(b"\n\n", 1)
    assert start.startswith(b"event: message_start\n") and rest == DELTA
    message = events(out)[0]["message"]
    assert message["model"] == "smollm2" and message["role"] == "assistant"
    assert message["id"].startswith("msg_") and message["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_responses_events_get_the_indexes_openai_gives_them() -> None:
    mend = ResponsesIndexes()
    out = b"".join(mend.feed(chunk) for chunk in llama_responses_stream()) + mend.flush()
    got = events(out)
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    by_type = {e["type"]: e for e in got}
    assert by_type["response.output_item.added"]["output_index"] == 0
    assert by_type["response.content_part.added"]["content_index"] == 0
    delta = by_type["response.output_text.delta"]
    assert (delta["output_index"], delta["content_index"], delta["delta"]) == (0, 0, "Hi")
    assert by_type["response.output_item.done"]["output_index"] == 0
    assert "output_index" not in by_type["response.created"]


def test_chunks_cut_anywhere_give_the_same_events() -> None:
    whole = b"".join(llama_responses_stream())
    reference = ResponsesIndexes()
    expected = reference.feed(whole) + reference.flush()
    for size in (1, 7, 50):
        mend = ResponsesIndexes()
        pieces = [mend.feed(whole[i : i + size]) for i in range(0, len(whole), size)]
        assert b"".join(pieces) + mend.flush() == expected


def test_an_engine_that_numbers_its_own_events_passes_untouched() -> None:
    vllm = sse("response.created", {"type": "response.created", "sequence_number": 0, "response": {}})
    delta = sse(
        "response.output_text.delta", {"type": "response.output_text.delta", "item_id": "x", "delta": "a"}
    )
    mend = ResponsesIndexes()
    assert mend.feed(vllm + delta[:10]) + mend.feed(delta[10:]) == vllm + delta
