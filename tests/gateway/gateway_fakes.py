"""Small real HTTP servers standing in for llama-server replicas and the controller's table API.

They answer the way the real ones do (chat.completion JSON with ``usage``, SSE chunks ending in
``data: [DONE]``, 503 "Loading model"), over real sockets, so the gateway is tested as deployed.
Hooks (``gate``, ``endless``, ``break_after_first``) let a test hold a stream at a known point.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controller.endpoints.demand import DemandReport
from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import GatewaySettings, run_gateway

PIECES = ("Hel", "lo", " there", "!")


# The conftest fixtures' types: start a fake replica (-> it, its URL); start the gateway over a table.
StartUpstream = Callable[..., Awaitable[tuple["FakeLlamaServer", str]]]
StartGateway = Callable[..., Awaitable[TestClient[Any, Any]]]


@dataclass
class Seen:
    """One request as a fake upstream received it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def sse(document: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def completion(server: str, model: str) -> dict[str, Any]:
    """A non-streamed chat.completion as llama-server answers it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1764120000,
        "model": model,
        "system_fingerprint": server,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"hello from {server}"},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }


def text_completion(server: str, model: str) -> dict[str, Any]:
    """A non-streamed text_completion (``/v1/completions``)."""
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1764120000,
        "model": model,
        "system_fingerprint": server,
        "choices": [{"index": 0, "text": f"hello from {server}", "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def embeddings(model: str, count: int) -> dict[str, Any]:
    """An embeddings list as llama-server answers it (its JSON keys sorted: usage last)."""
    data = [{"embedding": [0.25, -0.5, float(i)], "index": i, "object": "embedding"} for i in range(count)]
    return {
        "data": data,
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": 2 * count, "total_tokens": 2 * count},
    }


def usage_chunk(model: str) -> dict[str, Any]:
    """The last chunk of a stream that asked ``stream_options.include_usage``."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1764120000,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": 6, "completion_tokens": len(PIECES), "total_tokens": 6 + len(PIECES)},
    }


