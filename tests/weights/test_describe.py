"""What the weights are, for APIs that show models (Ollama's /api/tags, /api/show): format, family,
parameter size, quantisation, size on disk, a few header keys, the chat template; hub weights say
only what the manifest does, unreadable weights leave it unknown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.weights.describe import describe, parameter_label, takes_images
from weights.files import SMOLLM2, write_gguf, write_safetensors


def loaded(model: str, weights: Path | None, engine: str = "llamacpp") -> LoadedModel:
    return LoadedModel(ModelManifest(name="m", model=model, engine=engine), "m.yaml", 0, weights)


def test_the_real_gguf() -> None:
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} missing: run scripts/fetch-model.sh")
    found = describe(loaded(SMOLLM2.name, SMOLLM2))
    assert (found.format, found.family, found.parameter_size, found.quantization) == (
        "gguf",
        "llama",
        "135M",
        "Q4_1",
    )
    assert found.size == SMOLLM2.stat().st_size
    assert dict(found.info)["llama.context_length"] == 8192
    assert "<|im_start|>" in found.template


def test_a_gguf_without_size_label_counts_its_tensors(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, [("a", (1000, 1000), 0), ("b", (1000, 500), 1)])
    found = describe(loaded("m.gguf", path))
    assert (found.family, found.parameter_size, found.quantization) == ("qwen2", "2M", "")
    assert dict(found.info)["general.parameter_count"] == 1_500_000


def test_a_safetensors_folder(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", (3000, 1000))})
    config = {"model_type": "qwen2", "torch_dtype": "bfloat16", "hidden_size": 1000, "num_hidden_layers": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    found = describe(loaded("weights/", tmp_path, engine="vllm"))
    assert (found.format, found.family, found.parameter_size, found.quantization) == (
        "safetensors",
        "qwen2",
        "3M",
        "BF16",
    )
    assert dict(found.info)["qwen2.embedding_length"] == 1000 and found.template == "{{ messages }}"


def test_hub_weights_say_what_the_manifest_does() -> None:
    found = describe(loaded("hf://bartowski/SmolLM2-135M-Instruct-GGUF:q4_k_m", None))
    assert (found.format, found.quantization, found.size) == ("gguf", "Q4_K_M", 0)


def test_unreadable_weights_stay_unknown(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf")
    found = describe(loaded("broken.gguf", path))
    assert (found.format, found.family, found.size) == ("", "", 10)


@pytest.mark.parametrize(
    ("count", "label"), [(0, ""), (134_515_008, "135M"), (8_030_261_248, "8.0B"), (500_000, "500K")]
)
def test_parameter_labels(count: int, label: str) -> None:
    assert parameter_label(count) == label


def test_takes_images_from_the_projector_or_the_vision_config(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    assert takes_images(loaded("m.gguf", gguf)) is False  # llama.cpp without a projector
    with_projector = ModelManifest(name="m", model="m.gguf", mmproj="p.gguf")  # type: ignore[arg-type]
    assert takes_images(LoadedModel(with_projector, "m.yaml", 0, gguf)) is True
    assert takes_images(loaded("hf://org/repo", None)) is None  # hub weights: unknown
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    config = {"model_type": "idefics3", "vision_config": {"hidden_size": 32}, "text_config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    assert takes_images(loaded("vlm", folder, engine="vllm")) is True
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert takes_images(loaded("vlm", folder, engine="vllm")) is False  # read again: the file changed
    (folder / "config.json").write_text("{not json")
    assert takes_images(loaded("vlm", folder, engine="vllm")) is None
