"""A split GGUF (``make shapes``: SmolLM2 in three shards, docs/model-shapes.md) end to end short of
Docker: the loader checks every shard against the model roots, the estimate and the description
count every shard, and the llama.cpp spec mounts each shard beside the first."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from controller.engines.llamacpp import container_spec
from controller.errors import InvalidManifests
from controller.manifests.loader import load_folder
from controller.manifests.shards import shard_names
from controller.placement.memory import estimate_files
from controller.weights.describe import describe
from controller.weights.info import EstimateError
from controller.weights.read import on_disk, read_weights
from weights.files import SMOLLM2

SPLIT = SMOLLM2.parent / "smollm2-split"
PREFIX = "SmolLM2-135M-Instruct.Q4_1"
SHARDS = [f"{PREFIX}-{k:05d}-of-00003.gguf" for k in (1, 2, 3)]


@pytest.fixture
def split() -> Path:
    if not all((SPLIT / name).is_file() for name in SHARDS):
        pytest.fail(f"{SPLIT} lacks SmolLM2's shards; run `make shapes`")
    return SPLIT


def write_manifest(folder: Path, model: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(f"name: split\nengine: llamacpp\nmodel: {model}\nreplicas: 1\n")
    return folder


def load_error(manifests: Path, root: Path) -> str:
    with pytest.raises(InvalidManifests) as caught:
        load_folder(manifests, model_roots=[root])
    [error] = caught.value.errors
    assert (error.field, error.line, Path(str(error.file)).name) == ("model", 3, "m.yaml")
    return error.message


def test_shard_names() -> None:
    assert shard_names("a.gguf") == ("a.gguf",)
    assert shard_names("a-00001-of-00002.gguf") == ("a-00001-of-00002.gguf", "a-00002-of-00002.gguf")
    with pytest.raises(ValueError, match=re.escape("name shard 1 ('a-00001-of-00002.gguf')")):
        shard_names("a-00002-of-00002.gguf")
    with pytest.raises(ValueError, match="not a valid"):
        shard_names("a-00003-of-00002.gguf")


def test_estimate_is_the_sum_of_the_shards(split: Path) -> None:
    whole = read_weights(SMOLLM2)
    parts = read_weights(split / SHARDS[0])
    assert parts.weight_bytes == whole.weight_bytes == 96_576_768
    assert (parts.tensors, parts.architecture) == (whole.tensors, whole.architecture)
    one = estimate_files(split / SHARDS[0], engine="llamacpp", context_length=2048, max_batch_size=2)
    assert one == estimate_files(SMOLLM2, engine="llamacpp", context_length=2048, max_batch_size=2)


def test_description_counts_every_shard(split: Path, tmp_path: Path) -> None:
    manifests = write_manifest(tmp_path / "m", f"smollm2-split/{SHARDS[0]}")
    [model] = load_folder(manifests, model_roots=[split.parent])
    details = describe(model)
    assert details.size == on_disk(split / SHARDS[0]) == sum((split / n).stat().st_size for n in SHARDS)
    assert details.size == SMOLLM2.stat().st_size + 320  # each shard repeats the header
    whole = dict(
        describe(
            load_folder(write_manifest(tmp_path / "w", SMOLLM2.name), model_roots=[SMOLLM2.parent])[0]
        ).info
    )
    assert dict(details.info)["general.parameter_count"] == whole["general.parameter_count"]


def test_spec_mounts_each_shard_beside_the_first(split: Path, tmp_path: Path) -> None:
    [model] = load_folder(
        write_manifest(tmp_path / "m", f"smollm2-split/{SHARDS[0]}"), model_roots=[split.parent]
    )
    spec = container_spec(model, 0, ())
    mounts = sorted((m.source, m.target, m.read_only) for m in spec.mounts)
    assert mounts == [(str((split / n).resolve()), f"/models/split/{n}", True) for n in SHARDS]
    assert spec.command[:2] == ("-m", f"/models/split/{SHARDS[0]}")


def copy_shards(root: Path, names: list[str]) -> Path:
    (root / "s").mkdir(parents=True)
    for name in names:
        shutil.copy(SPLIT / name, root / "s" / name)
    return root


def test_a_missing_shard_is_one_located_error(split: Path, tmp_path: Path) -> None:
    root = copy_shards(tmp_path / "root", [SHARDS[0], SHARDS[2]])
    message = load_error(write_manifest(tmp_path / "m", f"s/{SHARDS[0]}"), root)
    assert f"shard '{SHARDS[1]}' is missing" in message


def test_naming_another_shard_says_to_name_shard_1(split: Path, tmp_path: Path) -> None:
    root = copy_shards(tmp_path / "root", SHARDS)
    message = load_error(write_manifest(tmp_path / "m", f"s/{SHARDS[1]}"), root)
    assert f"name shard 1 ('{SHARDS[0]}')" in message


def test_a_shard_linked_out_of_the_roots_is_refused(split: Path, tmp_path: Path) -> None:
    root = copy_shards(tmp_path / "root", SHARDS[:2])
    (root / "s" / SHARDS[2]).symlink_to(split / SHARDS[2])  # outside tmp root
    message = load_error(write_manifest(tmp_path / "m", f"s/{SHARDS[0]}"), root)
    assert "outside the model roots" in message


def test_split_count_must_agree_with_the_name(split: Path, tmp_path: Path) -> None:
    (tmp_path / "x-00001-of-00002.gguf").write_bytes((split / SHARDS[0]).read_bytes())
    (tmp_path / "x-00002-of-00002.gguf").write_bytes((split / SHARDS[1]).read_bytes())
    with pytest.raises(EstimateError, match=re.escape("split.count is 3, the file name says 2")):
        read_weights(tmp_path / "x-00001-of-00002.gguf")
