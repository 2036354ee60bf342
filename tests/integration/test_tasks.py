"""A model's task on real llama.cpp replicas through the gateway (docs/tasks.md).

One stack for the module (the controller and an in-process gateway) with two models on the real
Docker engine:
- ``smollm2-embed``: SmolLM2 with ``task: embed`` (llama-server ``--embeddings --pooling mean``):
  vectors through the official ``openai`` and ``ollama`` clients; a chat request is refused by the
  gateway with the model and its task named.
- ``reranker``: the tiny BERT cross-encoder of ``scripts/make-shapes.py`` with no ``task`` in its
  manifest: its GGUF's classifier head makes it rerank (llama-server ``--reranking``), served at
  ``/v1/rerank`` and at the bare ``/rerank`` of Jina's and Cohere's clients.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import docker
import ollama
import openai
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

HIDDEN_SIZE = 576  # SmolLM2-135M's embedding width
RERANKER = "tiny-reranker/tiny-reranker.gguf"  # scripts/make-shapes.py
MANIFESTS = {
    "embed.yaml": f"name: smollm2-embed\nmodel: {GGUF}\ntask: embed\nreplicas: 1\ncontext_length: 512\n",
    "rerank.yaml": f"name: reranker\nmodel: {RERANKER}\nreplicas: 1\ncontext_length: 512\n",
}
DOCUMENTS = ["paris is the capital of france", "a cat", "a car"]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    if not (model_root / RERANKER).is_file():
        pytest.fail(f"{model_root / RERANKER} is missing; run `make shapes`")
    manifests = tmp_path_factory.mktemp("manifests")
    for name, text in MANIFESTS.items():
        (manifests / name).write_text(text)
    config = settings(manifests, model_root, f"test-{uuid.uuid4().hex[:8]}")
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    async with serving(config, gateway, {"smollm2-embed": 1, "reranker": 1}, docker_client) as rc:
        yield rc


async def test_the_table_carries_each_models_task_the_rerankers_from_its_weights(
    stack: RunningController,
) -> None:
    tasks = {m.name: m.task for m in stack.store.current().models}
    assert tasks == {"smollm2-embed": "embed", "reranker": "rerank"}


async def test_embeddings_through_the_openai_and_ollama_clients(stack: RunningController) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0
    ) as client:
        vectors = await client.embeddings.create(model="smollm2-embed", input=["a cat", "a car"])
    assert [len(e.embedding) for e in vectors.data] == [HIDDEN_SIZE, HIDDEN_SIZE]
    assert vectors.data[0].embedding != vectors.data[1].embedding

    def embed() -> ollama.EmbedResponse:
        return ollama.Client(host=stack.gateway_url, timeout=120).embed(
            model="smollm2-embed", input=["a cat"]
        )

    embedded = await asyncio.to_thread(embed)
    assert [len(v) for v in embedded.embeddings] == [HIDDEN_SIZE]
    assert embedded.embeddings[0] == pytest.approx(vectors.data[0].embedding, abs=1e-4)


async def test_a_chat_to_the_embedding_model_is_refused_naming_model_and_task(
    stack: RunningController,
) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0
    ) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="smollm2-embed", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == (  # type: ignore[index]
        "model smollm2-embed is served for embed; /v1/chat/completions needs a model with task: generate"
    )

    def chat() -> None:
        ollama.Client(host=stack.gateway_url, timeout=120).chat(
            model="smollm2-embed", messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(ollama.ResponseError) as refused:
        await asyncio.to_thread(chat)
    assert refused.value.status_code == 400 and "served for embed" in refused.value.error


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
async def test_the_reranker_scores_every_document(stack: RunningController, path: str) -> None:
    body = {"model": "reranker", "query": "capital of france", "documents": DOCUMENTS}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.gateway_url}{path}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    results = answer["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert all(isinstance(r["relevance_score"], float) for r in results)