def chunk(model: str, content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1764120000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class FakeLlamaServer:
    """A llama-server look-alike: chat and text completions (JSON or SSE), embeddings, /health."""

    def __init__(self, name: str, *, status: int = 200, chunk_delay_s: float = 0.01) -> None:
        self.name = name
        self.status = status  # 503 is what llama-server answers while it loads the model
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[Seen] = []
        self.gate: asyncio.Event | None = None  # a stream waits on it after its first chunk
        self.endless = False  # a stream goes on until the connection is closed
        self.break_after_first = False  # drop the connection after the first chunk
        self.break_mid_event = False  # ... after the first chunk and half of the next event
        self.truncate_json = False  # promise a long JSON body, send a few bytes, drop it
        self.promised_length = 1000  # the Content-Length a truncated answer promises
        self.sent_last = False
        self.linger_s = 0.0  # after the last event, wait this long before ending the body
        self.skip_message_start = False  # as llama-server does when the first token ends mid-character
        self.cancelled = asyncio.Event()  # set when the stream was cut off from our side
        self.hold: asyncio.Event | None = None  # every request waits on it before answering
        self.active = 0  # requests being answered now
        self.most_active = 0  # the most answered at once

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.chat)
        app.router.add_post("/v1/rerank", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Seen(request.path, body, dict(request.headers)))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.hold is not None:
                await self.hold.wait()
            return await self._answer(request, body)
        finally:
            self.active -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.status != 200:
            error = {"code": self.status, "message": "Loading model", "type": "unavailable_error"}
            return web.json_response({"error": error}, status=self.status)
        if self.truncate_json:
            return await self._truncated(request)
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, body["model"], usage=usage)
        if request.path == "/v1/embeddings":
            count = len(body["input"]) if isinstance(body.get("input"), list) else 1
            return web.json_response(embeddings(body["model"], count))
        if request.path == "/v1/completions":
            return web.json_response(text_completion(self.name, body["model"]))
        return web.json_response(completion(self.name, body["model"]), headers={"X-Served": "1"})

    async def _truncated(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = self.promised_length
        await resp.prepare(request)
        await resp.write(b'{"id": "chatcmpl-1", ')
        assert request.transport is not None
        request.transport.close()
        return resp

    async def _stream(self, request: web.Request, model: str, *, usage: bool = False) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(sse(chunk(model, PIECES[0])))
            if self.break_mid_event:
                await resp.write(sse(chunk(model, PIECES[1]))[:40])
            if self.break_after_first or self.break_mid_event:
                assert request.transport is not None
                request.transport.close()
                return resp
            if self.gate is not None:
                await self.gate.wait()
            while self.endless:
                await asyncio.sleep(self.chunk_delay_s)
                await resp.write(sse(chunk(model, ".")))
            for piece in PIECES[1:]:
                await asyncio.sleep(self.chunk_delay_s)
                await resp.write(sse(chunk(model, piece)))
            await resp.write(sse(chunk(model, None, "stop")))
            if usage:
                await resp.write(sse(usage_chunk(model)))
            await resp.write(b"data: [DONE]\n\n")
            self.sent_last = True
            if self.linger_s:  # the body's end comes later (a client may hang up meanwhile)
                await asyncio.sleep(self.linger_s)
        except (asyncio.CancelledError, ConnectionError):
            self.cancelled.set()
            raise
        return resp

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic Messages as llama-server answers them (prompt tokens first when streamed)."""
        body = await request.json()
        self.requests.append(Seen(request.path, body, dict(request.headers)))
        self.active += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            return await self._message(request, body)
        finally:
            self.active -= 1

    async def _message(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.status != 200:
            error = {"code": self.status, "message": "Loading model"}
            return web.json_response({"error": error}, status=self.status)
        text = f"hello from {self.name}"
        if not body.get("stream"):
            return web.json_response(anthropic_message(body["model"], text))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = anthropic_events(body["model"], text)
        for event in events[1:] if self.skip_message_start else events:
            await resp.write(event)
            if self.break_after_first:
                assert request.transport is not None
                request.transport.close()
                return resp
            await asyncio.sleep(self.chunk_delay_s)
        if self.linger_s:
            await asyncio.sleep(self.linger_s)
        return resp


def anthropic_message(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "model": model,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }


def anthropic_events(model: str, text: str) -> list[bytes]:
    """A Messages stream as llama-server sends it: input tokens in message_start, output at the end."""
    start = {**anthropic_message(model, ""), "content": [], "stop_reason": None}
    start["usage"] = {"cache_read_input_tokens": 5, "input_tokens": 2, "output_tokens": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


class FakeController:
    """The controller's ``GET /v1/endpoints?after=&wait=`` long poll, over a table a test sets, and
    its ``POST /v1/demand`` (the reports it got, in order; ``demand_status`` is its answer)."""

    def __init__(self, table: EndpointTable) -> None:
        self.table = table
        self.reports: list[DemandReport] = []
        self.demand_status = 204
        self.polls = 0
        self.answered: list[int] = []  # the version each poll got, in order
        self.garbage = False  # answer HTML instead of the table
        self._changed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/endpoints", self.endpoints)
        app.router.add_post("/v1/demand", self.demand)
        app.on_shutdown.append(self._wake)
        return app

    def publish(self, table: EndpointTable) -> None:
        self.table = table
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wake(self, _: web.Application) -> None:
        self._changed.set()

    async def demand(self, request: web.Request) -> web.Response:
        if self.demand_status == 204:
            self.reports.append(DemandReport.from_json(await request.json()))
        return web.Response(status=self.demand_status)

    async def endpoints(self, request: web.Request) -> web.Response:
        self.polls += 1
        if self.garbage:
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        after = request.query.get("after")
        if after is not None and int(after) == self.table.version:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(float(request.query["wait"])):
                    await self._changed.wait()
        self.answered.append(self.table.version)
        return web.json_response(self.table.to_json())


async def start_closing_server() -> tuple[asyncio.Server, str]:
    """A server that accepts a connection, reads the request head, and hangs up without a word."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def refused_url() -> str:
    """A URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def table_of(
    *models: tuple[str, tuple[str, ...], list[str]],
    version: int = 1,
    max_concurrency: int = 4,
    balancing: str = "least-outstanding",
    task: str = "generate",
) -> EndpointTable:
    """A table from (name, aliases, replica urls); replica ids are ``name-<index>``; every model
    serves ``task``."""
    return EndpointTable(
        version=version,
        models=tuple(
            ModelEndpoints(
                name=name,
                aliases=aliases,
                created=1764120000,
                replicas=tuple(Replica(f"{name}-{i}", url, max_concurrency) for i, url in enumerate(urls)),
                balancing=balancing,
                task=task,
            )
            for name, aliases, urls in models
        ),
    )


def with_tasks(table: EndpointTable, **tasks: str) -> EndpointTable:
    """``table`` with the models named given those tasks (``e="embed"``)."""
    models = tuple(dataclasses.replace(m, task=tasks.get(m.name, m.task)) for m in table.models)
    return dataclasses.replace(table, models=models)


async def eventually(predicate: Callable[[], bool], *, within_s: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail the test if ``within_s`` passes first."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(0.01)


async def start_one_answer_per_connection_server() -> tuple[asyncio.Server, str]:
    """A server that answers the first request of a connection as if keep-alive, then hangs up on
    the next one without a word (as llama-server does after a streamed answer): the connection
    the client pooled is dead, though it looked alive."""
    answer = b'{"object": "chat.completion", "choices": [{"message": {"content": "ok"}}]}'

    async def read_request(reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lengths = [
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        ]
        await reader.readexactly(int(lengths[0]) if lengths else 0)

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nKeep-Alive: timeout=5\r\n"
                b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer
            )
            await writer.drain()
            await read_request(reader)
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def running_workers(
    url: str, port: int, workers: int = 2
) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """The real gateway (``run_gateway``) with ``workers`` processes on ``port``, following a fake
    controller whose table has model "m" on ``url``; yields its base URL and its task. On exit a
    gateway still running is cancelled and must end by that cancellation, not by an error."""
    controller = TestServer(FakeController(table_of(("m", (), [url]))).app())
    await controller.start_server()
    settings = GatewaySettings(
        host="127.0.0.1",
        port=port,
        controller_url=str(controller.make_url("")),
        workers=workers,
        tune_gc=False,  # the parent is the test process (its workers get the same settings)
    )
    gateway = asyncio.create_task(run_gateway(settings))
    try:
        yield f"http://127.0.0.1:{port}", gateway
    finally:
        if not gateway.done():
            gateway.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gateway
        await controller.close()


def one_connection() -> aiohttp.ClientSession:
    """One connection, kept alive: all its requests reach the worker that accepted it."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))


async def worker_pid(session: aiohttp.ClientSession, base: str) -> int:
    """The pid of the gateway worker process ``session``'s connection reached."""
    async with session.get(f"{base}/healthz") as resp:
        pid: int = (await resp.json())["pid"]
        return pid


async def until_ready(base: str) -> None:
    """Poll (the caller holds the deadline) until some worker has the controller's table."""
    while True:
        try:
            async with one_connection() as session, session.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
