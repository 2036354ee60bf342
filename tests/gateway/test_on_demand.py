"""On demand through the gateway: requests held while a model has no ready replica, and its demand.

A held request is answered once the table gains a replica (streamed ones start at once with
``: loading <model>`` SSE comments); past the model's ``load_timeout_s`` a plain request gets 503 with
Retry-After, a started stream an SSE error event. The demand sink hears of a cold request at once,
then of the request in flight, then of nothing waiting; the metrics count cold starts and held time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import openai
from aiohttp.test_utils import TestClient
from gateway_fakes import PIECES, StartUpstream, eventually, refused_url
from test_metrics import sample, scrape

from controller.endpoints.demand import DemandReport
from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import GatewaySettings, StaticTable, create_app
from controller.gateway.app import ADMISSION, BALANCER, REPORTER

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**ASK, "stream": True}


def table(*urls: str, version: int = 1, load_timeout_s: float | None = None) -> EndpointTable:
    """Model "m" with a replica per url (none: cold), ids ``m-<index>``."""
    replicas = tuple(Replica(f"m-{i}", url, 4) for i, url in enumerate(urls))
    entry = ModelEndpoints("m", replicas=replicas, load_timeout_s=load_timeout_s)
    return EndpointTable(version=version, models=(entry,))


class Reports:
    """A demand sink that keeps every report with the moment it came."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, DemandReport]] = []

    async def __call__(self, report: DemandReport) -> None:
        self.seen.append((time.monotonic(), report))

    def first(self, predicate: Callable[[DemandReport], bool]) -> tuple[float, DemandReport] | None:
        return next(((at, r) for at, r in self.seen if predicate(r)), None)


async def cold_gateway(
    aiohttp_client: Any, sink: Reports | None = None, **settings: Any
) -> tuple[StaticTable, TestClient[Any, Any]]:
    source = StaticTable(table(load_timeout_s=settings.pop("load_timeout_s", None)))
    options = {"table_poll_s": 0.01, "loading_comment_interval_s": 0.05, **settings}
    app = create_app(source, GatewaySettings(**options), demand_sink=sink)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return source, client


def queued(client: TestClient[Any, Any]) -> int:
    return client.app[ADMISSION].queue_depth("m")


def error_events(body: bytes) -> list[dict[str, Any]]:
    events = [line[len(b"data: ") :] for line in body.split(b"\n\n") if line.startswith(b"data: {")]
    return [json.loads(e)["error"] for e in events if b'"error"' in e]


async def test_a_held_request_is_answered_once_a_replica_is_ready(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    source, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10)
    request = asyncio.create_task(client.post(CHAT, json=ASK))
    await eventually(lambda: queued(client) == 1)
    await asyncio.sleep(0.1)
    assert not request.done()
    source.set(table(url, version=2))
    resp = await request
    assert resp.status == 200
    assert resp.headers["X-Modelctl-Replica"] == "m-0"
    assert (await resp.json())["choices"][0]["message"]["content"] == "hello from a"
    assert queued(client) == 0 and client.app[BALANCER].in_flight("m-0") == 0


async def test_a_held_stream_starts_with_loading_comments_then_relays_the_replica(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    source, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10)
    # The answer starts while no replica exists at all: the status line cannot wait for one.
    resp = await asyncio.wait_for(client.post(CHAT, json=STREAM), 2)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert await resp.content.readuntil(b"\n\n") == b": loading m\n\n"
    assert await resp.content.readuntil(b"\n\n") == b": loading m\n\n"  # again after the interval
    source.set(table(url, version=2))
    body = await resp.read()
    assert body.endswith(b"data: [DONE]\n\n")
    events = [e for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    content = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events)
    assert content == "".join(PIECES)
    assert not body.replace(b": loading m\n\n", b"").startswith(b":")  # comments only before the data


async def test_the_tables_load_timeout_bounds_the_hold_non_streamed_503(aiohttp_client: Any) -> None:
    _, client = await cold_gateway(aiohttp_client, cold_start_wait_s=30, load_timeout_s=0.2)
    started = time.monotonic()
    resp = await client.post(CHAT, json=ASK)
    assert 0.2 <= time.monotonic() - started < 5
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("server_error", "model_unavailable")
    assert error["message"] == (
        "The model 'm' is loading: it did not become ready within 0.2 seconds. Retry later."
    )
    assert queued(client) == 0


async def test_a_stream_held_past_the_load_timeout_ends_with_an_error_event(aiohttp_client: Any) -> None:
    _, client = await cold_gateway(aiohttp_client, cold_start_wait_s=30, load_timeout_s=0.2)
    resp = await client.post(CHAT, json=STREAM)
    assert resp.status == 200
    body = await asyncio.wait_for(resp.read(), 5)
    assert body.startswith(b": loading m\n\n: loading m\n\n")  # 0.2 s, a comment every 0.05 s
    (error,) = error_events(body)
    assert error["code"] == "model_unavailable"
    assert "did not become ready within 0.2 seconds" in error["message"]
    assert body.endswith(b"\n\n") and queued(client) == 0


