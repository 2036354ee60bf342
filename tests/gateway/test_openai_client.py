"""The official ``openai`` client, sync and async, against the gateway over a real socket.

Chat, completions and embeddings, streamed and not, the model list, and every error class the gateway
can cause: 400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429 RateLimitError,
503 InternalServerError (a stream held for a cold model has started already: its refusal is the
stream's error event, APIError). The sync client blocks, so it runs in a worker thread while the gateway
serves on the test's loop. ``max_retries=0``: the client would otherwise retry 429/503 by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest
from gateway_fakes import (
    PIECES,
    FakeLlamaServer,
    StartGateway,
    StartUpstream,
    eventually,
    table_of,
    with_tasks,
)
from openai_surface import USER, Summary, summarize_async, summarize_sync


def expected(text_from: set[str]) -> Summary:
    return {
        "models": ["smollm2", "smollm", "embedder"],
        "chat_usage": 9,
        "streamed": "".join(PIECES),
        "stream_usage": len(PIECES),
        "vectors": [[0.25, -0.5, 0.0], [0.25, -0.5, 1.0]],
    } | {"chat": text_from, "text": text_from}


@pytest.fixture
async def base_url(start_gateway: StartGateway, start_upstream: StartUpstream) -> str:
    _, url_a = await start_upstream("a")
    _, url_b = await start_upstream("b")
    table = table_of(("smollm2", ("smollm",), [url_a, url_b]), ("embedder", (), [url_a, url_b]))
    client = await start_gateway(with_tasks(table, embedder="embed"))
    return str(client.make_url("/v1"))


def check(summary: Summary) -> None:
    want = expected({"hello from a", "hello from b"})
    for name, value in want.items():
        if isinstance(value, set):
            assert summary[name] in value, name
        else:
            assert summary[name] == value, name


async def test_sync_client(base_url: str) -> None:
    def talk() -> Summary:
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10) as client:
            return summarize_sync(client, chat="smollm", model="smollm2", embed="embedder")

    check(await asyncio.to_thread(talk))


async def test_async_client(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10) as client:
        check(await summarize_async(client, chat="smollm", model="smollm2", embed="embedder"))


# Errors: each status the gateway produces, as the exception class the client raises.


async def errors_gateway(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> tuple[str, FakeLlamaServer, Any]:
    busy, url = await start_upstream("busy")
    busy.hold = asyncio.Event()
    client = await start_gateway(
        table_of(("busy", (), [url]), ("cold", (), []), max_concurrency=1),
        api_keys=("sk-right",),
        queue_timeout_s=0,
        cold_start_wait_s=0.05,
    )
    return str(client.make_url("/v1")), busy, client


ERRORS: list[tuple[str, type[openai.APIStatusError], str, str]] = [
    # (case, exception, model, api key)
    ("unknown model", openai.NotFoundError, "gpt-9", "sk-right"),
    ("wrong key", openai.AuthenticationError, "busy", "sk-wrong"),
    ("empty model", openai.BadRequestError, "", "sk-right"),
    ("at capacity", openai.RateLimitError, "busy", "sk-right"),
    ("cold model", openai.InternalServerError, "cold", "sk-right"),
]


def create_sync(base_url: str, model: str, key: str, stream: bool) -> Callable[[], object]:
    def call() -> object:
        with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=10) as client:
            answer = client.chat.completions.create(model=model, messages=USER, stream=stream)  # type: ignore[arg-type, call-overload]
            return list(answer) if stream else answer

    return call


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("case", "error", "model", "key"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_errors_map_to_the_clients_exceptions(
    start_gateway: StartGateway,
    start_upstream: StartUpstream,
    flavour: str,
    stream: bool,
    case: str,
    error: type[openai.APIStatusError],
    model: str,
    key: str,
) -> None:
    base_url, busy, gateway = await errors_gateway(start_gateway, start_upstream)
    if case == "cold model" and stream:
        # A held stream started with loading comments: the refusal comes as its error event.
        error = openai.APIError  # type: ignore[assignment]
    occupied = None
    if case == "at capacity":
        headers = {"Authorization": "Bearer sk-right"}
        occupied = asyncio.create_task(
            gateway.post("/v1/chat/completions", json={"model": "busy"}, headers=headers)
        )
        await eventually(lambda: busy.active == 1)
    try:
        with pytest.raises(error) as caught:
            if flavour == "sync":
                await asyncio.to_thread(create_sync(base_url, model, key, stream))
            else:
                async with openai.AsyncOpenAI(
                    base_url=base_url, api_key=key, max_retries=0, timeout=10
                ) as client:
                    answer = await client.chat.completions.create(model=model, messages=USER, stream=stream)  # type: ignore[arg-type, call-overload]
                    if stream:
                        _ = [c async for c in answer]
    finally:
        busy.hold.set()  # type: ignore[union-attr]
        if occupied is not None:
            await occupied
    assert caught.value.message
    if case == "unknown model":
        assert caught.value.code == "model_not_found" and "gpt-9" in caught.value.message
    if case == "cold model":
        assert "did not become ready within 0.05 seconds" in caught.value.message
    if case == "at capacity" or (case == "cold model" and not stream):
        assert caught.value.response.headers["Retry-After"]
