"""The gateway against hostile engines and clients, over real sockets: nobody starves it or swells it.

Engines (raw asyncio servers) that stream forever, send events with no end, lie about lengths, send
garbage framing or answers past the caps; clients that stop reading, trickle their head or body in,
or open connections and idle. After each, the slot is back, the replica's connection closed, and
the next request is served. The gateway is served as ``modelctl gateway`` serves it
(``server.app_runner`` and ``server.listen``: handler cancellation, idle timeout, connection bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import GatewaySettings, StaticTable, create_app
from controller.gateway.app import ADMISSION, BALANCER
from controller.gateway.forward.events import MAX_EVENT_BYTES
from controller.gateway.serving.httplog import SERVER_LOGGER, QuietParseErrors
from controller.gateway.serving.server import app_runner, listen

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**ASK, "stream": True}
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]}\n\n'
DONE = b"data: [DONE]\n\n"
COMPLETION = {
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}

# An engine's answer to one request: it writes to the gateway's connection whatever it likes.
Answer = Callable[[dict[str, Any], asyncio.StreamWriter], Awaitable[None]]


def json_head(length: int, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (content_type, length)


async def whole_json(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
    data = json.dumps(COMPLETION).encode()
    writer.write(json_head(len(data)) + data)
    await writer.drain()


async def forever(writer: asyncio.StreamWriter, piece: bytes) -> None:
    """Write ``piece`` until the gateway goes away (the body is framed by the connection's end)."""
    while True:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)


@dataclass
class Engine:
    """A model server that answers each request with ``answer``; a stream (``"stream": true``)
    with ``stream`` when given. ``cut`` is set when the gateway closed a connection mid-answer."""

    answer: Answer = whole_json
    stream: Answer | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)content-length: *(\d+)", head)
                body = json.loads(await reader.readexactly(int(match.group(1)) if match else 0))
                self.bodies.append(body)
                answer = self.stream if body.get("stream") and self.stream is not None else self.answer
                try:
                    await answer(body, writer)
                except ConnectionError:
                    self.cut.set()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def engine(answer: Answer = whole_json, stream: Answer | None = None) -> AsyncIterator[Engine]:
    fake = Engine(answer, stream)
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    fake.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield fake
    finally:
        server.close()
        for writer in fake.writers:
            writer.transport.abort()


@dataclass
class Gateway:
    app: web.Application
    url: str
    port: int

    def in_flight(self) -> int:
        return self.app[BALANCER].in_flight("m-0")

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.post(self.url + path, json=body) as resp:
            return resp.status, await resp.read()

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(self.url + "/metrics") as resp:
            return await resp.text()


