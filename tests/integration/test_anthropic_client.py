"""The official ``anthropic`` client against real llama.cpp replicas through the gateway.

One stack for the module (the controller and an in-process gateway, as ``modelctl serve`` runs
them) with ``smollm2`` on two llama-server replicas, and a keys file of two named keys: ``alice``
without limits and ``bob`` with one request a minute. Messages pass through to llama-server (it
serves ``/v1/messages`` and ``/v1/messages/count_tokens``); the gateway's own errors come in
Anthropic's shape (the 429 and 503 of admission are tested against fakes in tests/gateway, where
they can be caused at will). A client that hangs up right after ``message_stop`` counts as served.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anthropic
import docker
import pytest
import pytest_asyncio

from controller.app import RunningController
from controller.gateway.settings import GatewaySettings

from .support import GGUF, scrape, serving, settings, total

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]

ALICE = "sk-alice-anthropic-test"
BOB = "sk-bob-anthropic-test"
KEYS = f"alice: {ALICE}\nbob: {{key: {BOB}, requests_per_minute: 1}}\n"
MANIFEST = (
    f"name: smollm2\nmodel: {GGUF}\naliases: [smollm]\nreplicas: 2\nmax_batch_size: 2\ncontext_length: 512\n"
)
USER = [{"role": "user", "content": "Say hello."}]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    manifests, private = tmp_path_factory.mktemp("manifests"), tmp_path_factory.mktemp("keys")
    (manifests / "smollm2.yaml").write_text(MANIFEST)
    (private / "keys.yaml").write_text(KEYS)
    instance = f"test-{uuid.uuid4().hex[:8]}"
    config = settings(manifests, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0, api_keys_file=private / "keys.yaml")
    async with serving(config, gateway, {"smollm2": 2}, docker_client) as rc:
        yield rc


def client(rc: RunningController, key: str = ALICE) -> anthropic.AsyncAnthropic:
    assert rc.gateway_url is not None
    return anthropic.AsyncAnthropic(base_url=rc.gateway_url, api_key=key, max_retries=0, timeout=60)


async def test_messages_not_streamed(stack: RunningController) -> None:
    async with client(stack) as claude:
        message = await claude.messages.create(model="smollm", max_tokens=8, messages=USER)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 8


async def test_messages_streamed(stack: RunningController) -> None:
    async with (
        client(stack) as claude,
        claude.messages.stream(model="smollm2", max_tokens=8, messages=USER) as stream,
    ):
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) and final.usage.output_tokens > 0


async def test_count_tokens(stack: RunningController) -> None:
    async with client(stack) as claude:
        counted = await claude.messages.count_tokens(model="smollm2", messages=USER)
    assert counted.input_tokens > 0


async def test_the_gateways_own_errors_are_anthropics(stack: RunningController) -> None:
    async with client(stack, "sk-nobody") as claude:
        with pytest.raises(anthropic.AuthenticationError):
            await claude.messages.create(model="smollm2", max_tokens=8, messages=USER)
    async with client(stack) as claude:
        with pytest.raises(anthropic.NotFoundError) as raised:
            await claude.messages.create(model="gpt-17", max_tokens=8, messages=USER)
    assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_a_key_over_its_limit_is_refused_the_other_served(stack: RunningController) -> None:
    async with client(stack, BOB) as bob, client(stack) as alice:
        await bob.messages.create(model="smollm2", max_tokens=4, messages=USER)
        with pytest.raises(anthropic.RateLimitError) as raised:
            await bob.messages.create(model="smollm2", max_tokens=4, messages=USER)
        assert int(raised.value.response.headers["Retry-After"]) >= 1
        await alice.messages.create(model="smollm2", max_tokens=4, messages=USER)
    samples = await scrape(stack)
    assert total(samples, "modelctl_gateway_key_requests_total", key="bob", status="429") == 1
    assert total(samples, "modelctl_gateway_key_requests_total", key="alice", status="200") >= 1
    assert total(samples, "modelctl_gateway_key_tokens_total", key="bob", kind="completion") > 0


async def test_a_client_leaving_right_after_message_stop_was_served(stack: RunningController) -> None:
    before = await scrape(stack)
    body = {"model": "smollm2", "max_tokens": 8, "stream": True, "messages": USER}
    async with aiohttp.ClientSession(headers={"x-api-key": ALICE}) as session:
        for _ in range(4):
            resp = await session.post(f"{stack.gateway_url}/v1/messages", json=body)
            async for line in resp.content:
                if line.startswith(b'data: {"type":"message_stop"'):
                    break
            resp.close()  # as a benchmark client does, before the replica ends its body

    ok = "modelctl_gateway_requests_total"
    deadline = time.monotonic() + 10
    while True:  # a hang-up is noticed a moment later
        after = await scrape(stack)
        if total(after, ok, api="anthropic") >= total(before, ok, api="anthropic") + 4:
            break
        assert time.monotonic() < deadline, "the four streams were not counted"
        await asyncio.sleep(0.1)
    assert (
        total(after, ok, api="anthropic", status="200") - total(before, ok, api="anthropic", status="200")
        == 4
    )
    assert total(after, ok, api="anthropic", status="499") == total(before, ok, api="anthropic", status="499")
    tokens = "modelctl_gateway_tokens_total"
    assert total(after, tokens, api="anthropic", kind="completion") > total(
        before, tokens, api="anthropic", kind="completion"
    )
    assert total(after, tokens, api="anthropic", kind="prompt") > 0
    replicas = {ls for (n, ls), v in after.items() if n == ok and ("api", "anthropic") in ls and v}
    assert len({dict(ls)["replica"] for ls in replicas} - {"none"}) == 2, "both replicas served"
