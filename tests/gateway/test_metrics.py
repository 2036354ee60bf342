"""Prometheus metrics: per-app registry, request/latency/token/retry series, live gauges."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, StartUpstream, eventually, refused_url, table_of, with_tasks
from prometheus_client.parser import text_string_to_metric_families

from controller.gateway import StaticTable
from controller.gateway.telemetry.metrics import GatewayMetrics, usage_tokens

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def scrape(client: TestClient[Any, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(await resp.read())


def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_latency_and_tokens_are_counted(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    client = await start_gateway(with_tasks(table_of(("m", (), [url]), ("e", (), [url])), e="embed"))
    assert (await client.post(CHAT, json=ASK)).status == 200  # usage 5 + 4
    stream = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    assert (await (await client.post(CHAT, json=stream)).read()).endswith(b"[DONE]\n\n")  # usage 6 + 4
    await (await client.post(CHAT, json={**ASK, "stream": True})).read()  # no usage asked: counted too
    embed = await client.post("/v1/embeddings", json={"model": "e", "input": ["a", "b"]})  # usage 4 + 0
    assert embed.status == 200
    assert (await client.post(CHAT, json={"model": "nope"})).status == 404
    samples = await scrape(client)
    assert (
        sample(
            samples, "modelctl_gateway_requests_total", api="openai", model="m", replica="m-0", status="200"
        )
        == 3
    )
    assert (
        sample(
            samples,
            "modelctl_gateway_requests_total",
            api="openai",
            model="none",
            replica="none",
            status="404",
        )
        == 1
    )
    tokens = "modelctl_gateway_tokens_total"
    assert sample(samples, tokens, api="openai", model="m", kind="prompt") == 5 + 6 + 6
    assert sample(samples, tokens, api="openai", model="m", kind="completion") == 4 + 4 + 4
    assert sample(samples, tokens, api="openai", model="e", kind="prompt") == 4
    assert sample(samples, "modelctl_gateway_request_duration_seconds_count", model="m") == 3
    assert sample(samples, "modelctl_gateway_time_to_first_byte_seconds_count", model="m") == 3
    assert sample(samples, "modelctl_gateway_request_duration_seconds_count", model="e") == 1
    assert sample(samples, "modelctl_gateway_ready_replicas", model="m") == 1


async def test_retries_in_flight_and_queue_depth(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [refused_url(), url]), max_concurrency=1))
    assert (await client.post(CHAT, json=ASK)).status == 200
    assert (await client.post(CHAT, json=ASK)).status == 200
    fake.hold = asyncio.Event()
    held = [asyncio.create_task(client.post(CHAT, json=ASK)) for _ in range(3)]
    await eventually(lambda: fake.active == 1)
    samples = await scrape(client)
    assert sample(samples, "modelctl_gateway_retries_total", model="m") >= 1
    assert sample(samples, "modelctl_gateway_in_flight", model="m", replica="m-1") == 1
    assert sample(samples, "modelctl_gateway_queue_depth", model="m") >= 1
    fake.hold.set()
    assert [(await r).status for r in held] == [200] * 3


async def test_each_app_has_its_own_registry(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    first = await start_gateway(table_of(("m", (), [url])))
    second = await start_gateway(table_of(("m", (), [url])))
    await first.post(CHAT, json=ASK)
    assert sample(
        await scrape(first),
        "modelctl_gateway_requests_total",
        api="openai",
        model="m",
        replica="m-0",
        status="200",
    )
    assert not sample(
        await scrape(second),
        "modelctl_gateway_requests_total",
        api="openai",
        model="m",
        replica="m-0",
        status="200",
    )


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        pytest.param(
            b'"usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}', (5, 4), id="json"
        ),
        pytest.param(
            b'"usage":{"completion_tokens":2,"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}}',
            (3, 2),
            id="nested details",
        ),
        pytest.param(
            b'data: {"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":1}}\n\n', (6, 1), id="sse"
        ),
        pytest.param(b'"usage": null}', None, id="null"),
        pytest.param(b'"content": "\\"usage\\": {\\"prompt_tokens\\": 1}"}', None, id="inside a string"),
        pytest.param(b'"usage": {"prompt_tokens": 8, "total_tokens": 8}}', (8, 0), id="embeddings"),
        pytest.param(b"no usage here", None, id="none"),
    ],
)
def test_usage_tokens(tail: bytes, expected: tuple[int, int] | None) -> None:
    assert usage_tokens(tail) == expected


def test_render_merges_other_workers_figures() -> None:
    """Counters and histogram buckets add up, in-flight and queues too; ready replicas do not."""
    table = StaticTable(table_of(("m", (), ["http://a", "http://b"])))
    ours = GatewayMetrics(table, {"m-0": 1, "m-1": 0}.__getitem__, lambda _: 2)
    theirs = GatewayMetrics(table, {"m-0": 2, "m-1": 3}.__getitem__, lambda _: 5)
    ours.request("m", "m-0", 200, 0.003)
    ours.request("m", "m-1", 503, 0.2)
    theirs.request("m", "m-0", 200, 0.004)
    theirs.request("m", "m-0", 200, 700.0)
    theirs.request("none", "none", 404, 0.001)
    ours.tokens("m", "openai", 5, 4)
    theirs.tokens("m", "openai", 6, 1)
    theirs.retry("m")
    snapshot = json.loads(json.dumps(theirs.snapshot()))  # as it crosses the socket

    samples = parse(ours.render([snapshot]))

    requests = "modelctl_gateway_requests_total"
    assert sample(samples, requests, api="openai", model="m", replica="m-0", status="200") == 3
    assert sample(samples, requests, api="openai", model="m", replica="m-1", status="503") == 1
    assert sample(samples, requests, api="openai", model="none", replica="none", status="404") == 1
    duration = "modelctl_gateway_request_duration_seconds"
    assert sample(samples, duration + "_bucket", model="m", le="0.005") == 2
    assert sample(samples, duration + "_bucket", model="m", le="0.25") == 3
    assert sample(samples, duration + "_bucket", model="m", le="600.0") == 3
    assert sample(samples, duration + "_bucket", model="m", le="+Inf") == 4
    assert sample(samples, duration + "_count", model="m") == 4
    assert sample(samples, duration + "_sum", model="m") == pytest.approx(0.003 + 0.2 + 0.004 + 700.0)
    assert sample(samples, "modelctl_gateway_tokens_total", api="openai", model="m", kind="prompt") == 11
    assert sample(samples, "modelctl_gateway_tokens_total", api="openai", model="m", kind="completion") == 5
    assert sample(samples, "modelctl_gateway_retries_total", model="m") == 1
    assert sample(samples, "modelctl_gateway_in_flight", model="m", replica="m-0") == 3
    assert sample(samples, "modelctl_gateway_in_flight", model="m", replica="m-1") == 3
    assert sample(samples, "modelctl_gateway_queue_depth", model="m") == 7
    assert sample(samples, "modelctl_gateway_ready_replicas", model="m") == 2
    assert sample(samples, "modelctl_gateway_workers") == 2
    # A series is as old as its first appearance in any worker.
    first = min(
        row[2]
        for row in (*ours.snapshot()["modelctl_gateway_requests"], *snapshot["modelctl_gateway_requests"])
        if row[0] == ["m", "m-0", "200", "openai"]
    )
    created = sample(
        samples, "modelctl_gateway_requests_created", api="openai", model="m", replica="m-0", status="200"
    )
    assert created == first


def test_render_without_other_workers_is_this_process_alone() -> None:
    table = StaticTable(table_of(("m", (), ["http://a"])))
    ours = GatewayMetrics(table, lambda _: 0, lambda _: 0)
    ours.request("m", "m-0", 200, 0.1)
    samples = parse(ours.render())
    assert (
        sample(
            samples, "modelctl_gateway_requests_total", api="openai", model="m", replica="m-0", status="200"
        )
        == 1
    )
    assert ("modelctl_gateway_workers", ()) not in samples
