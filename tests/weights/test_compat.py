"""Whether the files beside the weights fit them, found from their headers before anything starts:
the real files of `make shapes` (docs/model-shapes.md), each pairing the engine refuses at load
time refused here as one located manifest error, each pairing it serves passing."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from controller.errors import InvalidManifests, ManifestError
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.weights.compat import (
    check_files,
    check_gguf_adapter,
    check_gguf_draft,
    check_mmproj,
    check_peft_adapter,
    gguf_vocab,
)
from controller.weights.info import EstimateError
from tests.weights.files import SMOLLM2, gguf_kv, gguf_string

ROOT = SMOLLM2.parent
GGUF = SMOLLM2.name
VLM = ROOT / "tiny-vlm" / "tiny-vlm.gguf"
MMPROJ = ROOT / "tiny-vlm" / "mmproj-tiny-vlm.gguf"
LORA_A, LORA_B = ROOT / "smollm2-lora-a.gguf", ROOT / "smollm2-lora-b.gguf"
SHAPES = [SMOLLM2, VLM, MMPROJ, LORA_A, LORA_B, ROOT / "smollm2-lora-a" / "adapter_config.json"]


@pytest.fixture(scope="module", autouse=True)
def shapes() -> None:
    missing = [str(p) for p in SHAPES if not p.is_file()]
    if missing:
        pytest.fail(f"missing {missing}; run `make shapes`")


def load(tmp_path: Path, text: str, roots: list[Path] | None = None) -> list[LoadedModel]:
    folder = tmp_path / "manifests"
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(text)
    return load_folder(folder, model_roots=roots or [ROOT], check_files=check_files)


def refused(tmp_path: Path, text: str, roots: list[Path] | None = None) -> ManifestError:
    with pytest.raises(InvalidManifests) as caught:
        load(tmp_path, text, roots)
    (error,) = caught.value.errors
    assert Path(error.file).name == "m.yaml"
    return error


# --- what the engines serve passes --------------------------------------------------------------


def test_the_pairings_the_engines_serve_pass(tmp_path: Path) -> None:
    text = f"""name: s
model: {GGUF}
draft: {GGUF}
adapters: [{{name: s-a, path: smollm2-lora-a.gguf}}, {{name: s-b, path: smollm2-lora-b.gguf}}]
---
name: vlm
model: tiny-vlm/tiny-vlm.gguf
mmproj: tiny-vlm/mmproj-tiny-vlm.gguf
---
name: v
model: smollm2-safetensors
engine: vllm
adapters: [{{name: v-a, path: smollm2-lora-a}}, {{name: v-b, path: smollm2-lora-b}}]
"""
    assert [m.name for m in load(tmp_path, text)] == ["s", "v", "vlm"]


# --- llama.cpp: the failures docs/model-shapes.md saw, found before the start -------------------


def test_an_adapter_for_another_base_is_refused_by_shape(tmp_path: Path) -> None:
    """smollm2-lora-a.gguf on tiny-vlm.gguf: both llama, 576 wide against 64 (llama.cpp: 'tensor
    'blk.0.attn_k.weight' has incorrect shape (hint: maybe wrong base model?)')."""
    text = "model: tiny-vlm/tiny-vlm.gguf\nadapters:\n  - name: a\n    path: smollm2-lora-a.gguf\n"
    error = refused(tmp_path, text)
    assert (error.field, error.line) == ("adapters.0.path", 4)
    assert error.message.startswith(f"{LORA_A}: tensor 'blk.0.")
    assert "the adapter's is 1536x576: an adapter for another base model" in error.message
    assert "maybe wrong base model?" in error.message


def test_a_projector_of_another_width_is_refused(tmp_path: Path) -> None:
    """tiny-vlm's projector (64 wide) with SmolLM2 (576): llama.cpp's 'mismatch between text
    model (n_embd = 576) and mmproj (n_embd = 64)'."""
    error = refused(tmp_path, f"model: {GGUF}\nmmproj: tiny-vlm/mmproj-tiny-vlm.gguf\n")
    assert (error.field, error.line) == ("mmproj", 2)
    assert error.message == (
        f"{MMPROJ}: the projector's output width (clip.vision.projection_dim 64) is not the text "
        "model's (llama.embedding_length 576): it belongs to another model (llama.cpp: mismatch "
        "between text model (n_embd = 576) and mmproj (n_embd = 64))"
    )


def test_a_draft_of_another_vocabulary_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, f"model: {GGUF}\ndraft: tiny-vlm/tiny-vlm.gguf\n")
    assert (error.field, error.line) == ("draft", 2)
    assert "a vocabulary of 49191 tokens, the weights' has 49152" in error.message


