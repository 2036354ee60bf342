"""Anthropic Messages <-> OpenAI chat, as pure functions (``doors.messages_translate``,
``doors.messages_stream``): what a
request becomes, what it is refused for, and the Message and events an answer becomes, whole and fed
in any slices."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.gateway.doors import messages_translate as translate
from controller.gateway.doors.messages_stream import MessagesStream
from controller.gateway.forward.events import MAX_EVENT_BYTES, EventTooLarge

TOOL = {"name": "weather", "description": "The weather in a city.", "input_schema": {"type": "object"}}


def test_a_full_request_becomes_the_chat_completion_llama_server_would_have_made() -> None:
    document = {
        "model": "smollm2-a",
        "system": [
            {"type": "text", "text": "Be brief. "},
            {"type": "text", "text": "Be kind.", "cache_control": {}},
        ],
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": ""},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {"type": "text", "text": "And so?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            },
        ],
        "max_tokens": 16,
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["\n\n"],
        "stream": True,
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 64},
        "metadata": {"user_id": "u1"},
    }
    assert translate.chat_request(document, "smollm2") == {
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "Be brief. Be kind."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Let me look."}],
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
                "reasoning_content": "Use the tool.",
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And so?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                ],
            },
        ],
        "max_tokens": 16,
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["\n\n"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {"type": "object"},
                    "description": "The weather in a city.",
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": False,
        "thinking_budget_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_a_plain_request_and_its_defaults() -> None:
    document = {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "lora": [{"id": 0, "scale": 9}],
    }
    assert translate.chat_request(document, "m") == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": translate.DEFAULT_MAX_TOKENS,  # llama-server's own default for Messages
    }
    assert translate.tool_choice({"type": "any"}) == {"tool_choice": "required"}
    assert translate.tool_choice({"type": "none"}) == {"tool_choice": "none"}
    assert translate.thinking({"type": "disabled"}) == {}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"container": "c1"}, "container:"),
        ({"mcp_servers": []}, "mcp_servers:"),
        ({"max_tokens": 0}, "max_tokens:"),
        ({"max_tokens": True}, "max_tokens:"),
        ({"temperature": "hot"}, "temperature:"),
        ({"stop_sequences": "x"}, "stop_sequences:"),
        ({"stream": "yes"}, "stream:"),
        ({"system": [{"type": "image"}]}, "system[0]:"),
        ({"messages": "Hi"}, "messages:"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0]:"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            'messages[0].content[0].type: a user block of type "document"',
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}],
                    }
                ]
            },
            "messages[0].content[0].source:",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 3}]}]},
            "messages[0].content[0].tool_use_id:",
        ),
        (
            {"tools": [{"type": "bash_20250124", "name": "bash"}]},
            'tools[0].type: only custom tools are translated, not "bash_20250124"',
        ),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice:"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens:"),
        ({"chat_template_kwargs": []}, "chat_template_kwargs:"),
    ],
)
def test_what_is_not_translated_is_refused_naming_the_field(change: dict[str, Any], named: str) -> None:
    document = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]} | change
    with pytest.raises(translate.Invalid) as raised:
        translate.chat_request(document, "m")
    assert str(raised.value).startswith(named), str(raised.value)


def test_numbers_from_outside_are_finite() -> None:
    for value in (float("inf"), float("nan"), 1e300, 10**400):
        with pytest.raises(translate.Invalid, match="temperature"):
            translate.number("temperature", value)


def completion(message: dict[str, Any], finish: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def test_a_whole_answer_becomes_a_message() -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 12}}
    answer = {"role": "assistant", "content": "The sea.", "reasoning_content": "Hmm."}
    assert translate.message(completion(answer, "length", usage), "smollm2-a") == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "smollm2-a",
        "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": ""},
            {"type": "text", "text": "The sea."},
        ],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 18, "output_tokens": 5, "cache_read_input_tokens": 12},
    }
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "not json"}},
    ]
    got = translate.message(
        completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls", {}), "m"
    )
    assert got["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {}},
    ]
    assert got["stop_reason"] == "tool_use" and got["usage"] == {"input_tokens": 0, "output_tokens": 0}
    with pytest.raises(KeyError):
        translate.message({"object": "something else"}, "m")


# --- streams ---------------------------------------------------------------------------------------


def sse(document: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse(
        {
            "id": "chatcmpl-s1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


USAGE = sse({"id": "chatcmpl-s1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
STREAM = b"".join(
    [
        chunk({"role": "assistant", "content": None}),
        chunk({"reasoning_content": "Think"}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo é"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        USAGE,
        b"data: [DONE]\n\n",
    ]
)


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in data.decode().split("\n\n")[:-1]:
        name, payload = block.split("\n")
        out.append((name.removeprefix("event: "), json.loads(payload.removeprefix("data: "))))
    return out


def fed(data: bytes, size: int) -> bytes:
    stream = MessagesStream("smollm2-a")
    out = b"".join(stream.feed(data[at : at + size]) for at in range(0, len(data), size))
    return out + stream.end()


def test_a_stream_becomes_anthropics_events() -> None:
    got = events(fed(STREAM, len(STREAM)))
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",  # thinking
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",  # text
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",  # tool
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in got)
    start = got[0][1]["message"]
    assert (start["id"], start["model"], start["content"]) == ("msg_s1", "smollm2-a", [])
    assert got[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert got[4][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "text", "text": ""},
    }
    assert (
        "".join(d["delta"]["text"] for n, d in got if d.get("delta", {}).get("type") == "text_delta")
        == "Hello é"
    )
    assert got[8][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}
    assert "".join(d["delta"]["partial_json"] for n, d in got[9:11]) == '{"city":"Oslo"}'
    assert got[11][1] == {"type": "content_block_stop", "index": 2}
    assert got[12][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 9, "output_tokens": 4},
    }


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_a_stream_fed_in_any_slices_gives_the_same_events(size: int) -> None:
    assert fed(STREAM, size) == fed(STREAM, len(STREAM))


def test_a_stream_that_ends_without_done_still_ends_and_counts() -> None:
    stream = MessagesStream("m")
    out = stream.feed(chunk({"content": "Hi"}) + chunk({}, "length") + USAGE)
    assert stream.usage() == (9, 4) and not stream.done
    got = events(out + stream.end())
    assert got[-2][1]["delta"]["stop_reason"] == "max_tokens" and got[-1][0] == "message_stop"
    assert stream.done and not stream.failed and stream.feed(chunk({"content": "late"})) == b""


def test_an_empty_stream_is_still_a_whole_message() -> None:
    stream = MessagesStream("m")
    got = events(stream.feed(b": loading m\n\ndata: [DONE]\n\n") + stream.end())
    assert [n for n, _ in got] == ["message_start", "message_delta", "message_stop"]


def test_errors_end_the_stream_as_anthropics_error_event() -> None:
    stream = MessagesStream("m")
    replica = sse({"error": {"code": 500, "message": "boom", "type": "server_error"}})
    got = events(stream.feed(chunk({"content": "Hi"}) + replica) + stream.end())
    assert got[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})
    assert stream.done and stream.failed
    # The gateway's own error event (Anthropic's shape, written by the relay) keeps its type.
    stream = MessagesStream("m")
    own = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}\n\n'
    assert events(stream.feed(own)) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    ]


def test_what_is_not_a_chunk_is_skipped_and_an_endless_event_is_refused() -> None:
    stream = MessagesStream("m")
    assert events(stream.feed(b"data: [1, 2]\n\ndata: {not json\n\n" + chunk({"content": "ok"})))[-1][1][
        "delta"
    ] == {
        "type": "text_delta",
        "text": "ok",
    }
    with pytest.raises(EventTooLarge):
        for _ in range(MAX_EVENT_BYTES // 65536 + 2):
            stream.feed(b"x" * 65536)


def test_the_gateways_error_after_an_unfinished_event_ends_the_stream() -> None:
    stream = MessagesStream("m")
    stream.feed(chunk({"content": "Hi"}) + b'data: {"id": "chatc')  # the replica broke off here
    own = b'event: error\ndata: {"type": "error", "error": {"type": "api_error", "message": "failed"}}\n\n'
    got = events(stream.feed(b"\n\n" + own) + stream.end())  # the relay ends the broken event first
    assert got == [("error", {"type": "error", "error": {"type": "api_error", "message": "failed"}})]
    assert stream.failed
