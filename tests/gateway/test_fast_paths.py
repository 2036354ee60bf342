"""The request path's cheaper mechanics keep the old behaviour: header filters, one read timer per
stream, a read timeout on whole bodies, no cookie jar, the single-replica balancer shortcut."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiohttp import web
from gateway_fakes import StartGateway, StartUpstream, eventually, table_of

from controller.endpoints.table import ModelEndpoints, Replica
from controller.gateway.admission.balancer import LEAST_OUTSTANDING, PREFIX_AFFINITY, ROUND_ROBIN, Balancer
from controller.gateway.app import BALANCER
from controller.gateway.forward.deadlines import StreamDeadline, Watchdog
from controller.gateway.forward.headers import request_headers, response_headers
from controller.gateway.forward.upstream import ReadTimeout

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**ASK, "stream": True}


def test_header_filters_drop_every_spelling_and_keep_order_and_repeats() -> None:
    sent = [
        ("Authorization", "Bearer a"),
        ("AUTHORIZATION", "Bearer b"),
        ("authorization", "Bearer c"),
        ("X-Trace", "1"),
        ("Cookie", "s=1"),
        ("x-trace", "2"),
        ("Connection", "keep-alive"),
        ("Host", "gw"),
        ("Content-Length", "5"),
        ("Accept", "*/*"),
    ]

    class Items:  # a Mapping's items() is all request_headers reads
        def items(self) -> list[tuple[str, str]]:
            return sent

    for _ in range(2):  # the second time from the remembered decisions
        assert request_headers(Items()) == [("X-Trace", "1"), ("x-trace", "2"), ("Accept", "*/*")]  # type: ignore[arg-type]
    answered = [("Server", "x"), ("Date", "d"), ("Content-Type", "application/json"), ("Set-Cookie", "a=1")]
    for _ in range(2):  # the replica's headers come as name, value pairs in wire order
        assert response_headers(answered) == [("Content-Type", "application/json"), ("Set-Cookie", "a=1")]


def test_header_filter_cache_is_bounded() -> None:
    from controller.gateway.forward import headers

    many = [(f"X-Made-Up-{i}", "v") for i in range(3 * headers._KEEP_CACHE_SIZE)]

    class Items:
        def items(self) -> list[tuple[str, str]]:
            return [*many, ("Authorization", "Bearer x")]

    assert request_headers(Items()) == many  # type: ignore[arg-type]
    assert len(headers._KEEP_IN_REQUEST) <= headers._KEEP_CACHE_SIZE
    assert request_headers(Items()) == many  # type: ignore[arg-type]


class _Answer:
    def __init__(self) -> None:
        self.failed: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        self.failed = exc


async def test_read_deadline_fails_only_a_read_that_waited_too_long() -> None:
    loop = asyncio.get_running_loop()
    content = _Answer()
    watchdog = Watchdog(0.01)
    watch = StreamDeadline(content, None, read_timeout_s=0.05, write_timeout_s=60)  # type: ignore[arg-type]
    watchdog.add(watch)
    await asyncio.sleep(0.12)  # not reading (writing to a slow client, say): not a timeout
    assert content.failed is None
    for _ in range(6):  # reads that each end in time, 0.2 s in all: not a timeout
        watch.reading_since = loop.time()
        await asyncio.sleep(0.02)
        watch.reading_since = None
    assert content.failed is None
    watch.reading_since = loop.time()
    await asyncio.sleep(0.15)  # one read waits three times the timeout
    assert isinstance(content.failed, ReadTimeout)
    await asyncio.sleep(0.03)
    assert watchdog._handle is None  # nothing left to watch: the timer stopped


async def test_watchdog_sweeps_many_and_stops_when_empty() -> None:
    watchdog = Watchdog(0.01)
    contents = [_Answer() for _ in range(3)]
    loop = asyncio.get_running_loop()
    watches = [StreamDeadline(c, None, read_timeout_s=0.03, write_timeout_s=60) for c in contents]  # type: ignore[arg-type]
    for w in watches:
        w.reading_since = loop.time()
        watchdog.add(w)
    watchdog.discard(watches[1])  # finished in time
    await asyncio.sleep(0.1)
    assert [c.failed is not None for c in contents] == [True, False, True]
    assert watchdog._handle is None


async def test_no_answer_within_first_byte_timeout_is_a_502(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.hold = asyncio.Event()
    client = await start_gateway(table_of(("m", (), [url])), first_byte_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=ASK)
    assert resp.status == 502
    assert "no answer within 0.3 seconds" in (await resp.json())["error"]["message"]
    assert 0.3 <= loop.time() - began < 2
    assert client.app[BALANCER].in_flight("m-0") == 0
    fake.hold.set()
    resp = await client.post(CHAT, json=ASK)  # the gateway is fine afterwards
    assert resp.status == 200


async def test_client_leaving_before_the_answer_is_not_a_timeout(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.hold = asyncio.Event()
    client = await start_gateway(table_of(("m", (), [url])), first_byte_timeout_s=60)
    request = asyncio.create_task(client.post(CHAT, json=ASK))
    await eventually(lambda: fake.active == 1)
    request.cancel()  # the client goes away while the replica thinks
    await eventually(lambda: client.app[BALANCER].in_flight("m-0") == 0)
    metrics = (await (await client.get("/metrics")).read()).decode()
    assert (
        'modelctl_gateway_requests_total{api="openai",model="m",replica="none",status="499"} 1.0' in metrics
    )
    assert 'status="502"' not in metrics
    fake.hold.set()
    resp = await client.post(CHAT, json=ASK)
    assert resp.status == 200


async def test_stalled_stream_ends_with_an_error_event_after_read_timeout(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.gate = asyncio.Event()  # first chunk, then silence
    client = await start_gateway(table_of(("m", (), [url])), read_timeout_s=0.3)
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=STREAM)
        body = await resp.content.read()
    events = body.split(b"\n\n")
    assert b'"Hel"' in events[0]
    assert events[1].startswith(b'data: {"error": {')
    assert client.app[BALANCER].in_flight("m-0") == 0
    fake.gate.set()


async def test_a_stream_longer_than_read_timeout_with_steady_chunks_is_not_cut(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a", chunk_delay_s=0.05)
    fake.endless = True
    client = await start_gateway(table_of(("m", (), [url])), read_timeout_s=0.2)
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=STREAM)
        received = b""
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.8  # four read timeouts
        while loop.time() < until:
            received += await resp.content.readany()
        resp.close()
    assert b"error" not in received
    assert received.count(b"data: ") >= 8


async def test_stalled_small_body_is_a_502_after_read_timeout(
    start_gateway: StartGateway, aiohttp_server: Any
) -> None:
    release = asyncio.Event()

    async def half(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 100
        await resp.prepare(request)
        await resp.write(b'{"id": ')
        await release.wait()
        return resp

    app = web.Application()
    app.router.add_post(CHAT, half)
    server = await aiohttp_server(app)
    client = await start_gateway(
        table_of(("m", (), [str(server.make_url("")).rstrip("/")])), read_timeout_s=0.3
    )
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=ASK)
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "upstream_error"
    release.set()


async def test_a_replicas_cookie_never_reaches_another_client(
    start_gateway: StartGateway, aiohttp_server: Any
) -> None:
    seen: list[str | None] = []

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request.headers.get("Cookie"))
        resp = web.json_response({"object": "chat.completion", "choices": []})
        resp.set_cookie("session", "first-client")
        return resp

    app = web.Application()
    app.router.add_post(CHAT, chat)
    server = await aiohttp_server(app)
    # A host name, not an IP: aiohttp's cookie jar keeps no cookies from IP addresses.
    client = await start_gateway(table_of(("m", (), [f"http://localhost:{server.port}"])))
    for _ in range(2):
        resp = await client.post(CHAT, json=ASK)
        assert resp.status == 200
        client.session.cookie_jar.clear()  # the next request as another client, without cookies
    assert seen == [None, None]


@pytest.mark.parametrize("balancing", [LEAST_OUTSTANDING, ROUND_ROBIN, PREFIX_AFFINITY])
@pytest.mark.parametrize("key", [None, 12345])
def test_one_replica_shortcut_matches_the_general_path(balancing: str, key: int | None) -> None:
    only = Replica("a", "http://a", 2)
    one = ModelEndpoints("m", replicas=(only,), balancing=balancing)
    fast, slow = Balancer(), Balancer()

    def general(model: ModelEndpoints, exclude: tuple[str, ...] = ()) -> Replica | None:
        return slow.pick_general(model, exclude, key)  # the path taken for more than one replica

    for step in range(4):  # free, half full, full, full
        assert fast.pick(one, (), key) == general(one)
        assert fast.pick(one, ("a",), key) is None and general(one, ("a",)) is None
        assert fast._cursor == slow._cursor, step
        if step < 2:
            fast.acquire("a")
            slow.acquire("a")


def test_metrics_expose_what_prometheus_clients_own_instruments_would() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from controller.gateway.tables.source import StaticTable
    from controller.gateway.telemetry.metrics import _BUCKETS, GatewayMetrics

    ours = GatewayMetrics(StaticTable(), lambda _: 0, lambda _: 0)
    registry = CollectorRegistry()
    p = "modelctl_gateway_"
    requests = Counter(p + "requests", "Requests answered, by model, replica, HTTP status and client API.",
                       ["model", "replica", "status", "api"], registry=registry)  # fmt: skip
    duration = Histogram(p + "request_duration_seconds", "Time from request to the last byte of the answer.",
                         ["model"], buckets=_BUCKETS, registry=registry)  # fmt: skip
    ttfb = Histogram(p + "time_to_first_byte_seconds",
                     "Time from request to the first byte of the replica's answer sent to the client.",
                     ["model"], buckets=_BUCKETS, registry=registry)  # fmt: skip
    retries = Counter(p + "retries", "Tries moved to another replica before the first byte.", ["model"],
                      registry=registry)  # fmt: skip
    tokens = Counter(p + "tokens",
                     "Tokens reported in the replicas' usage, by kind (prompt, completion) and client API.",
                     ["model", "kind", "api"], registry=registry)  # fmt: skip
    cold_starts = Counter(p + "cold_starts",
                          "Requests that found no ready replica of their model and were held for one.",
                          ["model"], registry=registry)  # fmt: skip
    held = Histogram(p + "held_seconds",
                     "Time requests that found no ready replica were held, until a replica "
                     "took them or they were refused.",
                     ["model"], buckets=_BUCKETS, registry=registry)  # fmt: skip
    key_requests = Counter(p + "key_requests", "Requests by API key name (never the key) and HTTP status.",
                           ["key", "status"], registry=registry)  # fmt: skip
    key_tokens = Counter(p + "key_tokens",
                         "Tokens in the replicas' usage, by API key name and kind (prompt, completion).",
                         ["key", "kind"], registry=registry)  # fmt: skip
    # Values on bucket bounds, between them, below the first and past the last.
    for model, replica, status, seconds in [
        ("a", "a-0", 200, 0.001),
        ("a", "a-1", 200, 0.0011),
        ("a", "a-0", 503, 0.0),
        ("b", "b-0", 200, 600.0),
        ("b", "b-0", 200, 601.5),
        ("none", "none", 404, 0.3),
        ("a", "a-0", 200, 2.5),
        ("a", "a-0", 999, 1e-9),
    ]:
        ours.request(model, replica, status, seconds)
        requests.labels(model, replica, str(status), "openai").inc()
        duration.labels(model).observe(seconds)
        ours.first_byte(model, seconds / 2)
        ttfb.labels(model).observe(seconds / 2)
    ours.retry("a")
    retries.labels("a").inc()
    ours.tokens("a", "openai", 12, 3)
    ours.tokens("a", "anthropic", 1, 0)
    tokens.labels("a", "prompt", "openai").inc(12)
    tokens.labels("a", "completion", "openai").inc(3)
    tokens.labels("a", "prompt", "anthropic").inc(1)
    tokens.labels("a", "completion", "anthropic").inc(0)
    ours.key_request("alice", 200)
    key_requests.labels("alice", "200").inc()
    ours.key_tokens("alice", 12, 3)
    key_tokens.labels("alice", "prompt").inc(12)
    key_tokens.labels("alice", "completion").inc(3)
    for seconds in (0.0, 4.2, 700.0):
        ours.cold_start("c")
        cold_starts.labels("c").inc()
        ours.held("c", seconds)
        held.labels("c").observe(seconds)

    def lines(text: bytes) -> list[str]:
        # _created carries the moment a series was first seen: present in both, equal in neither.
        return [
            line.split(" ")[0] if "_created" in line else line
            for line in text.decode().splitlines()
            if "_in_flight" not in line and "_queue_depth" not in line and "_ready_replicas" not in line
        ]

    assert lines(ours.render()) == lines(generate_latest(registry))


async def test_finished_answers_give_their_connection_back_streams_too(
    start_gateway: StartGateway, aiohttp_server: Any
) -> None:
    peers: list[Any] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        if not body.get("stream"):
            return web.json_response({"object": "chat.completion", "usage": {"prompt_tokens": 1}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: {}\n\ndata: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post(CHAT, chat)
    server = await aiohttp_server(app)
    client = await start_gateway(table_of(("m", (), [str(server.make_url("")).rstrip("/")])))
    for ask in (ASK, STREAM, ASK, STREAM, ASK):
        resp = await client.post(CHAT, json=ask)
        assert resp.status == 200
        await resp.read()
    assert len(peers) == 5
    # Every finished answer, plain or streamed, hands its connection back: one connection for all.
    assert len(set(peers)) == 1, peers


async def test_a_replica_that_closes_after_each_stream_serves_every_request(
    start_gateway: StartGateway,
) -> None:
    """As llama-server does: a chunked SSE answer without Connection: close, then the socket closes.
    The pool must not hand that connection out again (or must resend what raced the close)."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")]
            await reader.readexactly(int(length[0].split(b":")[1]))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
            )
            await writer.drain()
            served += 1
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = await start_gateway(table_of(("m", (), [url])))
    try:
        for _ in range(6):  # back to back: the next request may meet the closing connection
            resp = await client.post(CHAT, json=STREAM)
            assert resp.status == 200, await resp.text()
            assert await resp.read() == b"data: [DONE]\n\n"
    finally:
        server.close()
        await server.wait_closed()
    assert served == 6
