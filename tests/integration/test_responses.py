"""The official ``openai`` client's Responses API against real llama.cpp replicas through the gateway.

One stack for the module with ``smollm2`` on two llama-server replicas balanced by prefix affinity.
llama-server serves ``/v1/responses`` (streamed and not); the gateway routes it like chat: the
same admission, balancing, failover before the first byte, and a prefix key of its own
(``instructions`` and ``input`` up to the first user message), so a conversation that re-sends its
history stays on its replica while different conversations spread over both. Usage is counted
under ``api="responses"``, and a client that hangs up right after ``response.completed`` counts
as served.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import docker
import openai
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

KEY = "sk-responses-test"
MANIFEST = (
    f"name: smollm2\nmodel: {GGUF}\nreplicas: 2\nmax_batch_size: 2\ncontext_length: 1024\n"
    "balancing: prefix-affinity\n"
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    manifests = tmp_path_factory.mktemp("manifests")
    (manifests / "smollm2.yaml").write_text(MANIFEST)
    instance = f"test-{uuid.uuid4().hex[:8]}"
    config = settings(manifests, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0, api_keys=(KEY,))
    async with serving(config, gateway, {"smollm2": 2}, docker_client) as rc:
        yield rc


def client(rc: RunningController) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key=KEY, max_retries=0, timeout=60)


async def test_responses_not_streamed_spread_over_both_replicas(stack: RunningController) -> None:
    served = set()
    async with client(stack) as api:
        for i in range(8):  # eight conversations: eight prefix keys
            raw = await api.responses.with_raw_response.create(
                model="smollm2",
                instructions=f"You are assistant number {i}.",
                input="Say hello.",
                max_output_tokens=8,
            )
            response = raw.parse()
            assert response.status == "completed" and response.output_text
            assert response.usage is not None and response.usage.output_tokens > 0
            served.add(raw.headers["x-modelctl-replica"])
    assert len(served) == 2


async def test_the_sdks_stream_helper_builds_the_response(stack: RunningController) -> None:
    # responses.stream() indexes its snapshot by output_index and content_index, which llama-server
    # leaves out: the gateway numbers them (gateway/forward/mend.py).
    ask = [{"type": "message", "role": "user", "content": "Say hello."}]
    async with client(stack) as api:
        for _ in range(3):
            async with api.responses.stream(model="smollm2", input=ask, max_output_tokens=8) as stream:
                deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
                final = await stream.get_final_response()
            assert deltas and final.output_text == "".join(deltas)
            assert final.usage is not None and final.usage.output_tokens > 0


async def test_responses_streamed_keep_a_conversation_on_its_replica(stack: RunningController) -> None:
    # llama-server wants each input item's type (OpenAI's API also takes them without).
    history: list[dict[str, str]] = [{"type": "message", "role": "user", "content": "Name a colour."}]
    replicas = []
    async with client(stack) as api:
        for turn in range(3):
            raw = await api.responses.with_raw_response.create(
                model="smollm2",
                instructions="Answer in one word.",
                input=history,
                stream=True,
                max_output_tokens=8,
            )
            replicas.append(raw.headers["x-modelctl-replica"])
            events = [event async for event in raw.parse()]
            assert events[-1].type == "response.completed"
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            history += [
                {"type": "message", "role": "assistant", "content": text},
                {"type": "message", "role": "user", "content": f"Another ({turn})."},
            ]
    assert len(set(replicas)) == 1, replicas
    samples = await scrape(stack)
    assert total(samples, "modelctl_gateway_tokens_total", api="responses", kind="completion") > 0
    assert total(samples, "modelctl_gateway_tokens_total", api="responses", kind="prompt") > 0


async def test_a_client_leaving_right_after_response_completed_was_served(stack: RunningController) -> None:
    ok = "modelctl_gateway_requests_total"
    before = await scrape(stack)
    body = {"model": "smollm2", "input": "Say hello.", "stream": True, "max_output_tokens": 8}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        for _ in range(4):
            resp = await session.post(f"{stack.gateway_url}/v1/responses", json=body)
            completed = False
            async for line in resp.content:
                if line.startswith(b"event: response.completed"):
                    completed = True
                elif completed and line.strip() == b"":
                    break  # the whole completed event is in: hang up
            resp.close()
    deadline = time.monotonic() + 10
    while True:
        after = await scrape(stack)
        if total(after, ok, api="responses") >= total(before, ok, api="responses") + 4:
            break
        assert time.monotonic() < deadline, "the four streams were not counted"
        await asyncio.sleep(0.1)
    assert (
        total(after, ok, api="responses", status="200") - total(before, ok, api="responses", status="200")
        == 4
    )
