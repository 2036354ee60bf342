"""The official ``openai`` client against real llama.cpp replicas through the gateway: the whole surface.

One stack for the module (the controller and an in-process gateway, as `modelctl serve` runs them,
API keys on) with three models on the real Docker engine:
- ``smollm2``: SmolLM2 on llama-server, for chat and completions;
- ``smollm2-embed``: the same weights with ``task: embed`` (llama-server ``--embeddings --pooling
  mean``), for embeddings (the gateway refuses them to a generator);
- ``slow``: the same weights, one replica taking one request at a time, for overload;
- ``broken``: weights that are not a GGUF, so it never has a ready replica, for the cold start;
- ``victim``: one replica, killed in the middle of a stream.

Sync and async clients, streamed and not, every endpoint, and every error class the gateway or the
engine can cause: 400 BadRequestError (from llama-server itself), 401 AuthenticationError,
404 NotFoundError, 429 RateLimitError, 503 InternalServerError.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import docker
import openai
import pytest
import pytest_asyncio
from openai_surface import USER, Summary, summarize_async, summarize_sync
from prometheus_client.parser import text_string_to_metric_families

from controller.app import RunningController
from controller.endpoints.table import Replica
from controller.engines.llamacpp import IDLE_PATH, is_idle
from controller.gateway.settings import GatewaySettings

from .support import GGUF, serving, settings

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
        "context_length: 512\n"
    ),
    "embed.yaml": f"name: smollm2-embed\nmodel: {GGUF}\ntask: embed\nreplicas: 1\ncontext_length: 512\n",
    # One slot with room for a long answer: 4000 tokens take llama-server ~50 s here.
    "slow.yaml": f"name: slow\nmodel: {GGUF}\nreplicas: 1\nmax_batch_size: 1\ncontext_length: 4096\n",
    "broken.yaml": "name: broken\nmodel: broken.gguf\n",
    # Killed mid-stream by one test (the controller then restarts it; no other test uses it).
    "victim.yaml": f"name: victim\nmodel: {GGUF}\nreplicas: 1\nmax_batch_size: 1\ncontext_length: 4096\n",
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
    async with serving(
        config, gateway, {"smollm2": 1, "smollm2-embed": 1, "slow": 1, "victim": 1}, docker_client
    ) as rc:
        yield rc


def base_url(rc: RunningController) -> str:
    return f"{rc.gateway_url}/v1"


def check(seen: Summary) -> None:
    assert set(seen["models"]) == {"smollm2", "smollm", "smollm2-embed", "slow", "broken", "victim"}
    assert seen["chat"] and seen["streamed"] and seen["text"]
    assert seen["chat_usage"] and seen["chat_usage"] > 0
    assert seen["stream_usage"] and seen["stream_usage"] > 0  # stream_options.include_usage honoured
    assert [len(v) for v in seen["vectors"]] == [HIDDEN_SIZE, HIDDEN_SIZE]
    assert seen["vectors"][0] != seen["vectors"][1]


async def test_sync_client_every_endpoint(stack: RunningController) -> None:
    def talk() -> Summary:
        with openai.OpenAI(base_url=base_url(stack), api_key=KEY, max_retries=0, timeout=60) as client:
            return summarize_sync(client, chat="smollm", model="smollm2", embed="smollm2-embed")

    check(await asyncio.to_thread(talk))


async def test_async_client_every_endpoint(stack: RunningController) -> None:
    async with openai.AsyncOpenAI(base_url=base_url(stack), api_key=KEY, max_retries=0, timeout=60) as client:
        check(await summarize_async(client, chat="smollm", model="smollm2", embed="smollm2-embed"))


async def output_tokens(rc: RunningController, model: str) -> float:
    """The gateway's ``tokens_total`` for ``model``'s completions (kind="completion")."""
    async with aiohttp.ClientSession() as session, session.get(f"{rc.gateway_url}/metrics") as resp:
        text = await resp.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "modelctl_gateway_tokens_total"
        and s.labels.get("model") == model
        and s.labels.get("kind") == "completion"
    )


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
async def test_a_stream_that_asked_no_usage_is_counted_in_tokens_and_gets_none(
    stack: RunningController, endpoint: str
) -> None:
    """The gateway asks llama-server for usage (stream_options.include_usage) and keeps the usage
    chunk to itself: the client sees the stream it asked for, the counters see its tokens."""
    before = await output_tokens(stack, "smollm2")
    async with openai.AsyncOpenAI(base_url=base_url(stack), api_key=KEY, max_retries=0, timeout=60) as client:
        if endpoint == "chat":
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="smollm2", messages=USER, max_tokens=8, stream=True
                )
            ]
        else:
            chunks = [
                c
                async for c in await client.completions.create(
                    model="smollm2", prompt="Once upon a time", max_tokens=8, stream=True
                )
            ]
    assert chunks and all(c.choices for c in chunks)  # no choices-less usage chunk reached the client
    if endpoint == "chat":
        assert all(c.usage is None for c in chunks)
    # (llama-server's completions stream carries usage on its last text chunk whatever was asked:
    # the engine's own answer, passed on as it is.)
    assert await output_tokens(stack, "smollm2") - before >= 1


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


async def gauge(session: aiohttp.ClientSession, url: str, name: str, model: str) -> float:
    """The sum of the gateway's ``modelctl_gateway_<name>`` series for ``model`` on /metrics."""
    async with session.get(f"{url}/metrics") as resp:
        families = text_string_to_metric_families(await resp.text())
    return sum(
        sample.value
        for family in families
        if family.name == f"modelctl_gateway_{name}"
        for sample in family.samples
        if sample.labels.get("model") == model
    )


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_full_queue_is_a_rate_limit_error(stack: RunningController, flavour: str) -> None:
    assert stack.gateway_url is not None
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:

        async def occupy() -> None:
            url = f"{base_url(stack)}/chat/completions"
            async with session.post(url, json=LONG_ANSWER, headers=headers) as resp:
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


