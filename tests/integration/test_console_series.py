"""The console's charts and last requests from a real stack: a controller scraping its gateway
every half second while one real llama.cpp replica answers chats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
import pytest_asyncio

from controller.app import RunningController

from .support import one_replica

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]

STEP_S = 0.5
ASK = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    # No gateway_url: the controller scrapes its in-process gateway.
    async with one_replica(tmp_path_factory, model_root, docker_client, console_step_s=STEP_S) as rc:
        yield rc


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_chats_show_in_the_series_and_the_last_requests(stack: RunningController) -> None:
    streamed = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as session:
        # The series' first point is the counters' baseline: a request the first scrape already
        # counted is in no rate (seen once in CI, the first scrape in the same millisecond as the
        # first request). So the requests go after that point.
        deadline = time.monotonic() + 30
        while (
            not (await get(session, f"{stack.api_url}/v1/console/series"))["models"]
            .get("smollm2", {})
            .get("t")
        ):
            if time.monotonic() > deadline:
                pytest.fail("the console's series never got a first point for smollm2 within 30s")
            await asyncio.sleep(STEP_S / 2)
        for body in (ASK, ASK, streamed):
            async with session.post(f"{stack.gateway_url}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                await resp.read()
        deadline = time.monotonic() + 30  # a few scrape steps, with room for a loaded machine
        while True:
            series = await get(session, f"{stack.api_url}/v1/console/series")
            last = await get(session, f"{stack.api_url}/v1/console/requests")
            points = series["models"].get("smollm2", {})
            if len(last["models"].get("smollm2", [])) == 3 and served(points) >= 3 - 1e-3:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"3 requests not in the console within 30s: {series} {last}")
            await asyncio.sleep(STEP_S / 2)
    assert (series["available"], series["reason"], series["step_s"]) == (True, "", STEP_S)
    assert served(points) == pytest.approx(3, abs=1e-3), "the rates add up to the requests sent"
    assert max(v for v in points["requests_per_s"] if v is not None) > 0
    assert max(v for v in points["output_tokens_per_s"] if v is not None) > 0
    assert any(v is not None and v > 0 for v in points["ttft_p50_s"])
    assert all(v in (None, 0) for v in points["errors_per_s"])
    assert points["in_flight"][-1] == 0 and points["queue_depth"][-1] == 0
    replica = stack.store.current().models[0].replicas[0].id
    assert last["available"] is True
    rows = last["models"]["smollm2"]
    assert {(r["replica"], r["status"], r["api"], r["key"]) for r in rows} == {(replica, 200, "openai", None)}
    assert all(0 < r["output_tokens"] <= 8 and r["prompt_tokens"] > 0 for r in rows)
    assert all(r["ttfb_s"] is not None and 0 < r["ttfb_s"] <= r["latency_s"] for r in rows)


def served(points: dict[str, list[Any]]) -> float:
    """Requests counted by the series: each rate times the seconds since the point before."""
    t, rates = points.get("t", []), points.get("requests_per_s", [])
    return sum(rate * (t[i] - t[i - 1]) for i, rate in enumerate(rates) if i and rate is not None)
