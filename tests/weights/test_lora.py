"""A LoRA adapter's rank from its own files (PEFT folder, GGUF adapter), and located refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.weights.info import EstimateError
from controller.weights.lora import adapter_rank, max_lora_rank, max_loras
from tests.weights.files import write_gguf


def test_rank_of_a_peft_folder(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
    assert adapter_rank(tmp_path) == 16


@pytest.mark.parametrize("r", [0, -1, "x", 1e9, None, True])
def test_bad_rank_is_refused_with_the_file(tmp_path: Path, r: object) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": r}))
    with pytest.raises(EstimateError, match=r"adapter_config\.json"):
        adapter_rank(tmp_path)


def test_a_folder_without_adapter_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EstimateError, match=r"no adapter_config\.json"):
        adapter_rank(tmp_path)


def test_another_peft_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "r": 8}))
    with pytest.raises(EstimateError, match="not LORA"):
        adapter_rank(tmp_path)


def test_a_model_gguf_is_not_an_adapter(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    write_gguf(path, [("blk.0.attn_q.weight", (8, 8), 0)], arch="llama")
    with pytest.raises(EstimateError, match="not a LoRA adapter"):
        adapter_rank(path)


@pytest.mark.parametrize(
    ("ranks", "rank"),
    [([1], 1), ([2], 8), ([8], 8), ([8, 9], 16), ([4, 33, 16], 64), ([300], 320), ([320], 320), ([321], 512)],
)
def test_max_lora_rank_rounds_the_largest_up_to_what_vllm_takes(ranks: list[int], rank: int) -> None:
    assert max_lora_rank(ranks) == rank


@pytest.mark.parametrize(("ranks", "words"), [([513], "rank 513 is above 512"), ([], "no adapter rank")])
def test_max_lora_rank_refuses_what_vllm_cannot_serve(ranks: list[int], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        max_lora_rank(ranks)


def test_max_loras_is_every_adapter() -> None:
    adapters = [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}]
    manifest = ModelManifest.model_validate({"model": "m", "engine": "vllm", "adapters": adapters})
    assert max_loras(LoadedModel(manifest, "m.yaml", None, None)) == 2
    bare = ModelManifest.model_validate({"model": "m", "engine": "vllm"})
    assert max_loras(LoadedModel(bare, "m.yaml", None, None)) == 0