@contextlib.asynccontextmanager
async def gateway(url: str, **options: Any) -> AsyncIterator[Gateway]:
    """The gateway over one model "m" with one replica at ``url`` taking one request at a time."""
    table = EndpointTable(
        version=1, models=(ModelEndpoints(name="m", created=1, replicas=(Replica("m-0", url, 1),)),)
    )
    settings = GatewaySettings(**{"tune_gc": False, **options})
    app = create_app(StaticTable(table), settings)
    runner = app_runner(app, settings)
    await listen(runner, settings, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    try:
        yield Gateway(app, f"http://127.0.0.1:{port}", port)
    finally:
        await runner.cleanup()


def raw_post(path: str, body: bytes, *, length: int | None = None) -> bytes:
    declared = len(body) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode() + body


async def connect(port: int, *, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting: the window the gateway sees is small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def closed_by_peer(sock: socket.socket, *, within_s: float) -> bytes:
    """Read until the gateway closes ``sock``; return what came. Fails after ``within_s``."""
    loop = asyncio.get_running_loop()
    got = b""
    async with asyncio.timeout(within_s):
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                return got
            if not data:
                return got
            got += data


async def eventually(predicate: Callable[[], bool], *, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {within_s}s"
        await asyncio.sleep(0.02)


# --- a client that stops reading ------------------------------------------------------------------


async def endless_events(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
    writer.write(SSE_HEAD)
    await forever(writer, EVENT * 200)


async def test_a_client_that_stops_reading_loses_its_slot_and_the_next_is_served() -> None:
    async with engine(stream=endless_events) as fake, gateway(fake.url, write_timeout_s=1.0) as gw:
        sock = await connect(gw.port, receive_buffer=4096)
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, raw_post(CHAT, json.dumps(STREAM).encode()))
            await eventually(lambda: gw.in_flight() == 1)
            # It reads nothing from now on: the write deadline cuts it, the replica's connection too.
            async with asyncio.timeout(15):
                await fake.cut.wait()
            await eventually(lambda: gw.in_flight() == 0)
            async with asyncio.timeout(15):
                status, body = await gw.post(CHAT, ASK)  # the one slot serves the next request
            assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "ok"
            assert 'status="499"' in await gw.metrics()
        finally:
            sock.close()


# --- the parsed body is not kept; queued bytes are bounded -------------------------------------------


@contextlib.asynccontextmanager
async def one_busy_slot(**options: Any) -> AsyncIterator[tuple[Gateway, asyncio.Event]]:
    """A gateway whose one slot is taken by a stream held until the event is set."""
    release = asyncio.Event()

    async def held(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + EVENT)
        await writer.drain()
        await release.wait()
        writer.write(DONE)
        writer.close()

    async with engine(stream=held) as fake, gateway(fake.url, **options) as gw:
        session = aiohttp.ClientSession()
        resp = await session.post(gw.url + CHAT, json=STREAM)
        assert resp.status == 200
        try:
            yield gw, release
        finally:
            release.set()
            resp.close()
            await session.close()


@pytest.mark.parametrize(("path", "extra"), [(CHAT, {}), ("/api/chat", {"stream": False})])
async def test_a_waiting_request_keeps_its_bytes_not_its_parsed_document(
    path: str, extra: dict[str, Any]
) -> None:
    # 4 MiB of [{},{},...]: about 1.4 million dicts parsed, some 100 MiB; the bytes are 4 MiB.
    body = json.dumps({**ASK, **extra, "padding": [{}] * (4 * 1024 * 1024 // 4)}).encode()
    async with one_busy_slot(queue_timeout_s=30) as (gw, release):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            async with aiohttp.ClientSession() as session:
                waiting = asyncio.ensure_future(session.post(gw.url + path, data=body))
                await eventually(lambda: gw.app[ADMISSION].queue_depth("m") == 1)
                held = tracemalloc.get_traced_memory()[0] - before
                release.set()
                (await waiting).close()
        finally:
            tracemalloc.stop()
    assert held < 24 * 1024 * 1024, f"{held / 2**20:.0f} MiB held by one waiting request of 4 MiB"


async def test_queued_bytes_are_bounded_with_a_429() -> None:
    big = {**ASK, "padding": "x" * (1024 * 1024)}
    async with one_busy_slot(max_queued_bytes=3 * 1024 * 1024, queue_timeout_s=30) as (gw, release):
        async with aiohttp.ClientSession() as session:
            waiting = [asyncio.ensure_future(session.post(gw.url + CHAT, json=big)) for _ in range(2)]
            await eventually(lambda: gw.app[ADMISSION].queue_depth("m") == 2)
            async with session.post(gw.url + CHAT, json=big) as refused:
                assert refused.status == 429
                error = (await refused.json())["error"]
            assert error["code"] == "queue_full" and "bytes" in error["message"]
            release.set()
            for resp in await asyncio.gather(*waiting):
                assert resp.status == 200
                resp.close()
        await eventually(lambda: gw.in_flight() == 0)


# --- caps on what the gateway holds of an answer ------------------------------------------------------


async def test_an_ollama_answer_past_the_cap_is_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controller.gateway.forward.proxy.MAX_WHOLE_ANSWER_BYTES", 1024 * 1024)

    async def endless_json(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"x": [')
        await forever(writer, b"0," * 8192)

    async with engine(endless_json) as fake, gateway(fake.url) as gw:
        async with asyncio.timeout(30):
            status, body = await gw.post("/api/chat", {**ASK, "stream": False})
            await fake.cut.wait()
        assert status == 502
        assert "larger than the gateway's limit" in json.loads(body)["error"]  # Ollama's shape
        await eventually(lambda: gw.in_flight() == 0)


@pytest.mark.parametrize("path", ["/api/chat", "/v1/responses"])
async def test_an_event_that_never_ends_ends_the_stream_with_an_error(path: str) -> None:
    async def unending(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + EVENT + b'data: {"choices": "')
        await forever(writer, b"y" * 65536)

    async with engine(stream=unending) as fake, gateway(fake.url) as gw:
        async with asyncio.timeout(30):
            status, body = await gw.post(path, {**STREAM, "input": "hi"})
            await fake.cut.wait()
        assert status == 200
        assert len(body) < MAX_EVENT_BYTES
        if path == "/api/chat":
            lines = body.splitlines()
            assert json.loads(lines[0])["message"]["content"] == "x"
            assert "longer than" in json.loads(lines[-1])["error"]
        else:
            last = body.rsplit(b"\n\n", 2)[-2]
            assert body.endswith(b"\n\n") and b'"upstream_error"' in last and b"longer than" in last
        await eventually(lambda: gw.in_flight() == 0)


async def test_answer_headers_without_end_are_a_502() -> None:
    async def endless_headers(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await forever(writer, b"X-Filler: " + b"z" * 1000 + b"\r\n")

    async with engine(endless_headers) as fake, gateway(fake.url) as gw:
        async with asyncio.timeout(30):
            status, _ = await gw.post(CHAT, ASK)
            await fake.cut.wait()
        assert status == 502
        await eventually(lambda: gw.in_flight() == 0)


# --- engines that stream forever or send malformed events ---------------------------------------------


async def test_a_stream_without_newlines_forever_ends_when_the_client_leaves() -> None:
    async def no_newline(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        await forever(writer, b"\xff\xfe data: {" * 4096)

    async with engine(stream=no_newline) as fake, gateway(fake.url) as gw:
        async with asyncio.timeout(30), aiohttp.ClientSession() as session:
            resp = await session.post(gw.url + CHAT, json=STREAM)
            got = 0
            while got < 4 * 1024 * 1024:  # the gateway passes it on as it comes: nothing piles up
                got += len(await resp.content.readany())
            resp.close()
            await fake.cut.wait()
        await eventually(lambda: gw.in_flight() == 0)
        assert (await gw.post(CHAT, ASK))[0] == 200


MALFORMED = {
    "not UTF-8": b"data: \xff\xfe\xfd\n\n",
    "invalid JSON": b"data: {'choices': [}\n\n",
    "JSON not an object": b'data: [1, "a", null]\n\n',
    "wrong types": b'data: {"choices": {"0": 1}, "usage": {"prompt_tokens": "many"}}\n\n',
    "deep nesting": b"data: " + b"[" * 100_000 + b"\n\n",
    "huge counts": b'data: {"choices": [], "usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}\n\n",
    "tool call garbage": b'data: {"choices": [{"delta": {"tool_calls": [{"index": "x"}, 7]}}]}\n\n',
    "CR only": b"data: {}\r\r",
}


@pytest.mark.parametrize("path", [CHAT, "/api/chat", "/v1/responses", "/v1/messages"])
@pytest.mark.parametrize("kind", list(MALFORMED))
async def test_malformed_events_end_cleanly(path: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def malformed(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + EVENT + MALFORMED[kind] + EVENT + DONE)
        await writer.drain()
        writer.close()

    async with engine(stream=malformed) as fake, gateway(fake.url) as gw:
        async with asyncio.timeout(30):
            status, body = await gw.post(path, {**STREAM, "stream_options": {"include_usage": True}})
        assert status == 200
        if path == "/api/chat":  # what is not an OpenAI chunk is left out; the stream ends done
            assert json.loads(body.splitlines()[-1])["done"] is True
        elif path == CHAT:
            assert MALFORMED[kind] in body and body.endswith(DONE)
        await eventually(lambda: gw.in_flight() == 0)
        assert (await gw.post(CHAT, ASK))[0] == 200
    escaped = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not escaped, "an exception escaped"


async def test_chunked_garbage_mid_stream_ends_it_with_an_error_event() -> None:
    async def garbage(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head + b"%x\r\n%s\r\n" % (len(EVENT), EVENT) + b"zz not a size\r\n")
        await forever(writer, b"garbage ")

    async with engine(stream=garbage) as fake, gateway(fake.url) as gw:
        async with asyncio.timeout(30):
            status, body = await gw.post(CHAT, STREAM)
            await fake.cut.wait()
        assert status == 200 and body.startswith(EVENT)
        assert body.endswith(b"\n\n") and b'"upstream_error"' in body
        await eventually(lambda: gw.in_flight() == 0)


@pytest.mark.parametrize("lie", ["shorter", "longer", "longer than whole"])
async def test_a_content_length_lie_is_no_hang_and_no_poison(lie: str) -> None:
    data = json.dumps(COMPLETION).encode()

    async def lying(body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        if body.get("honest"):
            return await whole_json(body, writer)
        if lie == "shorter":  # says less than it sends: the rest must not pass for the next answer
            writer.write(json_head(10) + data + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            return
        declared = len(data) + 100 if lie == "longer" else 4 * 1024 * 1024
        writer.write(json_head(declared) + data)  # ... and then silence
        await writer.drain()
        await writer.wait_closed()

    async with engine(lying) as fake, gateway(fake.url, read_timeout_s=1.0) as gw:
        async with asyncio.timeout(30):
            if lie == "longer than whole":  # streamed as it comes: the client sees a cut, not a short body
                with pytest.raises(aiohttp.ClientPayloadError):
                    await gw.post(CHAT, ASK)
            elif lie == "shorter":
                assert await gw.post(CHAT, ASK) == (200, data[:10])
            else:
                assert (await gw.post(CHAT, ASK))[0] == 502
            await eventually(lambda: gw.in_flight() == 0)
            status, body = await gw.post(CHAT, {**ASK, "honest": True})
        assert status == 200 and json.loads(body) == COMPLETION


# --- slow and idle clients ------------------------------------------------------------------------------


async def test_a_head_sent_one_byte_at_a_time_is_cut_by_the_idle_timeout() -> None:
    async with engine() as fake, gateway(fake.url, idle_timeout_s=1.0) as gw:
        sock = await connect(gw.port)
        loop = asyncio.get_running_loop()
        request = raw_post(CHAT, json.dumps(ASK).encode())

        async def trickle() -> None:
            with contextlib.suppress(OSError):
                for byte in request[:-10]:
                    await loop.sock_sendall(sock, bytes([byte]))
                    await asyncio.sleep(0.1)

        sender = asyncio.ensure_future(trickle())
        try:
            assert await closed_by_peer(sock, within_s=15) == b""
            assert not sender.done(), "the head was still coming when the gateway closed it"
        finally:
            sender.cancel()
            sock.close()
        assert not fake.bodies


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    async with engine() as fake, gateway(fake.url, idle_timeout_s=1.0) as gw:
        sock = await connect(gw.port)
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, raw_post(CHAT, json.dumps(ASK).encode()))
            answer = await closed_by_peer(sock, within_s=15)  # answered, then idle, then closed
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            sock.close()


async def test_a_body_sent_slowly_gets_a_408_and_the_connection_closed() -> None:
    async with engine() as fake, gateway(fake.url, body_timeout_s=1.0) as gw:
        sock = await connect(gw.port)
        loop = asyncio.get_running_loop()
        body = json.dumps(ASK).encode()
        await loop.sock_sendall(sock, raw_post(CHAT, b"", length=len(body)))

        async def trickle() -> None:
            with contextlib.suppress(OSError):
                for byte in body[:-1]:
                    await loop.sock_sendall(sock, bytes([byte]))
                    await asyncio.sleep(0.1)

        sender = asyncio.ensure_future(trickle())
        try:
            answer = await closed_by_peer(sock, within_s=15)
        finally:
            sender.cancel()
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
        assert not fake.bodies
        await eventually(lambda: gw.in_flight() == 0)


async def test_connections_beyond_the_bound_get_a_503_and_are_closed() -> None:
    async with engine() as fake, gateway(fake.url, max_connections=2) as gw:
        held = [await connect(gw.port) for _ in range(2)]
        await asyncio.sleep(0.1)  # both accepted
        extra = await connect(gw.port)
        try:
            answer = await closed_by_peer(extra, within_s=10)
            assert answer.startswith(b"HTTP/1.1 503")
        finally:
            extra.close()
            for sock in held:
                sock.close()
        await asyncio.sleep(0.1)  # the gateway saw them go
        assert (await gw.post(CHAT, ASK))[0] == 200


async def test_unparseable_requests_get_400_and_one_log_line_not_a_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage = [
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /v1/x HTTP/1.1\r\nContent-Length: -4\r\n\r\n",
    ]
    async with engine() as fake, gateway(fake.url) as gw:
        (quiet,) = [f for f in logging.getLogger(SERVER_LOGGER).filters if isinstance(f, QuietParseErrors)]
        quiet.last_said, quiet.dropped = -quiet.every_s, 0  # another test's parse error said its line
        with caplog.at_level(logging.DEBUG):
            for request in garbage * 5:
                sock = await connect(gw.port)
                await asyncio.get_running_loop().sock_sendall(sock, request)
                answer = await closed_by_peer(sock, within_s=5)
                sock.close()
                assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer[:80]
            status, _ = await gw.post("/v1/chat/completions", {"model": "m", "messages": []})
    said = [r for r in caplog.records if r.name == SERVER_LOGGER]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and said[0].exc_info is None
    assert "refused 1 request(s) it could not parse with 400 (last: Invalid header" in said[0].getMessage()
    assert quiet.dropped == 9  # the rest wait for the next line, a minute on
    assert status == 200
