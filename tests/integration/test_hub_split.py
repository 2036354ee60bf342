"""A split GGUF from the Hub, served for real: the controller pulls SmolLM2's three shards from a
stand-in Hub (``tests/hub/standin.py``, the Hub's file API over ``make shapes``'s real shards, in a
quant folder as large models ship), a real llama.cpp replica opens shard 1 in the read-only cache
and loads its siblings, and the official openai client gets an answer through the gateway. Once
pulled, the model is sized from every shard: Ollama's /api/tags counts them all, and the CPU
replica runs under a memory limit that holds them (a pulled model had none before)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import docker
import openai
import pytest

from controller.gateway.settings import GatewaySettings
from tests.hub.standin import COMMIT, SPLIT_REPO, StandInHub, serve, split_repo

from .support import managed, serving, settings

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

SHARDS = [f"SmolLM2-135M-Instruct.Q4_1-{k:05d}-of-00003.gguf" for k in (1, 2, 3)]
WEIGHT_BYTES = 96_576_768  # SmolLM2 Q4_1's tensors, in three shards or one file


async def test_a_split_gguf_from_the_hub_is_pulled_and_served(
    tmp_path: Path,
    model_root: Path,
    instance: str,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repos = split_repo(model_root)
    hub = StandInHub(repos)
    runner, url = await serve(hub)
    monkeypatch.setenv("HF_ENDPOINT", url)
    manifests = tmp_path / "models"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(
        f"name: split\nmodel: hf://{SPLIT_REPO}:Q4_1\nengine: llamacpp\nreplicas: 1\nmax_batch_size: 1\n"
        "context_length: 512\n"
    )
    cache = tmp_path / "hub-cache"
    config = settings(manifests, model_root, instance, hub_cache=cache)
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    try:
        async with serving(config, gateway, {"split": 1}, docker_client) as rc:
            [container] = managed(docker_client, instance)
            command = container.attrs["Config"]["Cmd"]
            memory = container.attrs["HostConfig"]["Memory"]
            client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")
            answer = await client.chat.completions.create(
                model="split", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Hi"}]
            )
            async with aiohttp.ClientSession() as session, session.get(f"{rc.gateway_url}/api/tags") as resp:
                tags = await resp.json()
    finally:
        await runner.cleanup()

    assert answer.choices[0].message.content, answer
    assert hub.downloads == {f"Q4_1/{name}": 1 for name in SHARDS}  # every shard, once
    snapshot = f"/cache/huggingface/hub/models--test--smollm2-split-GGUF/snapshots/{COMMIT}"
    assert command[:2] == ["-m", f"{snapshot}/Q4_1/{SHARDS[0]}"]
    [tag] = [m for m in tags["models"] if m["name"].startswith("split")]
    assert tag["size"] == sum(repos[SPLIT_REPO][f"Q4_1/{name}"].size for name in SHARDS)
    assert memory > WEIGHT_BYTES  # sized from the pulled shards (no limit at all before)
