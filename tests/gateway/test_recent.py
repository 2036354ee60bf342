"""The last requests per model at GET /metrics/requests: what each row says, what it never keeps,
the ring's bound, and that with two worker processes any worker answers for both."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from gateway_fakes import (
    StartGateway,
    StartUpstream,
    one_connection,
    running_workers,
    table_of,
    until_ready,
    worker_pid,
)

from controller.gateway.app import METRICS
from controller.gateway.telemetry.recent import KEPT, Recent

CHAT = "/v1/chat/completions"
SECRET_PROMPT = "the-words-of-the-client-7f3a"
ASK = {"model": "m", "messages": [{"role": "user", "content": SECRET_PROMPT}]}


async def recent(gateway: TestClient[Any, Any]) -> dict[str, list[dict[str, Any]]]:
    resp = await gateway.get("/metrics/requests")
    assert resp.status == 200
    rows: dict[str, list[dict[str, Any]]] = (await resp.json())["models"]
    return rows


async def test_a_row_per_request_with_its_tokens_latency_and_replica(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", ("alias",), [url])))
    before = time.time()
    assert (await gateway.post(CHAT, json=ASK)).status == 200
    streamed = {**ASK, "model": "alias", "stream": True}  # no include_usage: the gateway asks for it
    assert (await (await gateway.post(CHAT, json=streamed)).read()).endswith(b"data: [DONE]\n\n")
    assert (await gateway.post(CHAT, json={**ASK, "model": "nope"})).status == 404
    rows = await recent(gateway)
    assert list(rows) == ["m"], "a request for no served model is no model's row"
    newest, oldest = rows["m"]
    assert oldest["api"] == "openai" and oldest["status"] == 200 and oldest["replica"] == "m-0"
    assert (oldest["prompt_tokens"], oldest["output_tokens"]) == (5, 4)  # the fake's usage
    assert oldest["key"] is None, "an open gateway has no key names"
    assert 0 < oldest["ttfb_s"] <= oldest["latency_s"]
    assert (newest["prompt_tokens"], newest["output_tokens"]) == (6, 4)  # the stream's usage chunk
    assert newest["ttfb_s"] is not None and newest["latency_s"] >= newest["ttfb_s"]
    when = datetime.fromisoformat(oldest["time"]).timestamp()
    assert before - 0.01 <= when <= datetime.fromisoformat(newest["time"]).timestamp() <= time.time()
    assert oldest["time"].endswith("Z")


async def test_replica_errors_and_other_apis_are_rows_too(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, good = await start_upstream("a")
    _, broken = await start_upstream("b", status=400)  # not retried: the client's own error
    gateway = await start_gateway(table_of(("m", (), [good]), ("bad", (), [broken])))
    assert (await gateway.post(CHAT, json={**ASK, "model": "bad"})).status == 400
    ollama = {"model": "m", "messages": ASK["messages"], "stream": False}
    assert (await gateway.post("/api/chat", json=ollama)).status == 200
    rows = await recent(gateway)
    assert [(r["api"], r["status"], r["replica"]) for r in rows["bad"]] == [("openai", 400, "bad-0")]
    [served] = rows["m"]
    assert (served["api"], served["status"], served["output_tokens"]) == ("ollama", 200, 4)


async def test_named_keys_are_rows_by_name_and_no_key_or_body_is_kept(
    start_gateway: StartGateway, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    _, url = await start_upstream("a")
    keys = tmp_path / "keys"
    keys.write_text("alice: sk-alice-0123\n")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=keys)
    headers = {"Authorization": "Bearer sk-alice-0123"}
    assert (await gateway.post(CHAT, json=ASK, headers=headers)).status == 200
    resp = await gateway.get("/metrics/requests")  # open, as /metrics is: scrapers carry no key
    text = await resp.text()
    assert resp.status == 200
    assert [r["key"] for r in (await resp.json())["models"]["m"]] == ["alice"]
    for kept_nowhere in ("sk-alice", SECRET_PROMPT, "hello from a"):  # the key, the prompt, the answer
        assert kept_nowhere not in text
        assert kept_nowhere not in repr(gateway.app[METRICS].snapshot())


async def test_the_ring_keeps_the_last_requests_newest_first(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])))
    for n in range(KEPT + 3):
        # The last three are streams (6 prompt tokens, not 5): the rows tell them from the rest.
        body = {**ASK, "stream": True} if n >= KEPT else ASK
        assert (await (await gateway.post(CHAT, json=body)).read()) != b""
    rows = (await recent(gateway))["m"]
    assert len(rows) == KEPT
    assert [r["prompt_tokens"] for r in rows[:3]] == [6, 6, 6]
    assert all(r["prompt_tokens"] == 5 for r in rows[3:])
    times = [r["time"] for r in rows]
    assert times == sorted(times, reverse=True)


def test_merging_workers_rows_takes_the_newest_of_all() -> None:
    mine, theirs = Recent(), Recent()
    for n in range(KEPT):
        mine.add("m", "openai", 200, (1, n), 0.5, 0.1, "m-0", None)
    theirs.add("m", "anthropic", 200, (2, 99), 0.2, None, "m-1", "bob")
    theirs.add("other", "openai", 503, None, 0.01, None, "none", None)
    merged = mine.merged([theirs.dump()])
    assert sorted(merged) == ["m", "other"]
    assert len(merged["m"]) == KEPT
    assert merged["m"][0]["replica"] == "m-1" and merged["m"][0]["key"] == "bob"  # added last
    assert [r["output_tokens"] for r in merged["m"][1:3]] == [KEPT - 1, KEPT - 2]
    assert merged["other"] == [
        {
            "time": merged["other"][0]["time"],
            "api": "openai",
            "status": 503,
            "prompt_tokens": None,
            "output_tokens": None,
            "latency_s": 0.01,
            "ttfb_s": None,
            "replica": "none",
            "key": None,
        }
    ]


async def test_any_worker_lists_every_workers_requests(
    start_upstream: StartUpstream, unused_tcp_port: int
) -> None:
    _, url = await start_upstream("a")
    served: dict[int, int] = {}
    async with running_workers(url, unused_tcp_port) as (base, _), asyncio.timeout(60):
        await until_ready(base)
        while len(served) < 2:  # each new connection lands on either worker (the child starts late)
            async with one_connection() as session:
                pid = await worker_pid(session, base)
                async with session.post(f"{base}{CHAT}", json=ASK) as resp:
                    assert resp.status == 200
                served[pid] = served.get(pid, 0) + 1
        answered: set[int] = set()
        while len(answered) < 2:  # until each worker answered the question
            async with one_connection() as session:
                pid = await worker_pid(session, base)
                async with session.get(f"{base}/metrics/requests") as resp:
                    rows = (await resp.json())["models"]["m"]
            answered.add(pid)
            assert len(rows) == min(KEPT, sum(served.values())), pid
