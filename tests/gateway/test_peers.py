"""Worker processes hand each other their metrics: any worker's /metrics answers for the gateway."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from gateway_fakes import StartUpstream, one_connection, running_workers, until_ready, worker_pid
from prometheus_client.parser import text_string_to_metric_families

from controller.gateway.telemetry.metrics import Snapshot
from controller.gateway.telemetry.peers import Peers

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_worker_gets_the_others_figures_and_not_its_own(tmp_path: Path) -> None:
    figures: dict[str, Snapshot] = {name: {"x": [[[name], 1.0]]} for name in "abc"}
    peers = {name: Peers(tmp_path, lambda n=name: figures[n], name=name) for name in "abc"}
    serving = [p.serving() for p in peers.values()]
    for s in serving:
        await anext(s)
    try:
        got = await peers["a"].snapshots()
        assert sorted(got, key=str) == [figures["b"], figures["c"]]
    finally:
        for s in serving:
            with pytest.raises(StopAsyncIteration):
                await anext(s)
    assert list(tmp_path.iterdir()) == []  # each took its socket away


async def test_a_stuck_worker_counts_with_its_last_figures_and_a_gone_one_not_at_all(tmp_path: Path) -> None:
    stuck = asyncio.Event()
    figures: Snapshot = {"x": [[["b"], 1.0]]}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if stuck.is_set():
            await reader.read()  # never answers; the asker gives up
        else:
            writer.write(b'{"x": [[["b"], 1.0]]}')
        writer.close()

    other = await asyncio.start_unix_server(answer, path=str(tmp_path / "b"))
    with socket.socket(socket.AF_UNIX) as gone:  # a socket file nobody listens on any more
        gone.bind(str(tmp_path / "c"))
    peers = Peers(tmp_path, dict, name="a", timeout_s=0.05)
    try:
        assert await peers.snapshots() == [figures]
        stuck.set()
        assert await peers.snapshots() == [figures]
    finally:
        other.close()
        await other.wait_closed()


async def test_any_workers_metrics_count_every_workers_requests(
    start_upstream: StartUpstream, unused_tcp_port: int
) -> None:
    _, url = await start_upstream("a")
    served: set[int] = set()
    sent = 0
    async with running_workers(url, unused_tcp_port) as (base, _), asyncio.timeout(60):
        await until_ready(base)
        listening: set[int] = set()
        while len(listening) < 2:  # the child starts (spawn) well after the parent
            async with one_connection() as session:
                listening.add(await worker_pid(session, base))
        while len(served) < 2:  # each new connection lands on either worker
            async with one_connection() as session:
                pid = await worker_pid(session, base)
                for _ in range(3):  # over the same connection, to the same worker
                    async with session.post(f"{base}{CHAT}", json=ASK) as resp:
                        assert resp.status == 200
                        sent += 1
                served.add(pid)
        scraped: set[int] = set()
        while len(scraped) < 2:  # until each worker answered a scrape
            async with one_connection() as session:
                pid = await worker_pid(session, base)
                async with session.get(f"{base}/metrics") as resp:
                    samples = parse(await resp.text())
            scraped.add(pid)
            assert samples[("modelctl_gateway_requests_total", "openai", "m", "m-0", "200")] == sent, pid
            assert samples[("modelctl_gateway_request_duration_seconds_count", "m")] == sent
            assert samples[("modelctl_gateway_ready_replicas", "m")] == 1
            assert samples[("modelctl_gateway_in_flight", "m", "m-0")] == 0
            assert samples[("modelctl_gateway_workers",)] == 2
    assert os.getpid() in served


def parse(text: str) -> dict[tuple[str, ...], float]:
    """Samples keyed by name and label values (in the exposition's order)."""
    return {
        (s.name, *s.labels.values()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
