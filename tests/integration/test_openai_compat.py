"""The official ``openai`` client against real llama.cpp replicas through the gateway: the whole surface.

One stack for the module (the controller and an in-process gateway, as `modelctl serve` runs them,
API keys on) with three models on the real Docker engine:
- ``smollm2``: SmolLM2 on llama-server with ``--embeddings --pooling mean``, so the same replica
  answers chat, completions and embeddings;
- ``slow``: the same weights, one replica taking one request at a time, for overload;
- ``broken``: weights that are not a GGUF, so it never has a ready replica, for the cold start.

Sync and async clients, streamed and not, every endpoint, and every error class the gateway or the
engine can cause: 400 BadRequestError (from llama-server itself), 401 AuthenticationError,
404 NotFoundError, 429 RateLimitError, 503 InternalServerError.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import docker
import openai
import pytest
import pytest_asyncio
from openai_surface import USER, Summary, summarize_async, summarize_sync

from controller.app import RunningController, running_controller
from controller.gateway.app import GatewaySettings
from controller.runtime.docker import remove_all

from .support import GGUF, settings, wait_ready

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]

KEY = "sk-compat-test"
HIDDEN_SIZE = 576  # SmolLM2-135M's embedding width
MANIFESTS = {
    "smollm2.yaml": (
        f"name: smollm2\nmodel: {GGUF}\naliases: [smollm]\nreplicas: 1\nmax_batch_size: 2\n"
        "context_length: 512\nargs: [--embeddings, --pooling, mean]\n"
    ),
    "slow.yaml": f"name: slow\nmodel: {GGUF}\nreplicas: 1\nmax_batch_size: 1\ncontext_length: 1024\n",
    "broken.yaml": "name: broken\nmodel: broken.gguf\n",
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    manifests, root = tmp_path_factory.mktemp("manifests"), tmp_path_factory.mktemp("weights")
    for name, text in MANIFESTS.items():
        (manifests / name).write_text(text)
    (root / "broken.gguf").write_bytes(b"this is not a GGUF file")
    instance = f"test-{uuid.uuid4().hex[:8]}"
    config = settings(manifests, root, instance, model_roots=(root, model_root))
    # A queue of one per slot and none beyond: the third request to `slow` is refused at once.
    gateway = GatewaySettings(
        host="127.0.0.1", port=0, api_keys=(KEY,), queue_per_slot=1, queue_min=0, cold_start_wait_s=1.0
    )
    try:
        async with running_controller(config, gateway=gateway) as rc:
            await wait_ready(rc, "smollm2", 1)
            await wait_ready(rc, "slow", 1)
            yield rc
    finally:
        remove_all(docker_client, instance)
        for network in docker_client.networks.list(names=[f"modelctl-{instance}"]):
            network.remove()


def base_url(rc: RunningController) -> str:
    return f"{rc.gateway_url}/v1"


def check(seen: Summary) -> None:
    assert set(seen["models"]) == {"smollm2", "smollm", "slow", "broken"}
    assert seen["chat"] and seen["streamed"] and seen["text"]
    assert seen["chat_usage"] and seen["chat_usage"] > 0
    assert seen["stream_usage"] and seen["stream_usage"] > 0  # stream_options.include_usage honoured
    assert [len(v) for v in seen["vectors"]] == [HIDDEN_SIZE, HIDDEN_SIZE]
    assert seen["vectors"][0] != seen["vectors"][1]


async def test_sync_client_every_endpoint(stack: RunningController) -> None:
    def talk() -> Summary:
        with openai.OpenAI(base_url=base_url(stack), api_key=KEY, max_retries=0, timeout=60) as client:
            return summarize_sync(client, chat="smollm", model="smollm2")

    check(await asyncio.to_thread(talk))


async def test_async_client_every_endpoint(stack: RunningController) -> None:
    async with openai.AsyncOpenAI(base_url=base_url(stack), api_key=KEY, max_retries=0, timeout=60) as client:
        check(await summarize_async(client, chat="smollm", model="smollm2"))


def sync_call(url: str, key: str, stream: bool, **request: object) -> None:
    with openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60) as client:
        answer = client.chat.completions.create(messages=USER, stream=stream, **request)  # type: ignore[call-overload]
        if stream:
            list(answer)


async def async_call(url: str, key: str, stream: bool, **request: object) -> None:
    async with openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=60) as client:
        answer = await client.chat.completions.create(messages=USER, stream=stream, **request)  # type: ignore[call-overload]
        if stream:
            [c async for c in answer]


ERRORS: list[tuple[str, type[openai.APIStatusError], str, dict[str, object]]] = [
    # (case, exception, api key, request)
    ("engine refuses", openai.BadRequestError, KEY, {"model": "smollm2", "max_tokens": -5}),
    ("wrong key", openai.AuthenticationError, "sk-wrong", {"model": "smollm2"}),
    ("unknown model", openai.NotFoundError, KEY, {"model": "gpt-9"}),
    ("never ready", openai.InternalServerError, KEY, {"model": "broken"}),
]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("case", "error", "key", "request_"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_errors_are_the_clients_exception_classes(
    stack: RunningController,
    flavour: str,
    stream: bool,
    case: str,
    error: type[openai.APIStatusError],
    key: str,
    request_: dict[str, object],
) -> None:
    with pytest.raises(error) as caught:
        if flavour == "sync":
            await asyncio.to_thread(sync_call, base_url(stack), key, stream, **request_)
        else:
            await async_call(base_url(stack), key, stream, **request_)
    assert caught.value.message
    if case == "engine refuses":
        assert "max_tokens" in caught.value.message  # llama-server's own words, passed through
    if case == "never ready":
        assert caught.value.response.headers["Retry-After"]


async def queue_depth(session: aiohttp.ClientSession, url: str, model: str) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(f'modelctl_gateway_queue_depth{{model="{model}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_full_queue_is_a_rate_limit_error(stack: RunningController, flavour: str) -> None:
    assert stack.gateway_url is not None
    long_answer = {"model": "slow", "messages": USER, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:

        async def occupy() -> None:
            url = f"{base_url(stack)}/chat/completions"
            async with session.post(url, json=long_answer, headers=headers) as resp:
                await resp.read()

        # One generating on the replica's only slot, one waiting in the queue of one.
        holders = [asyncio.create_task(occupy()) for _ in range(2)]
        try:
            await wait_for_queue(session, stack.gateway_url)
            with pytest.raises(openai.RateLimitError) as caught:
                if flavour == "sync":
                    await asyncio.to_thread(sync_call, base_url(stack), KEY, False, model="slow")
                else:
                    await async_call(base_url(stack), KEY, False, model="slow")
            assert caught.value.code == "queue_full"
            assert caught.value.response.headers["Retry-After"]
        finally:
            for task in holders:  # the client leaves: the gateway cancels the generation
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)


async def wait_for_queue(session: aiohttp.ClientSession, url: str, timeout_s: float = 15.0) -> None:
    """Until the gateway's /metrics shows one request waiting for `slow`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (depth := await queue_depth(session, url, "slow")) != 1:
        if loop.time() > deadline:
            pytest.fail(f"no request queued for slow within {timeout_s}s (queue depth {depth})")
        await asyncio.sleep(0.1)
