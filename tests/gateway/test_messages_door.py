"""Anthropic Messages for a llama.cpp model with LoRA adapters, through the gateway: translated to a
chat completion with the adapter's ``lora`` (llama-server's /v1/messages would drop it), the answer
back as a Message, whole and streamed, read by the official ``anthropic`` client. A stand-in
replica on a real aiohttp server records what it got and answers OpenAI chat (JSON, or SSE written
in small slices, as a network may cut it); the metrics count the replica's own usage."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica

ADAPTERS = ("smollm2-a", "smollm2-b")
USER = [{"role": "user", "content": "Write one sentence about the sea."}]
USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}


def sse(document: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-7",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class ChatReplica:
    """llama-server's chat completions, by the adapter the ``lora`` list selects: the answer's text
    names it (``base``, ``a``, ``b``), so a test sees which one ran. ``tool``: answer with a tool call."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.tool = False
        self.status = 200
        self.linger = asyncio.Event()  # a stream's body ends only once this is set
        self.linger.set()
        self.break_after_first = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.answer)
        return app

    def chosen(self, body: dict[str, Any]) -> str:
        on = [entry["id"] for entry in body.get("lora", ()) if entry["scale"] == 1.0]
        return "ab"[on[0]] if on else "base"

    async def answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((request.path, body))
        if self.status != 200:
            error = {"code": self.status, "message": "bad prompt", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=self.status)
        if request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": 11})
        if body.get("stream"):
            return await self.stream(request, body)
        message: dict[str, Any] = {"role": "assistant", "content": f"from {self.chosen(body)}"}
        finish = "stop"
        if self.tool:
            call = {
                "id": "call_9",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
            }
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        answer = {
            "id": "chatcmpl-7",
            "object": "chat.completion",
            "model": body["model"],
            "usage": USAGE,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        return web.json_response(answer)

    def events(self, body: dict[str, Any]) -> bytes:
        if self.tool:
            call = {
                "index": 0,
                "id": "call_9",
                "type": "function",
                "function": {"name": "weather", "arguments": ""},
            }
            pieces = [
                chunk({"tool_calls": [call]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Oslo"}'}}]}),
                chunk({}, "tool_calls"),
            ]
        else:
            text = f"from {self.chosen(body)}"
            pieces = [chunk({"role": "assistant", "content": None})]
            pieces += [chunk({"content": text[:3]}), chunk({"content": text[3:]}), chunk({}, "stop")]
        if (body.get("stream_options") or {}).get("include_usage"):
            pieces.append({"id": "chatcmpl-7", "choices": [], "usage": USAGE})
        return b"".join(sse(p) for p in pieces) + b"data: [DONE]\n\n"

    async def stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        data = self.events(body)
        if self.break_after_first:  # one event and a part of the next, then the connection drops
            await resp.write(data[: data.index(b"\n\n") + 15])
            assert request.transport is not None
            request.transport.close()
            return resp
        for at in range(0, len(data), 13):  # events cut mid-line and mid-character
            await resp.write(data[at : at + 13])
            await asyncio.sleep(0)
        await self.linger.wait()
        return resp


@pytest.fixture
async def replica(aiohttp_server: Any) -> tuple[ChatReplica, str]:
    fake = ChatReplica()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


def table(url: str) -> EndpointTable:
    replicas = (Replica("smollm2-0", url, max_concurrency=4),)
    return EndpointTable(
        version=1,
        models=(
            ModelEndpoints("smollm2", replicas=replicas, engine="llamacpp", adapters=ADAPTERS, vision=False),
            ModelEndpoints("plain", replicas=(Replica("plain-0", url, 4),), engine="llamacpp"),
        ),
    )


def claude(gateway: TestClient[Any, Any]) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(gateway.make_url("")), api_key="unused", max_retries=0, timeout=10
    )


async def scrape(gateway: TestClient[Any, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await gateway.get("/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def tokens(samples: dict[Any, float], model: str, kind: str) -> float:
    labels = (("api", "anthropic"), ("kind", kind), ("model", model))
    return samples.get(("modelctl_gateway_tokens_total", labels), 0.0)


async def test_each_name_gets_its_adapter_as_a_message(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    gateway = await start_gateway(table(url))
    async with claude(gateway) as client:
        answers = {}
        for name in ("smollm2", "smollm2-a", "smollm2:smollm2-b"):
            message = await client.messages.create(
                model=name,
                max_tokens=16,
                system="Be brief.",
                messages=USER,  # type: ignore[arg-type]
                extra_body={"temperature": 0},  # this client has no temperature of its own
            )
            answers[name] = message
    assert {n: m.content[0].text for n, m in answers.items()} == {  # type: ignore[union-attr]
        "smollm2": "from base",
        "smollm2-a": "from a",
        "smollm2:smollm2-b": "from b",
    }
    message = answers["smollm2-a"]
    assert (message.id, message.model, message.stop_reason, message.role) == (
        "msg_7",
        "smollm2-a",
        "end_turn",
        "assistant",
    )
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    path, body = fake.seen[1]
    assert path == "/v1/chat/completions"
    assert body == {
        "model": "smollm2",
        "messages": [{"role": "system", "content": "Be brief."}, *USER],
        "max_tokens": 16,
        "temperature": 0,
        "lora": [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}],
    }
    assert [b["lora"] for _, b in fake.seen] == [
        [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}],
        [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.0}],
        [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}],
    ]
    samples = await scrape(gateway)
    assert (tokens(samples, "smollm2-a", "prompt"), tokens(samples, "smollm2-a", "completion")) == (11, 3)
    requests = (
        "modelctl_gateway_requests_total",
        (("api", "anthropic"), ("model", "smollm2-b"), ("replica", "smollm2-0"), ("status", "200")),
    )
    assert samples[requests] == 1


async def test_a_stream_is_anthropics_events_and_counts_the_replicas_usage(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    gateway = await start_gateway(table(url))
    async with (
        claude(gateway) as client,
        client.messages.stream(model="smollm2-b", max_tokens=16, messages=USER) as stream,  # type: ignore[arg-type]
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "from b" and final.content[0].text == "from b"  # type: ignore[union-attr]
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 11, 3)
    assert fake.seen[0][1]["stream"] is True and fake.seen[0][1]["stream_options"] == {"include_usage": True}
    samples = await scrape(gateway)
    assert (tokens(samples, "smollm2-b", "prompt"), tokens(samples, "smollm2-b", "completion")) == (11, 3)


async def test_tool_calls_come_back_as_tool_use_blocks(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    fake.tool = True
    gateway = await start_gateway(table(url))
    tool = {"name": "weather", "description": "The weather.", "input_schema": {"type": "object"}}
    async with claude(gateway) as client:
        whole = await client.messages.create(model="smollm2-a", max_tokens=16, messages=USER, tools=[tool])  # type: ignore[arg-type,list-item]
        async with client.messages.stream(
            model="smollm2-a", max_tokens=16, messages=USER, tools=[tool]
        ) as stream:  # type: ignore[arg-type,list-item]
            streamed = await stream.get_final_message()
    for message in (whole, streamed):
        assert message.stop_reason == "tool_use"
        [block] = message.content
        assert (block.type, block.id, block.name, block.input) == (
            "tool_use",
            "call_9",
            "weather",
            {"city": "Oslo"},
        )  # type: ignore[union-attr]
    assert fake.seen[0][1]["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": {"type": "object"}, "description": "The weather."},
        }
    ]


async def test_what_is_not_translated_is_one_400_and_reaches_no_replica(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    gateway = await start_gateway(table(url))
    document = [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]
    async with claude(gateway) as client:
        with pytest.raises(anthropic.BadRequestError, match=r"messages\[0\]\.content\[0\]\.type"):
            await client.messages.create(
                model="smollm2-a", max_tokens=8, messages=[{"role": "user", "content": document}]
            )  # type: ignore[list-item]
        with pytest.raises(anthropic.BadRequestError, match="mcp_servers: this field is not translated"):
            await client.messages.create(
                model="smollm2", max_tokens=8, messages=USER, extra_body={"mcp_servers": []}
            )  # type: ignore[arg-type]
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
        with pytest.raises(anthropic.BadRequestError, match="takes no images"):
            await client.messages.create(
                model="smollm2-b", max_tokens=8, messages=[{"role": "user", "content": [image]}]
            )  # type: ignore[list-item]
    assert fake.seen == []


async def test_the_replicas_errors_come_in_anthropics_shape(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    fake.status = 400
    gateway = await start_gateway(table(url))
    async with claude(gateway) as client:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await client.messages.create(model="smollm2-a", max_tokens=8, messages=USER)  # type: ignore[arg-type]
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad prompt"},
    }


async def test_a_replica_failing_mid_stream_ends_it_with_an_error_event(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    fake.break_after_first = True
    gateway = await start_gateway(table(url))
    body = {"model": "smollm2-a", "max_tokens": 8, "stream": True, "messages": USER}
    resp = await gateway.post("/v1/messages", json=body)
    text = await resp.text()
    assert resp.status == 200 and text.startswith("event: message_start\n")
    last = text.split("\n\n")[-2]
    assert text.endswith("\n\n") and last.startswith("event: error\ndata: ") and "mid-stream" in last
    assert "message_stop" not in text


async def test_a_client_leaving_right_after_message_stop_was_served(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    fake.linger.clear()  # the replica's body stays open after [DONE]
    gateway = await start_gateway(table(url))
    body = {"model": "smollm2-a", "max_tokens": 8, "stream": True, "messages": USER}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(str(gateway.make_url("/v1/messages")), json=body)
        async for line in resp.content:
            if line.startswith(b"event: message_stop"):
                break
        resp.close()
    ok = (
        "modelctl_gateway_requests_total",
        (("api", "anthropic"), ("model", "smollm2-a"), ("replica", "smollm2-0"), ("status", "200")),
    )
    samples: dict[Any, float] = {}

    async def counted() -> bool:
        nonlocal samples
        samples = await scrape(gateway)
        return samples.get(ok) == 1

    deadline = asyncio.get_running_loop().time() + 5
    while not await counted():
        assert asyncio.get_running_loop().time() < deadline, "the stream was not counted as served"
        await asyncio.sleep(0.02)
    assert (tokens(samples, "smollm2-a", "prompt"), tokens(samples, "smollm2-a", "completion")) == (11, 3)
    fake.linger.set()


async def test_other_messages_requests_pass_as_sent(
    replica: tuple[ChatReplica, str], start_gateway: Any
) -> None:
    fake, url = replica
    gateway = await start_gateway(table(url))
    raw = b'{"model": "plain", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}'
    resp = await gateway.post("/v1/messages", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    # Counting tokens runs no model: an adapter's count is the tokenizer's, passed through.
    resp = await gateway.post("/v1/messages/count_tokens", json={"model": "smollm2-a", "messages": USER})
    assert resp.status == 200 and await resp.json() == {"input_tokens": 11}
    assert [path for path, _ in fake.seen] == ["/v1/messages", "/v1/messages/count_tokens"]
    assert fake.seen[0][1] == json.loads(raw)
