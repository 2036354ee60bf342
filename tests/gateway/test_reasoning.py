"""vLLM's ``reasoning`` also as ``reasoning_content`` (where llama-server, DeepSeek and most clients
read a model's thinking), in whole answers and in streams cut anywhere; other engines, other APIs
and answers without thinking pass byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import GatewaySettings, StaticTable, create_app
from controller.gateway.forward.reasoning import Chain, ReasoningAlias, alias_body
from controller.gateway.forward.usage import UsageStrip

WHOLE = {
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4", "reasoning": "2+2 is 4"}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3},
}
CHUNKS = [
    {"choices": [{"index": 0, "delta": {"reasoning": "2+2"}}]},
    {"choices": [{"index": 0, "delta": {"reasoning": ' is "4"'}}]},
    {"choices": [{"index": 0, "delta": {"content": "4"}}]},
]
STREAM = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in CHUNKS) + b"data: [DONE]\n\n"


def deltas(stream: bytes) -> list[dict[str, Any]]:
    events = [e for e in stream.split(b"\n\n") if e.startswith(b"data: {")]
    return [json.loads(e[6:])["choices"][0]["delta"] for e in events]


def test_a_whole_answer_gets_the_alias_and_keeps_the_original() -> None:
    message = json.loads(alias_body(json.dumps(WHOLE).encode()))["choices"][0]["message"]
    assert message["reasoning"] == message["reasoning_content"] == "2+2 is 4"
    assert message["content"] == "4"


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"choices": [{"message": {"content": 'the word reasoning, quoted: "reasoning"'}}]}),
        json.dumps({"choices": [{"message": {"reasoning_content": "x", "reasoning": "x"}}]}),
        "not json",
        json.dumps({"choices": "x", "reasoning": 1}),
    ],
)
def test_bodies_with_nothing_to_add_pass_as_they_came(body: str) -> None:
    assert alias_body(body.encode()) == body.encode()


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_a_stream_cut_anywhere_gets_the_alias_in_each_delta(size: int) -> None:
    alias = ReasoningAlias()
    out = b"".join(alias.feed(STREAM[i : i + size]) for i in range(0, len(STREAM), size)) + alias.flush()
    got = deltas(out)
    assert [d.get("reasoning_content") for d in got] == ["2+2", ' is "4"', None]
    assert [d.get("reasoning") for d in got] == ["2+2", ' is "4"', None]
    assert out.endswith(b"data: [DONE]\n\n")


def test_after_the_usage_strip_too() -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\n\n'
    mending = Chain(UsageStrip(None), ReasoningAlias())
    out = mending.feed(STREAM[:-14] + usage + STREAM[-14:]) + mending.flush()
    assert b'"usage"' not in out and [d.get("reasoning_content") for d in deltas(out)][:2] == [
        "2+2",
        ' is "4"',
    ]


async def engine(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if body.get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(STREAM)
        return resp
    return web.json_response(WHOLE)


@pytest.mark.parametrize(("engine_name", "aliased"), [("vllm", True), ("llamacpp", False)])
async def test_through_the_gateway_only_vllm_answers_are_aliased(
    aiohttp_server: Any, aiohttp_client: Any, engine_name: str, aliased: bool
) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", engine)
    server = await aiohttp_server(app)
    replica = Replica("m-0", str(server.make_url("")).rstrip("/"), 4)
    table = EndpointTable(version=1, models=(ModelEndpoints("m", replicas=(replica,), engine=engine_name),))
    client = await aiohttp_client(create_app(StaticTable(table), GatewaySettings()))
    ask = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}]}
    whole = await (await client.post("/v1/chat/completions", json=ask)).json()
    assert ("reasoning_content" in whole["choices"][0]["message"]) is aliased
    streamed = await (await client.post("/v1/chat/completions", json=ask | {"stream": True})).read()
    assert [d.get("reasoning_content") for d in deltas(streamed)][:1] == (["2+2"] if aliased else [None])
