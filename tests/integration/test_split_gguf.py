"""A split GGUF served for real: SmolLM2 in three shards (``make shapes``), named by its first shard,
on a real llama.cpp replica behind the gateway. The replica mounts each shard (and nothing else of
their folder) and llama-server loads the siblings from shard 1's folder; the answer comes through
the official openai client, and Ollama's /api/tags counts every shard's bytes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import docker
import openai
import pytest

from controller.gateway.settings import GatewaySettings

from .support import managed, serving, settings

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

SHARDS = [f"SmolLM2-135M-Instruct.Q4_1-{k:05d}-of-00003.gguf" for k in (1, 2, 3)]


async def test_a_split_gguf_answers_through_the_gateway(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    split = model_root / "smollm2-split"
    if not all((split / name).is_file() for name in SHARDS):
        pytest.fail(f"{split} lacks SmolLM2's shards; run `make shapes`")
    (tmp_path / "m.yaml").write_text(
        f"name: split\nmodel: smollm2-split/{SHARDS[0]}\nreplicas: 1\nmax_batch_size: 1\n"
        "context_length: 512\n"
    )
    config = settings(tmp_path, model_root, instance)
    async with serving(config, GatewaySettings(host="127.0.0.1", port=0), {"split": 1}, docker_client) as rc:
        [container] = managed(docker_client, instance)
        mounts = sorted((m["Destination"], m["RW"]) for m in container.attrs["Mounts"])
        assert mounts == [(f"/models/split/{name}", False) for name in SHARDS]

        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")
        answer = await client.chat.completions.create(
            model="split", max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content, answer

        async with aiohttp.ClientSession() as session, session.get(f"{rc.gateway_url}/api/tags") as resp:
            tags = await resp.json()
        [tag] = [m for m in tags["models"] if m["name"].startswith("split")]
        assert tag["size"] == sum((split / name).stat().st_size for name in SHARDS)
