"""Memory estimates from real weight headers: the SmolLM2 GGUF from PyPI, and small GGUF and
safetensors files written here byte by byte (the formats are simple; no hub, no extra packages)."""

from __future__ import annotations

import itertools
import json
import os
import struct
from pathlib import Path

import pytest

from controller.manifests.document import ModelManifest
from controller.manifests.loader import LoadedModel
from controller.placement.memory import OVERHEAD_BYTES, MemoryEstimate, estimate, estimate_files, gpu_need
from controller.placement.weights import Architecture, EstimateError, read_gguf_header, read_weights

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = (
    Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")) / "SmolLM2-135M-Instruct.Q4_1.gguf"
)
MiB = 1024**2


@pytest.fixture
def smollm2() -> Path:
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} missing: run scripts/fetch-model.sh")
    return SMOLLM2


# --- the real GGUF --------------------------------------------------------------------------------


def test_smollm2_weight_bytes_are_the_sum_of_its_tensors(smollm2: Path) -> None:
    header = read_gguf_header(smollm2)
    assert smollm2.stat().st_size == 98_362_432
    assert (header.version, len(header.tensors)) == (3, 272)
    assert header.weight_bytes() == 96_576_768
    # The data region holds exactly those tensors, each at its offset (aligned, no gaps here).
    assert header.data_offset + header.weight_bytes() == smollm2.stat().st_size
    ends = sorted((t.offset, t.offset + t.nbytes()) for t in header.tensors)
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(ends))


def test_smollm2_architecture(smollm2: Path) -> None:
    header = read_gguf_header(smollm2)
    meta = header.metadata
    assert meta["general.architecture"] == "llama"
    assert (meta["llama.block_count"], meta["llama.embedding_length"]) == (30, 576)
    assert (meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]) == (9, 3)
    assert len(meta["tokenizer.ggml.tokens"]) == 49152
    info = read_weights(smollm2)
    assert info.architecture == Architecture(
        layers=30, kv_heads=3, key_length=64, value_length=64, context_length=8192
    )
    assert info.architecture.kv_bytes_per_token() == 30 * 3 * (64 + 64) * 2


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


# --- GGUF written here ----------------------------------------------------------------------------


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_kv(key: str, kind: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", kind) + payload


def write_gguf(path: Path, tensors: list[tuple[str, tuple[int, ...], int]], *, arch: str = "qwen2") -> None:
    """A GGUF v3 header: u32 metadata, a string, an array of strings, then tensor infos."""
    kvs = [
        gguf_kv("general.architecture", 8, gguf_string(arch)),
        gguf_kv(f"{arch}.block_count", 4, struct.pack("<I", 24)),
        gguf_kv(f"{arch}.embedding_length", 4, struct.pack("<I", 896)),
        gguf_kv(f"{arch}.attention.head_count", 4, struct.pack("<I", 14)),
        gguf_kv(f"{arch}.attention.head_count_kv", 4, struct.pack("<I", 2)),
        gguf_kv(f"{arch}.attention.key_length", 4, struct.pack("<I", 128)),
        gguf_kv(f"{arch}.context_length", 10, struct.pack("<Q", 32768)),
        gguf_kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + gguf_string("a") + gguf_string("b")),
        gguf_kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<2f", 0.5, 1.5)),
    ]
    infos = b"".join(
        gguf_string(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims) + struct.pack("<IQ", kind, 0)
        for name, dims, kind in tensors
    )
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos)


def test_gguf_types_and_metadata_written_here(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    # F16 896x896, Q4_K (256-element blocks of 144 bytes) 896x4864, F32 896, Q8_0 (32 of 34) 896x64
    write_gguf(path, [("a", (896, 896), 1), ("b", (896, 4864), 12), ("c", (896,), 0), ("d", (896, 64), 8)])
    info = read_weights(path)
    assert info.weight_bytes == 896 * 896 * 2 + 896 * 4864 // 256 * 144 + 896 * 4 + 896 * 64 // 32 * 34
    assert info.architecture == Architecture(24, 2, 128, 128, 32768)
    assert read_gguf_header(path).metadata["tokenizer.ggml.scores"] == [0.5, 1.5]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GGML\x00\x00", "not a GGUF file"),
        (b"GGUF\x03\x00\x00\x00\x01", "truncated GGUF header"),
        (b"GGUF\x01\x00\x00\x00" + bytes(16), "GGUF version 1 is not supported"),
    ],
)
def test_bad_gguf_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(EstimateError, match=message):
        read_weights(path)


