"""The official ``openai`` client against the gateway over a real socket, to fake llama-servers.

The sync client blocks, so it runs in a worker thread while the gateway serves on the test's loop.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
from gateway_fakes import PIECES, StartGateway, StartUpstream, table_of


@pytest.fixture
async def base_url(start_gateway: StartGateway, start_upstream: StartUpstream) -> str:
    _, url_a = await start_upstream("a")
    _, url_b = await start_upstream("b")
    client = await start_gateway(table_of(("smollm2", ("smollm",), [url_a, url_b])))
    return str(client.make_url("/v1"))


def sync_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)


async def test_sync_client_lists_completes_and_streams(base_url: str) -> None:
    def talk() -> tuple[list[str], list[str], str]:
        with sync_client(base_url) as client:
            models = [m.id for m in client.models.list()]
            answers = []
            for _ in range(2):
                reply = client.chat.completions.create(
                    model="smollm", messages=[{"role": "user", "content": "hi"}]
                )
                assert reply.usage is not None and reply.usage.total_tokens == 9
                answers.append(reply.choices[0].message.content or "")
            stream = client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            return models, answers, text

    models, answers, text = await asyncio.to_thread(talk)
    assert models == ["smollm2", "smollm"]
    assert sorted(answers) == ["hello from a", "hello from b"]
    assert text == "".join(PIECES)


async def test_sync_client_gets_not_found_for_an_unknown_model(base_url: str) -> None:
    def ask() -> None:
        with sync_client(base_url) as client:
            client.chat.completions.create(model="gpt-9", messages=[])

    with pytest.raises(openai.NotFoundError) as caught:
        await asyncio.to_thread(ask)
    assert caught.value.code == "model_not_found"
    assert "gpt-9" in caught.value.message


async def test_async_client_streams(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(p or "" for p in pieces) == "".join(PIECES)
