"""Honest counts: a client that hangs up right after a stream's last event was served, tokens and all.

guidellm (and other benchmark clients) close the connection as soon as they read ``data: [DONE]``,
before the replica's end of body reaches the gateway. That used to count as 499 with no tokens
(122 completed streams counted as 101 x 200 + 35 x 499, output tokens 17 % low). The fake replica
here waits after its last event, so the client's hang-up always comes first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, StartUpstream, eventually, table_of
from prometheus_client.parser import text_string_to_metric_families

from controller.gateway.app import BALANCER

CHAT = "/v1/chat/completions"
STREAM = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def read_until(client: TestClient[Any, Any], end: bytes, body: dict[str, Any]) -> None:
    """Read a stream up to the line ``end``, then close the connection, as guidellm does."""
    url = client.make_url(CHAT)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url, json=body)
        async for line in resp.content:
            if line.strip() == end:
                break
        else:
            raise AssertionError(f"the stream ended without {end!r}")
        resp.close()  # hang up: the replica has not ended its body yet


async def scrape(client: TestClient[Any, Any]) -> dict[Any, float]:
    return samples(await (await client.get("/metrics")).text())


async def test_a_client_that_leaves_after_done_is_a_200_with_its_tokens(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.linger_s = 0.5
    client = await start_gateway(table_of(("m", (), [url])))
    for _ in range(3):
        await read_until(client, b"data: [DONE]", STREAM)
    await eventually(lambda: client.app[BALANCER].in_flight("m-0") == 0)
    scraped = await scrape(client)
    requests = "modelctl_gateway_requests_total"
    assert value(scraped, requests, api="openai", model="m", replica="m-0", status="200") == 3
    assert value(scraped, requests, api="openai", model="m", replica="m-0", status="499") == 0
    tokens = "modelctl_gateway_tokens_total"
    assert value(scraped, tokens, api="openai", model="m", kind="prompt") == 3 * 6
    assert value(scraped, tokens, api="openai", model="m", kind="completion") == 3 * 4


async def test_a_client_that_leaves_before_the_last_event_is_still_a_499(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.gate = asyncio.Event()  # the stream stops after its first chunk
    client = await start_gateway(table_of(("m", (), [url])))
    first = b'data: {"id": "chatcmpl-1"'
    async with aiohttp.ClientSession() as session:
        resp = await session.post(client.make_url(CHAT), json=STREAM)
        line = await resp.content.readline()
        assert line.startswith(first)
        resp.close()
    await fake.cancelled.wait()
    await eventually(lambda: client.app[BALANCER].in_flight("m-0") == 0)
    scraped = await scrape(client)
    requests = "modelctl_gateway_requests_total"
    assert value(scraped, requests, api="openai", model="m", replica="m-0", status="499") == 1
    assert value(scraped, "modelctl_gateway_tokens_total", api="openai", model="m", kind="prompt") == 0
