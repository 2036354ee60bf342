"""The files beside the weights, served for real by llama-server from the spec ``build_spec`` makes:
a vision projector (tiny-vlm, ``make shapes``), two LoRA adapters on SmolLM2, and SmolLM2 as its own
draft. Each replica is asked directly (no gateway), so what is checked is the engine's command line
and mounts: the projector loaded, the adapters at global scale 0 and selected per request, drafted
tokens reported (docs/model-shapes.md)."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from controller.manifests.document import ModelManifest
from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel
from controller.runtime.docker import DockerRuntime

from .bare import replica, runtime_for
from .support import GGUF

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

SEA = "Write one sentence about the sea."


@pytest.fixture
def runtime(docker_client: docker.DockerClient, instance: str) -> DockerRuntime:
    return runtime_for(docker_client, instance)


def shape(model_root: Path, *names: str) -> list[Path]:
    paths = [model_root / name for name in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing; run `make shapes`")
    return paths


def model(weights: Path, files: ExtraFiles, **doc: Any) -> LoadedModel:
    doc = {"max_batch_size": 1, "context_length": 512, **doc}
    return LoadedModel(ModelManifest.model_validate(doc), "test.yaml", 1, weights, files=files)


def png(width: int, height: int) -> bytes:
    """A plain RGB PNG (a colour gradient), made without an imaging library."""
    rows = b"".join(
        b"\0" + b"".join(bytes((x * 6 % 256, y * 10 % 256, 128)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def chat(url: str, content: Any, **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 16, **extra}
    resp = requests.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_projector_makes_the_model_see(runtime: DockerRuntime, model_root: Path) -> None:
    weights, projector = shape(model_root, "tiny-vlm/tiny-vlm.gguf", "tiny-vlm/mmproj-tiny-vlm.gguf")
    vlm = model(weights, ExtraFiles(mmproj=projector), model=str(weights), name="vlm", mmproj=str(projector))
    with replica(runtime, vlm) as url:
        props = requests.get(f"{url}/props", timeout=10).json()
        assert props["modalities"]["vision"] is True, props["modalities"]
        image = "data:image/png;base64," + base64.b64encode(png(40, 24)).decode()
        content = [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": image}},
        ]
        with_image = chat(url, content, max_tokens=4)
        text_only = chat(url, "What is in this image?", max_tokens=4)
        # The image's tokens reached the model: the prompt is longer than the text alone.
        assert with_image["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"] + 10


def test_two_adapters_start_at_scale_zero_and_are_selected_per_request(
    runtime: DockerRuntime, model_root: Path
) -> None:
    weights, lora_a, lora_b = shape(model_root, GGUF, "smollm2-lora-a.gguf", "smollm2-lora-b.gguf")
    files = ExtraFiles(adapters=(AdapterFile("lora-a", lora_a), AdapterFile("lora-b", lora_b)))
    adapters = [{"name": "lora-a", "path": str(lora_a)}, {"name": "lora-b", "path": str(lora_b)}]
    smol = model(weights, files, model=GGUF, name="smol", adapters=adapters)
    with replica(runtime, smol) as url:
        listed = requests.get(f"{url}/lora-adapters", timeout=10).json()
        assert [(a["id"], a["path"], a["scale"]) for a in listed] == [
            (0, "/models/smol/adapters/lora-a.gguf", 0.0),
            (1, "/models/smol/adapters/lora-b.gguf", 0.0),
        ]
        base = chat(url, SEA, lora=[{"id": 0, "scale": 0}, {"id": 1, "scale": 0}])
        plain = chat(url, SEA)  # no `lora`: the global scales, 0
        adapted = chat(url, SEA, lora=[{"id": 0, "scale": 1}, {"id": 1, "scale": 0}])
    answer = [r["choices"][0]["message"]["content"] for r in (base, plain, adapted)]
    assert answer[0] == answer[1], answer
    assert answer[2] != answer[0], answer


def test_smollm2_drafts_for_itself(runtime: DockerRuntime, model_root: Path) -> None:
    (weights,) = shape(model_root, GGUF)
    smol = model(weights, ExtraFiles(draft=weights), model=GGUF, name="smol", draft=GGUF)
    with replica(runtime, smol) as url:
        answer = chat(url, SEA, max_tokens=48)
    assert answer["choices"][0]["message"]["content"]
    timings = answer["timings"]
    assert timings["draft_n"] > 0 and timings["draft_n_accepted"] > 0, timings
