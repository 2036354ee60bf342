"""safetensors headers and the config.json beside them, in files written here (``files``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.weights.info import Architecture, EstimateError
from controller.weights.read import read_weights
from weights.files import CONFIG, write_safetensors


def test_safetensors_file_with_config_beside_it(tmp_path: Path) -> None:
    data = write_safetensors(
        tmp_path / "model.safetensors", {"w": ("BF16", (576, 1536)), "n": ("F32", (576,))}
    )
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    info = read_weights(tmp_path / "model.safetensors")
    assert data == 576 * 1536 * 2 + 576 * 4
    assert (info.weight_bytes, info.tensors) == (data, 2)
    assert info.architecture == Architecture(30, 3, 64, 64, 8192)


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


def test_missing_weights_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EstimateError, match="nothing-here: no such file or folder"):
        read_weights(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EstimateError, match=r"empty: no \.safetensors files"):
        read_weights(tmp_path / "empty")


def test_a_changed_config_beside_safetensors_is_read_again(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", (64, 64))})
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    assert read_weights(tmp_path / "model.safetensors").architecture == Architecture(30, 3, 64, 64, 8192)
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": 12, "pad": "x" * 9}))
    assert read_weights(tmp_path / "model.safetensors").architecture == Architecture(12, 3, 64, 64, 8192)