async def test_without_a_load_timeout_the_gateways_cold_start_wait_applies(aiohttp_client: Any) -> None:
    _, client = await cold_gateway(aiohttp_client, cold_start_wait_s=0.1)
    resp = await client.post(CHAT, json=ASK)
    assert resp.status == 503
    assert "within 0.1 seconds" in (await resp.json())["error"]["message"]


async def test_a_replica_that_answers_a_held_stream_with_an_error_ends_it_with_an_event(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a", status=500)
    source, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10)
    resp = await client.post(CHAT, json=STREAM)
    assert await resp.content.readuntil(b"\n\n") == b": loading m\n\n"
    source.set(table(url, version=2))
    body = await asyncio.wait_for(resp.read(), 5)
    (error,) = error_events(body)
    assert error["message"] == "The model server answered HTTP 500: Loading model"
    assert len(fake.requests) == 1


async def test_a_held_stream_still_retries_another_replica_before_the_first_byte(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("b")
    source, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10)
    resp = await client.post(CHAT, json=STREAM)
    assert await resp.content.readuntil(b"\n\n") == b": loading m\n\n"
    # The first replica the held request gets refuses the connection: the other one answers.
    source.set(table(refused_url(), url, version=2))
    body = await asyncio.wait_for(resp.read(), 5)
    assert body.endswith(b"data: [DONE]\n\n") and not error_events(body)


async def test_held_streams_that_every_replica_fails_end_with_the_503_as_an_event(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a", status=503)  # llama-server while it loads
    source, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10, max_tries=2)
    resp = await client.post(CHAT, json=STREAM)
    assert await resp.content.readuntil(b"\n\n") == b": loading m\n\n"
    source.set(table(url, version=2))
    (error,) = error_events(await asyncio.wait_for(resp.read(), 5))
    assert error["code"] == "model_unavailable"
    assert "failed to answer" in error["message"]


async def test_a_client_that_leaves_while_held_leaves_the_queue(aiohttp_client: Any) -> None:
    _, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10)
    admission = client.app[ADMISSION]
    plain = asyncio.create_task(client.post(CHAT, json=ASK))
    stream = await client.post(CHAT, json=STREAM)
    await eventually(lambda: queued(client) == 2)
    assert admission.waiting() == {"m": 2}
    plain.cancel()
    await eventually(lambda: queued(client) == 1)
    stream.close()  # the client hangs up on the loading stream
    await eventually(lambda: queued(client) == 0)
    assert admission.waiting() == {}


async def test_the_demand_sink_hears_of_a_cold_request_at_once_then_of_its_progress(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.hold = asyncio.Event()
    reports = Reports()
    source, client = await cold_gateway(aiohttp_client, reports, demand_interval_s=1.0, cold_start_wait_s=10)
    await asyncio.sleep(0.05)  # the reporter is waiting out its interval
    sent = time.monotonic()
    request = asyncio.create_task(client.post(CHAT, json=ASK))
    await eventually(lambda: reports.first(lambda r: r.models.get("m") is not None) is not None)
    found = reports.first(lambda r: "m" in r.models and r.models["m"].waiting >= 1)
    assert found is not None
    at, report = found
    assert at - sent < 0.2  # not after the 1 s interval
    assert report.models["m"].in_flight == 0 and report.models["m"].last_active > 0
    assert report.reporter == client.app[REPORTER].reporter
    source.set(table(url, version=2))
    await eventually(lambda: fake.active == 1)
    await eventually(lambda: reports.seen[-1][1].models["m"].in_flight == 1, within_s=3)
    assert reports.seen[-1][1].models["m"].waiting == 0
    fake.hold.set()
    assert (await request).status == 200
    ended = time.time()
    await eventually(lambda: reports.seen[-1][1].models["m"].in_flight == 0, within_s=3)
    last = reports.seen[-1][1].models["m"]
    assert (last.waiting, last.in_flight) == (0, 0)
    assert ended - 1 < last.last_active <= ended + 1
    assert len({r.reporter for _, r in reports.seen}) == 1


async def test_the_openai_client_streams_the_whole_answer_after_a_cold_hold(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    source, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10)
    base_url = str(client.make_url("/v1"))

    async def ready_later() -> None:
        await eventually(lambda: queued(client) == 1)
        await asyncio.sleep(0.2)  # a few loading comments first
        source.set(table(url, version=2))

    later = asyncio.create_task(ready_later())
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10) as oai:
        stream = await oai.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [c async for c in stream]
    await later
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(PIECES)


async def test_metrics_count_cold_starts_and_held_seconds(
    aiohttp_client: Any, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    source, client = await cold_gateway(aiohttp_client, cold_start_wait_s=10)
    request = asyncio.create_task(client.post(CHAT, json=ASK))
    await eventually(lambda: queued(client) == 1)
    await asyncio.sleep(0.2)
    source.set(table(url, version=2))
    assert (await request).status == 200
    assert (await client.post(CHAT, json=ASK)).status == 200  # warm: neither a cold start nor held
    samples = await scrape(client)
    assert sample(samples, "modelctl_gateway_cold_starts_total", model="m") == 1
    assert sample(samples, "modelctl_gateway_held_seconds_count", model="m") == 1
    assert 0.2 <= sample(samples, "modelctl_gateway_held_seconds_sum", model="m") < 5
    assert sample(samples, "modelctl_gateway_held_seconds_bucket", model="m", le="0.1") == 0