LONG_ANSWER = {"model": "slow", "messages": USER, "max_tokens": 4000, "ignore_eos": True, "stream": True}


async def slot_busy(session: aiohttp.ClientSession, stack: RunningController) -> bool:
    """Whether the `slow` replica's llama-server is generating (its own /slots, not the gateway's).

    Not to be asked while a non-streamed request is being dropped: llama-server (b11434) then no
    longer notices that its client left (found writing this test; /health does not do that).
    """
    async with session.get(f"{slow_replica(stack).url}{IDLE_PATH}") as resp:
        return not is_idle(await resp.text())


def slow_replica(stack: RunningController) -> Replica:
    entry = stack.store.current().lookup("slow")
    assert entry is not None and entry.replicas
    return entry.replicas[0]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_a_client_that_leaves_frees_the_engines_slot(
    stack: RunningController, docker_client: docker.DockerClient, stream: bool
) -> None:
    """The gateway closes the replica connection when the client goes; llama-server then cancels
    the generation and says so in its log. Without that the slot would stay busy for the ~50 s
    that 4000 tokens take."""
    assert stack.gateway_url is not None
    gateway = stack.gateway_url
    container = docker_client.containers.get(slow_replica(stack).id)

    async def cancels() -> int:
        return (await asyncio.to_thread(container.logs)).count(b"stop: cancel task")

    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        # Earlier tests' requests may still be ending on this replica.
        await eventually(lambda: not_(slot_busy(session, stack)), "the replica to be idle first")
        before = await cancels()

        async def ask() -> None:
            url = f"{base_url(stack)}/chat/completions"
            async with session.post(url, json={**LONG_ANSWER, "stream": stream}, headers=headers) as resp:
                await resp.read()

        async def in_flight() -> bool:
            return await gauge(session, gateway, "in_flight", "slow") == 1

        async def cancelled() -> bool:
            return await cancels() > before

        client = asyncio.create_task(ask())
        await eventually(in_flight, "the request to be in flight on the replica")
        await asyncio.sleep(1.0)  # well into its generation
        client.cancel()  # the client leaves mid-answer
        await asyncio.gather(client, return_exceptions=True)
        await eventually(cancelled, "llama-server to cancel the generation", 10.0)
        assert await cancels() == before + 1
        assert not await slot_busy(session, stack)


async def not_(check: Awaitable[bool]) -> bool:
    return not await check


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"waited {timeout_s}s for {what}")
        await asyncio.sleep(0.05)


async def wait_for_queue(session: aiohttp.ClientSession, url: str, timeout_s: float = 15.0) -> None:
    """Until the gateway's /metrics shows one request waiting for `slow`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (depth := await gauge(session, url, "queue_depth", "slow")) != 1:
        if loop.time() > deadline:
            pytest.fail(f"no request queued for slow within {timeout_s}s (queue depth {depth})")
        await asyncio.sleep(0.1)


async def test_a_replica_killed_mid_stream_ends_the_stream_with_an_error_event(
    stack: RunningController, docker_client: docker.DockerClient
) -> None:
    """After the first byte there is no retry: the client gets an SSE error event (the openai client
    raises APIError from it) and the stream ends, it never hangs."""
    entry = stack.store.current().lookup("victim")
    assert entry is not None and entry.replicas
    container = docker_client.containers.get(entry.replicas[0].id)
    chunks = 0
    async with (
        openai.AsyncOpenAI(base_url=base_url(stack), api_key=KEY, max_retries=0, timeout=60) as client,
        asyncio.timeout(60),
    ):
        stream = await client.chat.completions.create(
            model="victim",
            messages=USER,
            max_tokens=4000,
            stream=True,
            extra_body={"ignore_eos": True},  # type: ignore[arg-type]
        )
        with pytest.raises(openai.APIError) as caught:
            async for _ in stream:
                chunks += 1
                if chunks == 5:
                    await asyncio.to_thread(container.kill)  # SIGKILL, as the OOM killer would
    assert chunks >= 5
    assert "failed mid-stream" in caught.value.message