def test_files_of_the_wrong_kind_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(EstimateError, match="not a projector GGUF"):
        check_mmproj(LORA_A, SMOLLM2)
    with pytest.raises(EstimateError, match=r"smollm2-lora-a\.gguf: not a model GGUF"):
        check_gguf_draft(LORA_A, SMOLLM2)
    with pytest.raises(EstimateError, match=r"mmproj-tiny-vlm\.gguf: not a LoRA adapter GGUF"):
        check_gguf_adapter(MMPROJ, VLM)
    error = refused(tmp_path, f"model: {GGUF}\nadapters: [{{name: a, path: tiny-vlm/tiny-vlm.gguf}}]\n")
    assert error.field == "adapters.0.path" and "not a LoRA adapter GGUF" in error.message


def write_adapter(path: Path, arch: str) -> None:
    """A LoRA adapter GGUF header for ``arch``: one lora_a/lora_b pair (f16)."""
    kvs = [
        gguf_kv("general.architecture", 8, gguf_string(arch)),
        gguf_kv("general.type", 8, gguf_string("adapter")),
        gguf_kv("adapter.type", 8, gguf_string("lora")),
        gguf_kv("adapter.lora.alpha", 6, struct.pack("<f", 16.0)),
    ]
    tensors = [("blk.0.attn_q.weight.lora_a", (576, 8)), ("blk.0.attn_q.weight.lora_b", (8, 576))]
    infos = b"".join(
        gguf_string(name) + struct.pack("<I2Q", 2, *dims) + struct.pack("<IQ", 1, 0) for name, dims in tensors
    )
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos)


def test_an_adapter_for_another_architecture_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(VLM, root / "m.gguf")
    write_adapter(root / "qwen-lora.gguf", "qwen2")
    error = refused(tmp_path, "model: m.gguf\nadapters: [{name: a, path: qwen-lora.gguf}]\n", [root])
    assert error.field == "adapters.0.path"
    assert (
        error.message
        == f"{root / 'qwen-lora.gguf'}: an adapter for architecture qwen2; the weights are llama"
    )


def test_an_adapter_for_a_tensor_the_weights_lack_is_refused(tmp_path: Path) -> None:
    write_adapter(tmp_path / "a.gguf", "llama")  # blk.0.attn_q is there; make it one the base lacks
    data = (tmp_path / "a.gguf").read_bytes().replace(b"blk.0.attn_q", b"blk.9.attn_q")
    (tmp_path / "a.gguf").write_bytes(data)
    with pytest.raises(EstimateError, match=re.escape("adapts 'blk.9.attn_q.weight', which the weights")):
        check_gguf_adapter(tmp_path / "a.gguf", VLM)


def test_a_truncated_adapter_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(LORA_A.read_bytes()[:200])
    with pytest.raises(EstimateError, match=r"a\.gguf: truncated GGUF header"):
        check_gguf_adapter(tmp_path / "a.gguf", SMOLLM2)


def test_vocabulary_size_from_the_header() -> None:
    assert gguf_vocab({"general.architecture": "x", "x.vocab_size": 7, "tokenizer.ggml.tokens": ["a"]}) == 7
    assert gguf_vocab({"tokenizer.ggml.tokens": ["a", "b"]}) == 2
    assert gguf_vocab({"tokenizer.ggml.tokens": "<262144 items, not read>"}) == 262144
    assert gguf_vocab({}) is None


# --- vLLM: PEFT folders and draft folders -------------------------------------------------------


def peft(folder: Path, r: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r}))
    return folder


def test_a_peft_adapter_needs_a_rank_vllm_can_serve(tmp_path: Path) -> None:
    check_peft_adapter(ROOT / "smollm2-lora-a")
    check_peft_adapter(peft(tmp_path / "wide", 512))
    with pytest.raises(EstimateError, match=r"wider: LoRA rank 600 is above 512"):
        check_peft_adapter(peft(tmp_path / "wider", 600))


def test_a_peft_folder_without_its_config_is_one_located_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(ROOT / "smollm2-safetensors", root / "base")
    (root / "empty").mkdir()
    text = "model: base\nengine: vllm\nadapters:\n  - {name: a, path: empty}\n"
    error = refused(tmp_path, text, [root])
    assert (error.field, error.line) == ("adapters.0.path", 4)
    assert error.message == f"{root / 'empty'}: no adapter_config.json; is this a PEFT LoRA adapter folder?"


def test_a_vllm_draft_shares_the_vocabulary(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(ROOT / "smollm2-safetensors", root / "base")
    (root / "draft").mkdir()
    (root / "draft" / "config.json").write_text(json.dumps({"vocab_size": 32000}))
    error = refused(tmp_path, "model: base\nengine: vllm\ndraft: draft\n", [root])
    assert error.field == "draft"
    assert "vocab_size 32000, the weights' is 49152" in error.message
    (root / "draft" / "config.json").write_text(json.dumps({"vocab_size": 49152}))
    (model,) = load(tmp_path, "model: base\nengine: vllm\ndraft: draft\n", [root])
    assert model.files.draft == root / "draft"


def test_hub_weights_are_not_checked_here(tmp_path: Path) -> None:
    (model,) = load(
        tmp_path, "model: hf://org/repo:Q4\nengine: llamacpp\nmmproj: tiny-vlm/mmproj-tiny-vlm.gguf\n"
    )
    assert model.weights is None and check_files(model) == []
