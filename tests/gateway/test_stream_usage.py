"""Streams are counted in tokens whether or not the client asked for usage: the gateway asks the
engine for it and takes the usage chunk out of what a client that did not ask receives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from gateway_fakes import PIECES, StartGateway, StartUpstream, chunk, sse, table_of, usage_chunk

from controller.gateway.forward.usage import UsageStrip, ask_for_usage

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def events(body: bytes) -> list[Any]:
    """The data of each event, JSON parsed (``[DONE]`` as the string)."""
    out = []
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[6:]
            out.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return out


async def rows(gateway: TestClient[Any, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await (await gateway.get("/metrics/requests")).json())["models"]["m"]
    return found


async def test_a_stream_without_include_usage_gets_no_usage_chunk_but_is_counted(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])))
    resp = await gateway.post(CHAT, json=ASK)
    got = events(await resp.read())
    assert got[-1] == "[DONE]"
    assert all("usage" not in e for e in got[:-1]), "the client did not ask for usage"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in got[:-1]) == "".join(PIECES)
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}, "the gateway asked"
    [row] = await rows(gateway)
    assert (row["prompt_tokens"], row["output_tokens"]) == (6, len(PIECES))
    text = await (await gateway.get("/metrics")).text()
    counted = f'modelctl_gateway_tokens_total{{api="openai",kind="completion",model="m"}} {len(PIECES)}.0'
    assert counted in text


async def test_a_client_that_asked_gets_its_usage_chunk_exactly_once(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])))
    body = {**ASK, "stream_options": {"include_usage": True}}
    got = events(await (await gateway.post(CHAT, json=body)).read())
    assert [e for e in got if isinstance(e, dict) and "usage" in e] == [usage_chunk("m")]
    assert fake.requests[0].body == body, "forwarded unchanged"


async def test_a_client_that_said_no_keeps_its_other_options_and_gets_no_usage(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])))
    body = {**ASK, "stream_options": {"include_usage": False, "continuous_usage_stats": False}}
    got = events(await (await gateway.post(CHAT, json=body)).read())
    assert all("usage" not in e for e in got[:-1])
    assert fake.requests[0].body["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    assert (await rows(gateway))[0]["output_tokens"] == len(PIECES)


async def test_a_named_keys_token_limit_holds_for_streams(
    tmp_path: Path, start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    keys = tmp_path / "keys.yaml"
    keys.write_text("alice: {key: sk-alice, tokens_per_minute: 5}\n")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=keys)
    auth = {"Authorization": "Bearer sk-alice"}
    assert (await (await gateway.post(CHAT, json=ASK, headers=auth)).read()).endswith(b"[DONE]\n\n")
    refused = await gateway.post(CHAT, json=ASK, headers=auth)
    assert refused.status == 429, "the stream's 10 tokens count against the key's 5 a minute"
    assert (await refused.json())["error"]["code"] == "key_rate_limited"
    text = await (await gateway.get("/metrics")).text()
    assert f'modelctl_gateway_key_tokens_total{{key="alice",kind="completion"}} {len(PIECES)}.0' in text


async def test_a_non_streamed_request_is_forwarded_unchanged(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])))
    raw = b'  {"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    resp = await gateway.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert "stream_options" not in fake.requests[0].body


# The stream as the engine sends it when asked: three pieces, the finish, the usage chunk, [DONE].
ASKED = b"".join(
    [
        *(sse(chunk("m", p)) for p in PIECES),
        sse(chunk("m", None, "stop")),
        sse(usage_chunk("m")),
        b"data: [DONE]\n\n",
    ]
)
USAGE_EVENT = sse(usage_chunk("m"))


class Kept:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)


@pytest.mark.parametrize("size", [1, 2, 7, 64, 300, len(ASKED)])
def test_the_strip_takes_out_the_usage_chunk_however_the_stream_is_cut(size: int) -> None:
    tail = Kept()
    strip = UsageStrip(tail)
    out = b"".join(strip.feed(ASKED[i : i + size]) for i in range(0, len(ASKED), size)) + strip.flush()
    assert out == ASKED.replace(USAGE_EVENT, b"")
    assert tail.chunks == [USAGE_EVENT]


def test_the_strip_leaves_usage_inside_a_chunk_with_choices_and_an_unended_tail() -> None:
    with_choices = sse({**chunk("m", "x"), "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    strip = UsageStrip(None)
    assert strip.feed(with_choices + b"data: [DO") == with_choices
    assert strip.flush() == b"data: [DO"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "stream": true}',
        b' \n{"model": "m", "stream": true, "messages": []}',
        b'{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}',
        b'{"model":"m","stream":true,"stream_options":null}',
        b'{"model":"m","stream":true,"stream_options":1,"stream_options":{"a":2}}',
        '{"model": "m", "stream": true}'.encode("utf-16"),
    ],
)
def test_asking_for_usage_keeps_the_rest_of_the_body(body: bytes) -> None:
    document = json.loads(body)
    asked = json.loads(ask_for_usage(body, document))
    options = document.get("stream_options")
    expected = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    assert asked == {**document, "stream_options": expected}
