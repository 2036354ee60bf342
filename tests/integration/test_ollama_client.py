"""The official ``ollama`` client against real llama.cpp replicas through the gateway's Ollama API.

One stack for the module (the controller and an in-process gateway, as ``modelctl serve`` runs
them, API keys on) with two models on the real Docker engine: ``smollm2`` (alias ``smollm``),
SmolLM2 on llama-server for chat and generate, and ``smollm2-embed`` (the same weights with
``task: embed``) for embed. What the client sees: list, ps, show (details from the GGUF header), chat and
generate streamed and not (options mapped, counts from usage), embed and the older embeddings, a
model that does not exist (``ResponseError`` 404) and a management call refused (501).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import ollama
import pytest
import pytest_asyncio

from controller.app import RunningController
from controller.gateway.settings import GatewaySettings

from .support import GGUF, serving, settings

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]

KEY = "sk-ollama-test"
HIDDEN_SIZE = 576  # SmolLM2-135M's embedding width
MANIFEST = (
    f"name: smollm2\nmodel: {GGUF}\naliases: [smollm]\nreplicas: 1\nmax_batch_size: 2\ncontext_length: 512\n"
)
EMBED = f"name: smollm2-embed\nmodel: {GGUF}\ntask: embed\nreplicas: 1\ncontext_length: 512\n"
USER = [{"role": "user", "content": "Say hello."}]
SHORT = {"num_predict": 8, "temperature": 0, "seed": 1}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    manifests = tmp_path_factory.mktemp("manifests")
    (manifests / "smollm2.yaml").write_text(MANIFEST)
    (manifests / "embed.yaml").write_text(EMBED)
    instance = f"test-{uuid.uuid4().hex[:8]}"
    config = settings(manifests, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0, api_keys=(KEY,))
    async with serving(config, gateway, {"smollm2": 1, "smollm2-embed": 1}, docker_client) as rc:
        yield rc


def client(stack: RunningController) -> ollama.Client:
    return ollama.Client(host=stack.gateway_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


def async_client(stack: RunningController) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=stack.gateway_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


async def test_list_ps_and_show_describe_the_weights(stack: RunningController) -> None:
    def ask() -> tuple[ollama.ListResponse, ollama.ProcessResponse, ollama.ShowResponse]:
        c = client(stack)
        return c.list(), c.ps(), c.show("smollm")

    listed, loaded, shown = await asyncio.to_thread(ask)
    assert [m.model for m in listed.models] == ["smollm2", "smollm", "smollm2-embed"]
    model = listed.models[0]
    assert model.details is not None and model.size is not None and model.size > 50_000_000
    assert (model.details.format, model.details.family) == ("gguf", "llama")
    assert (model.details.parameter_size, model.details.quantization_level) == ("135M", "Q4_1")
    assert [m.model for m in loaded.models] == ["smollm2", "smollm2-embed"]
    running = loaded.models[0]
    assert running.expires_at is not None and running.expires_at.year == 9999  # not on demand: stays
    assert running.context_length == 512 and running.size_vram == 0  # a CPU replica
    assert shown.details is not None and shown.details.quantization_level == "Q4_1"
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    assert shown.template is not None and "<|im_start|>" in shown.template
    assert shown.parameters == "num_ctx 512"


async def test_chat_not_streamed(stack: RunningController) -> None:
    answer = await asyncio.to_thread(client(stack).chat, model="smollm", messages=USER, options=SHORT)
    assert answer.message.role == "assistant" and answer.message.content
    assert answer.done and answer.done_reason in ("stop", "length")
    assert answer.eval_count is not None and 0 < answer.eval_count <= 8
    assert answer.prompt_eval_count is not None and answer.prompt_eval_count > 0
    assert answer.total_duration is not None and answer.eval_duration is not None and answer.eval_duration > 0


async def test_chat_streamed(stack: RunningController) -> None:
    parts = [
        part
        async for part in await async_client(stack).chat(
            model="smollm2", messages=USER, options=SHORT, stream=True
        )
    ]
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts)
    last = parts[-1]
    assert last.eval_count is not None and 0 < last.eval_count <= 8
    assert last.prompt_eval_count is not None and last.prompt_eval_count > 0


async def test_generate_streamed_and_not(stack: RunningController) -> None:
    def ask() -> tuple[ollama.GenerateResponse, list[ollama.GenerateResponse]]:
        c = client(stack)
        whole = c.generate(model="smollm", prompt="Once upon a time", options=SHORT)
        parts = list(c.generate(model="smollm", prompt="Once upon a time", options=SHORT, stream=True))
        return whole, parts

    whole, parts = await asyncio.to_thread(ask)
    assert whole.response and whole.done and whole.eval_count is not None and whole.eval_count <= 8
    assert "".join(p.response or "" for p in parts) == whole.response  # temperature 0, same seed
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count


async def test_format_json_is_a_json_object(stack: RunningController) -> None:
    options = {"num_predict": 24, "temperature": 0}
    answer = await asyncio.to_thread(
        client(stack).generate,
        model="smollm",
        prompt="Give a JSON object with a name.",
        format="json",
        options=options,
    )
    assert answer.response is not None and answer.response.lstrip().startswith("{")
    if answer.done_reason == "stop":
        assert isinstance(json.loads(answer.response), dict)


async def test_embed_and_the_older_embeddings(stack: RunningController) -> None:
    def ask() -> tuple[ollama.EmbedResponse, ollama.EmbeddingsResponse]:
        c = client(stack)
        return c.embed(model="smollm2-embed", input=["a cat", "a car"]), c.embeddings(
            model="smollm2-embed", prompt="a cat"
        )

    embedded, legacy = await asyncio.to_thread(ask)
    assert [len(v) for v in embedded.embeddings] == [HIDDEN_SIZE, HIDDEN_SIZE]
    assert embedded.embeddings[0] != embedded.embeddings[1]
    assert list(legacy.embedding) == pytest.approx(list(embedded.embeddings[0]), abs=1e-4)


async def test_an_unknown_model_is_a_404(stack: RunningController) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await asyncio.to_thread(client(stack).chat, model="llama3", messages=USER)
    assert caught.value.status_code == 404
    assert 'model "llama3" not found' in caught.value.error


async def test_a_management_call_is_refused(stack: RunningController) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await asyncio.to_thread(client(stack).pull, "llama3")
    assert caught.value.status_code == 501
    assert "manifests folder" in caught.value.error


async def test_a_wrong_key_is_refused(stack: RunningController) -> None:
    wrong = ollama.Client(host=stack.gateway_url, headers={"Authorization": "Bearer sk-wrong"}, timeout=120)
    with pytest.raises(ollama.ResponseError) as caught:
        await asyncio.to_thread(wrong.list)
    assert caught.value.status_code == 401