def test_unknown_ggml_type_is_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, [("w", (32, 32), 99)])
    with pytest.raises(EstimateError, match="tensor w: unknown ggml type 99"):
        read_weights(path)


# --- safetensors written here ---------------------------------------------------------------------

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """The real format: u64 header length, JSON header with data_offsets, then the raw data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return offset


CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 30,
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
}


def test_safetensors_file_with_config_beside_it(tmp_path: Path) -> None:
    data = write_safetensors(
        tmp_path / "model.safetensors", {"w": ("BF16", (576, 1536)), "n": ("F32", (576,))}
    )
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    info = read_weights(tmp_path / "model.safetensors")
    assert data == 576 * 1536 * 2 + 576 * 4
    assert (info.weight_bytes, info.tensors) == (data, 2)
    assert info.architecture == Architecture(30, 3, 64, 64, 8192)
    got = estimate_files(
        tmp_path / "model.safetensors", engine="vllm", context_length=1024, max_batch_size=16
    )
    assert got.kv_cache == 1024 * 16 * 30 * 3 * 128 * 2
    assert got.total == data + got.kv_cache + OVERHEAD_BYTES["vllm"]


def test_safetensors_folder_sums_its_shards(tmp_path: Path) -> None:
    a = write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"x": ("F16", (1024, 1024))})
    b = write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"y": ("F16", (7, 3))})
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {**CONFIG, "head_dim": 80}}))
    info = read_weights(tmp_path)
    assert (info.weight_bytes, info.tensors) == (a + b, 2)
    assert info.architecture is not None and info.architecture.key_length == 80


def test_safetensors_index_names_the_shards_to_count(tmp_path: Path) -> None:
    shard = write_safetensors(tmp_path / "model-00001-of-00001.safetensors", {"x": ("F16", (64, 64))})
    write_safetensors(tmp_path / "consolidated.safetensors", {"x": ("F16", (64, 64))})
    index = {"weight_map": {"x": "model-00001-of-00001.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert read_weights(tmp_path).weight_bytes == shard


def test_safetensors_without_config_cannot_size_the_kv_cache(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"x": ("F16", (4, 4))})
    with pytest.raises(EstimateError, match=r"no architecture found \(config.json\?\)"):
        estimate_files(tmp_path, engine="vllm", context_length=None, max_batch_size=1)


def test_missing_weights_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EstimateError, match="nothing-here: no such file or folder"):
        read_weights(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EstimateError, match=r"empty: no \.safetensors files"):
        read_weights(tmp_path / "empty")


def test_weights_are_read_once_per_version_of_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler places GPU models every pass: a GGUF's header (its whole vocabulary) must not
    be parsed again unless the file changed."""
    from controller.placement import weights

    path = tmp_path / "m.gguf"
    write_gguf(path, [("a", (896, 896), 1)])
    parsed: list[Path] = []
    real = weights.read_gguf
    monkeypatch.setattr(weights, "read_gguf", lambda p: parsed.append(p) or real(p))
    first = read_weights(path)
    assert read_weights(path) is first and len(parsed) == 1
    write_gguf(path, [("a", (896, 896), 1), ("b", (896,), 0)])  # replaced: other size
    os.utime(path, ns=(1, 1))
    assert read_weights(path).weight_bytes == first.weight_bytes + 896 * 4
    assert len(parsed) == 2


def test_a_changed_config_beside_safetensors_is_read_again(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", (64, 64))})
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    assert read_weights(tmp_path / "model.safetensors").architecture == Architecture(30, 3, 64, 64, 8192)
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": 12, "pad": "x" * 9}))
    assert read_weights(tmp_path / "model.safetensors").architecture == Architecture(12, 3, 64, 64, 8192)


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
