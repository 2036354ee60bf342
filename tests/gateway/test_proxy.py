"""Forwarding: spread, retry before the first byte, streaming, disconnects, mid-stream failures."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from gateway_fakes import (
    StartGateway,
    StartUpstream,
    eventually,
    refused_url,
    start_closing_server,
    start_one_answer_per_connection_server,
    table_of,
)

from controller.gateway import GatewaySettings, StaticTable, create_app
from controller.gateway.app import BALANCER

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**ASK, "stream": True}


def in_flight(client: TestClient[Any, Any], *ids: str) -> list[int]:
    return [client.app[BALANCER].in_flight(i) for i in ids]


async def test_sequential_requests_spread_over_both_replicas(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    a, url_a = await start_upstream("a")
    b, url_b = await start_upstream("b")
    client = await start_gateway(table_of(("m", (), [url_a, url_b])))
    served, named = [], []
    for _ in range(4):
        resp = await client.post(CHAT, json=ASK)
        served.append((await resp.json())["system_fingerprint"])
        named.append(resp.headers["X-Modelctl-Replica"])
    assert served == ["a", "b", "a", "b"]
    assert named == ["m-0", "m-1", "m-0", "m-1"]
    assert (len(a.requests), len(b.requests)) == (2, 2)
    assert in_flight(client, "m-0", "m-1") == [0, 0]


@pytest.mark.parametrize("failure", ["refuses", "hangs up", "answers 503"])
async def test_failure_before_first_byte_retries_on_another_replica(
    start_gateway: StartGateway, start_upstream: StartUpstream, failure: str
) -> None:
    good, good_url = await start_upstream("good")
    loading, loading_url = await start_upstream("loading", status=503)
    closing, closing_url = await start_closing_server()
    bad_url = {"refuses": refused_url(), "hangs up": closing_url, "answers 503": loading_url}
    client = await start_gateway(table_of(("m", (), [bad_url[failure], good_url])))
    try:
        for _ in range(3):
            resp = await client.post(CHAT, json=ASK)
            assert resp.status == 200
            assert (await resp.json())["system_fingerprint"] == "good"
    finally:
        closing.close()
    assert len(good.requests) == 3
    if failure == "answers 503":
        assert loading.requests, "the 503 replica was never tried"
    assert in_flight(client, "m-0", "m-1") == [0, 0]


async def test_every_replica_failing_is_503_with_retry_after(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, loading_url = await start_upstream("loading", status=503)
    client = await start_gateway(table_of(("m", (), [refused_url(), loading_url])))
    resp = await client.post(CHAT, json=ASK)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert (await resp.json())["error"]["code"] == "model_unavailable"


async def test_tries_are_bounded_by_max_tries(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fakes = [await start_upstream(f"l{i}", status=503) for i in range(4)]
    client = await start_gateway(table_of(("m", (), [u for _, u in fakes])), max_tries=2)
    assert (await client.post(CHAT, json=ASK)).status == 503
    assert sum(len(f.requests) for f, _ in fakes) == 2


async def test_stream_arrives_chunk_by_chunk(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.gate = asyncio.Event()
    client = await start_gateway(table_of(("m", (), [url])))
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=STREAM)
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in resp.headers
        first = await resp.content.readuntil(b"\n\n")
        assert b'"Hel"' in first
        assert not fake.sent_last, "the client must see chunk 1 while the upstream still works"
        fake.gate.set()
        rest = await resp.content.read()
    assert rest.endswith(b"data: [DONE]\n\n")
    assert rest.count(b"data: ") == 5  # three more pieces, the stop chunk, [DONE]
    assert in_flight(client, "m-0") == [0]


async def test_client_disconnect_cancels_the_upstream(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.gate = asyncio.Event()  # never set: the upstream holds after chunk 1
    client = await start_gateway(table_of(("m", (), [url])))
    resp = await client.post(CHAT, json=STREAM)
    await resp.content.readuntil(b"\n\n")
    resp.close()  # drops the connection
    await eventually(fake.cancelled.is_set)
    await eventually(lambda: in_flight(client, "m-0") == [0])


async def test_disconnect_is_noticed_without_handler_cancellation(
    start_upstream: StartUpstream,
) -> None:
    fake, url = await start_upstream("a", chunk_delay_s=0.02)
    fake.endless = True
    app = create_app(StaticTable(table_of(("m", (), [url]))), GatewaySettings())
    runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"http://127.0.0.1:{port}{CHAT}", json=STREAM)
            await resp.content.readuntil(b"\n\n")
            resp.close()
        await eventually(fake.cancelled.is_set)
        await eventually(lambda: app[BALANCER].in_flight("m-0") == 0)
    finally:
        await runner.cleanup()


async def test_upstream_dying_mid_stream_ends_it_with_an_error_event(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.break_after_first = True
    client = await start_gateway(table_of(("m", (), [url])))
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=STREAM)
        body = await resp.content.read()
    assert resp.status == 200
    events = body.split(b"\n\n")
    assert b'"Hel"' in events[0]
    assert events[1].startswith(b'data: {"error": {')
    assert in_flight(client, "m-0") == [0]


async def test_upstream_dying_inside_an_event_sends_no_half_event_and_then_the_error(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.break_mid_event = True
    client = await start_gateway(table_of(("m", (), [url])))
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=STREAM)
        body = await resp.content.read()
    events = body.split(b"\n\n")  # the half event is held back (the mend), never sent half
    assert b'"Hel"' in events[0]
    assert events[1].startswith(b'data: {"error": {') and events[2:] == [b""]
    assert in_flight(client, "m-0") == [0]


async def test_upstream_dying_mid_body_is_a_502_when_the_body_is_small(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.truncate_json = True  # promises 1000 bytes: read whole before answering
    client = await start_gateway(table_of(("m", (), [url])))
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=ASK)
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "upstream_error"
    assert in_flight(client, "m-0") == [0]


async def test_upstream_dying_mid_body_is_an_error_for_the_client_not_a_hang(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.truncate_json = True
    fake.promised_length = 2 * 1024 * 1024  # too big to hold: streamed, so it breaks off mid-body
    client = await start_gateway(table_of(("m", (), [url])))
    async with asyncio.timeout(10):
        resp = await client.post(CHAT, json=ASK)
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert in_flight(client, "m-0") == [0]


async def test_forwarded_headers_leave_credentials_and_hop_by_hop_behind(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url]), task="embed"))
    headers = {"Authorization": "Bearer sk-secret", "X-Trace": "t1", "Keep-Alive": "timeout=5"}
    resp = await client.post("/v1/embeddings", json=ASK, headers=headers)
    assert resp.status == 200
    seen = {k.lower(): v for k, v in fake.requests[0].headers.items()}
    assert fake.requests[0].path == "/v1/embeddings"
    assert seen["x-trace"] == "t1"
    assert "authorization" not in seen and "keep-alive" not in seen


async def test_a_pooled_connection_the_replica_closed_is_sent_again_not_failed(
    start_gateway: StartGateway,
) -> None:
    """Regression: llama-server closes the connection after a streamed answer; the next request on
    that pooled connection failed with ServerDisconnected, and a one-replica model answered 503."""
    server, url = await start_one_answer_per_connection_server()
    client = await start_gateway(table_of(("m", (), [url])))
    try:
        for _ in range(4):
            resp = await client.post(CHAT, json=ASK)
            assert resp.status == 200, await resp.text()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_compressed_request_body_reaches_the_replica_as_a_body_it_can_read(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    """aiohttp's server decompresses a request body as it reads it: the replica gets that body,
    so it must not get the client's Content-Encoding with it (it would decode a plain body)."""
    upstream, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])))
    packed = gzip.compress(json.dumps(ASK).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    resp = await client.post(CHAT, data=packed, headers=headers)
    assert resp.status == 200, await resp.text()
    assert upstream.requests[-1].body == ASK
    assert "content-encoding" not in {k.lower() for k in upstream.requests[-1].headers}
