"""Ollama's API in OpenAI's terms (controller.gateway.doors.ollama_translate, ollama_models), by tables:
requests mapped, OpenAI answers and event streams turned into Ollama's JSON and NDJSON, errors,
model lists."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from gateway_fakes import PIECES, chunk, completion, embeddings, sse, usage_chunk

from controller.endpoints.table import Details, EndpointTable, ModelEndpoints, Replica, Target
from controller.gateway.doors import ollama_models as lists
from controller.gateway.doors import ollama_translate as t

USER = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({}, {}),
        (
            {"options": {"temperature": 0.2, "top_p": 0.9, "top_k": 40}},
            {"temperature": 0.2, "top_p": 0.9, "top_k": 40},
        ),
        ({"options": {"num_predict": 16, "seed": 7}}, {"max_tokens": 16, "seed": 7}),
        ({"options": {"num_predict": -1}}, {}),  # until done: no bound
        ({"options": {"stop": "\n"}}, {"stop": ["\n"]}),
        ({"options": {"stop": ["a", "b"], "min_p": 0.1}}, {"stop": ["a", "b"], "min_p": 0.1}),
        ({"options": {"num_ctx": 8192, "mirostat": 2}}, {}),  # the engine's own: not per request
        ({"options": {"repeat_penalty": 1.1}}, {"repeat_penalty": 1.1}),
        ({"format": "json"}, {"response_format": {"type": "json_object"}}),
        (
            {"format": {"type": "object"}},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "format", "schema": {"type": "object"}},
                }
            },
        ),
        ({"format": ""}, {}),
    ],
)
def test_options_map_to_openai_sampling_fields(request_: dict[str, Any], expected: dict[str, Any]) -> None:
    assert t.sampling(request_) == expected


def test_repeat_penalty_is_vllms_repetition_penalty() -> None:
    assert t.sampling({"options": {"repeat_penalty": 1.2}}, engine="vllm") == {"repetition_penalty": 1.2}


@pytest.mark.parametrize("bad", [{"format": "yaml"}, {"options": [1]}])
def test_bad_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(t.Invalid):
        t.sampling(bad)


def test_chat_streams_by_default_and_asks_for_usage() -> None:
    body = t.chat_request({"messages": USER, "options": {"num_predict": 3}}, "smollm2")
    assert body == {
        "model": "smollm2",
        "messages": USER,
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert t.chat_request({"messages": USER, "stream": False}, "m")["stream"] is False


def test_chat_images_become_data_urls_and_tools_keep_their_ids() -> None:
    messages = [
        {"role": "user", "content": "what is it?", "images": ["iVBORw0KGgo="]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "cold", "tool_name": "weather"},
    ]
    body = t.chat_request({"messages": messages, "tools": [{"type": "function"}], "stream": False}, "m")
    user, assistant, tool = body["messages"]
    assert user["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }
    call = assistant["tool_calls"][0]
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert tool == {"role": "tool", "content": "cold", "tool_call_id": call["id"]}
    assert body["tools"] == [{"type": "function"}]


@pytest.mark.parametrize(
    ("request_", "path", "expected"),
    [
        ({"prompt": "Hi"}, t.CHAT, {"messages": USER}),
        (
            {"prompt": "Hi", "system": "Be brief."},
            t.CHAT,
            {"messages": [{"role": "system", "content": "Be brief."}, *USER]},
        ),
        ({"prompt": "Once upon", "raw": True}, t.COMPLETIONS, {"prompt": "Once upon"}),
    ],
)
def test_generate_is_a_chat_unless_raw(request_: dict[str, Any], path: str, expected: dict[str, Any]) -> None:
    got_path, body = t.generate_request(request_ | {"stream": False}, "m")
    assert got_path == path
    assert body == {"model": "m", **expected, "stream": False}


def test_generate_with_suffix_is_refused() -> None:
    with pytest.raises(t.Invalid, match="suffix"):
        t.generate_request({"prompt": "def f(", "suffix": "return x"}, "m")


@pytest.mark.parametrize(
    ("request_", "legacy", "expected"),
    [
        ({"input": "a"}, False, {"model": "m", "input": "a"}),
        ({"input": ["a", "b"], "dimensions": 8}, False, {"model": "m", "input": ["a", "b"], "dimensions": 8}),
        ({"prompt": "a"}, True, {"model": "m", "input": "a"}),
    ],
)
def test_embed_requests(request_: dict[str, Any], legacy: bool, expected: dict[str, Any]) -> None:
    assert t.embed_request(request_, "m", legacy=legacy) == expected


@pytest.mark.parametrize(
    ("request_", "legacy"), [({"input": []}, False), ({}, False), ({"input": "a"}, True)]
)
def test_bad_embed_requests(request_: dict[str, Any], legacy: bool) -> None:
    with pytest.raises(t.Invalid):
        t.embed_request(request_, "m", legacy=legacy)


def test_a_whole_chat_answer() -> None:
    answer = t.answer("chat", "smollm", completion("a", "smollm2"), time.monotonic())
    assert answer["model"] == "smollm"  # the name the client asked for
    assert answer["message"] == {"role": "assistant", "content": "hello from a"}
    assert (answer["done"], answer["done_reason"]) == (True, "stop")
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (5, 4)
    assert answer["total_duration"] >= 0 and answer["created_at"].endswith("Z")


def test_a_whole_generate_answer_uses_llama_servers_timings() -> None:
    document = completion("a", "m") | {"timings": {"prompt_ms": 1.5, "predicted_ms": 20.0}}
    answer = t.answer("generate", "m", document, time.monotonic())
    assert answer["response"] == "hello from a"
    assert (answer["prompt_eval_duration"], answer["eval_duration"]) == (1_500_000, 20_000_000)


def test_tool_calls_come_back_with_object_arguments() -> None:
    document = completion("a", "m")
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"function": {"name": "f", "arguments": '{"x": 1}'}}],
    }
    document["choices"][0] |= {"message": message, "finish_reason": "tool_calls"}
    answer = t.answer("chat", "m", document, time.monotonic())
    assert answer["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"x": 1}}}]
    assert answer["done_reason"] == "tool_calls"


def test_embed_answers() -> None:
    document = embeddings("m", 2)
    assert t.embed_answer("m", document, time.monotonic())["embeddings"] == [
        [0.25, -0.5, 0.0],
        [0.25, -0.5, 1.0],
    ]
    assert t.embed_answer("m", document, time.monotonic())["prompt_eval_count"] == 4
    assert t.embed_answer("m", embeddings("m", 1), time.monotonic(), legacy=True) == {
        "embedding": [0.25, -0.5, 0.0]
    }


def openai_stream(model: str = "m") -> bytes:
    events = [sse(chunk(model, p)) for p in PIECES] + [
        sse(chunk(model, None, "length")),
        sse(usage_chunk(model)),
    ]
    return b"".join(events) + b"data: [DONE]\n\n"


def lines(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\n") or not data
    return [json.loads(x) for x in data.splitlines()]


@pytest.mark.parametrize("size", [1, 7, 10_000], ids=["byte by byte", "odd slices", "at once"])
def test_a_stream_becomes_ndjson_in_any_slicing(size: int) -> None:
    stream = t.NdjsonStream("chat", "m", time.monotonic())
    data = openai_stream()
    out = b"".join(stream.feed(data[i : i + size]) for i in range(0, len(data), size)) + stream.end()
    parts = lines(out)
    assert "".join(p["message"]["content"] for p in parts) == "".join(PIECES)
    assert [p["done"] for p in parts] == [False] * len(PIECES) + [True]
    last = parts[-1]
    assert (last["done_reason"], last["prompt_eval_count"], last["eval_count"]) == ("length", 6, len(PIECES))
    assert {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"} <= set(last)


def test_a_stream_without_done_still_ends_with_the_done_line() -> None:
    stream = t.NdjsonStream("generate", "m", time.monotonic())
    out = stream.feed(sse(chunk("m", "Hi")) + b": loading m\n\n") + stream.end()
    assert [(p["response"], p["done"]) for p in lines(out)] == [("Hi", False), ("", True)]


def test_an_error_event_becomes_an_error_line_and_ends_the_stream() -> None:
    stream = t.NdjsonStream("chat", "m", time.monotonic())
    event = sse({"error": {"message": "The model server failed mid-stream.", "type": "server_error"}})
    out = stream.feed(sse(chunk("m", "Hi")) + event) + stream.end()
    assert lines(out)[-1] == {"error": "The model server failed mid-stream."}
    assert stream.feed(sse(chunk("m", "more"))) == b""


def test_streamed_tool_call_deltas_are_joined() -> None:
    stream = t.NdjsonStream("chat", "m", time.monotonic())
    deltas = [
        {"index": 0, "id": "c1", "function": {"name": "weather", "arguments": '{"ci'}},
        {"index": 0, "function": {"arguments": 'ty": "Oslo"}'}},
    ]
    events = [
        sse({"choices": [{"index": 0, "delta": {"tool_calls": [d]}, "finish_reason": None}]}) for d in deltas
    ]
    out = stream.feed(b"".join(events) + sse(chunk("m", None, "tool_calls")) + b"data: [DONE]\n\n")
    calls, last = lines(out)
    assert calls["message"]["tool_calls"] == [
        {"function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    ]
    assert last["done_reason"] == "tool_calls"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # llama-server's, vLLM 0.32's
def test_reasoning_is_ollamas_thinking(field: str) -> None:
    stream = t.NdjsonStream("chat", "m", time.monotonic())
    event = sse({"choices": [{"index": 0, "delta": {field: "hmm"}, "finish_reason": None}]})
    assert lines(stream.feed(event))[0]["message"] == {"role": "assistant", "content": "", "thinking": "hmm"}
    generate = t.NdjsonStream("generate", "m", time.monotonic())
    assert lines(generate.feed(event))[0]["thinking"] == "hmm"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_whole_answers_carry_the_thinking(field: str) -> None:
    message = {"role": "assistant", "content": "4", field: "2 and 2"}
    document = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    chat = t.answer("chat", "m", document, time.monotonic())
    assert chat["message"] == {"role": "assistant", "content": "4", "thinking": "2 and 2"}
    assert t.answer("generate", "m", document, time.monotonic())["thinking"] == "2 and 2"
    odd = {"choices": [{"message": {"reasoning": 3}}]}  # not text: left out
    assert "thinking" not in t.answer("chat", "m", odd, 0.0)["message"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"error": {"code": 400, "message": "bad max_tokens", "type": "invalid_request_error"}},
            "bad max_tokens",
        ),
        ({"error": "plain"}, "plain"),
        ({"detail": "x"}, "unknown error"),
    ],
)
def test_error_text(document: dict[str, Any], message: str) -> None:
    assert t.error_text(document) == message


def test_not_found_names_what_is_served() -> None:
    text = t.not_found("llama3", ["smollm2", "smollm"])
    assert text.startswith('model "llama3" not found') and "smollm, smollm2" in text and "manifest" in text


DETAILS = Details(
    format="gguf",
    family="llama",
    parameter_size="135M",
    quantization="Q4_1",
    size=98362432,
    info=(("general.architecture", "llama"), ("llama.context_length", 8192)),
    template="{{ messages }}",
)
TABLE = EndpointTable(
    version=3,
    models=(
        ModelEndpoints(
            "smollm2",
            ("smollm",),
            created=1764120000,
            replicas=(Replica("smollm2-0", "http://a", 2, gpus=("0",)),),
            engine="llamacpp",
            context_length=4096,
            details=DETAILS,
        ),
        ModelEndpoints("cold", created=1764120000, unload_after_s=600.0),
        ModelEndpoints("lazy", replicas=(Replica("lazy-0", "http://b"),), unload_after_s=60.0),
    ),
)


def test_tags_list_every_name_and_alias_with_details() -> None:
    models = lists.tags(TABLE)["models"]
    assert [m["name"] for m in models] == ["smollm2", "smollm", "cold", "lazy"]
    first = models[0]
    assert first["size"] == 98362432 and first["modified_at"] == "2025-11-26T01:20:00Z"
    assert first["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "135M",
        "quantization_level": "Q4_1",
    }
    assert len(first["digest"]) == 64 and models[0]["digest"] == models[1]["digest"]


def test_ps_lists_what_is_loaded_and_until_when() -> None:
    models = {m["name"]: m for m in lists.ps(TABLE, {"lazy": 1764120000.0}, now=1764120100.0)["models"]}
    assert set(models) == {"smollm2", "lazy"}  # cold has no ready replica
    assert models["smollm2"]["expires_at"] == lists.FOREVER  # not on demand: stays
    assert models["smollm2"]["gpus"] == ["0"] and models["smollm2"]["size_vram"] == 98362432
    assert models["smollm2"]["context_length"] == 4096
    assert models["lazy"]["expires_at"] == "2025-11-26T01:21:00Z"  # last use + 60 s
    assert models["lazy"]["size_vram"] == 0


def test_show() -> None:
    shown = lists.show(Target(TABLE.models[0]))
    assert shown["details"]["quantization_level"] == "Q4_1"
    assert shown["model_info"] == {"general.architecture": "llama", "llama.context_length": 8192}
    assert shown["template"] == "{{ messages }}" and shown["parameters"] == "num_ctx 4096"
    assert shown["capabilities"] == ["completion"]


def test_show_capabilities_follow_the_task_and_vision() -> None:
    from dataclasses import replace

    base = TABLE.models[0]
    assert lists.show(Target(replace(base, task="embed")))["capabilities"] == ["embedding"]
    assert lists.show(Target(replace(base, vision=True)))["capabilities"] == ["completion", "vision"]


def test_lookup_takes_the_latest_tag() -> None:
    assert lists.lookup(TABLE, "smollm:latest") == Target(TABLE.models[0])
    assert lists.lookup(TABLE, "smollm:7b") is None


def test_table_details_round_trip_and_older_tables_parse() -> None:
    assert EndpointTable.from_json(TABLE.to_json()) == TABLE
    old = {"version": 1, "models": [{"name": "m", "replicas": [{"id": "m-0", "url": "http://a"}]}]}
    entry = EndpointTable.from_json(old).models[0]
    assert (entry.details, entry.engine, entry.unload_after_s, entry.replicas[0].gpus) == (None, "", None, ())


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (300, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("-1", -1.0),
        (-5, -1.0),
        ("10", 10.0),
    ],
)
def test_keep_alive_takes_ollamas_forms(value: object, seconds: float) -> None:
    assert t.keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", True, None, [1]])
def test_keep_alive_refuses_what_is_not_a_duration(value: object) -> None:
    with pytest.raises(t.Invalid):
        t.keep_alive_seconds(value)
