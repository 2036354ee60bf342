"""The files beside the weights (mmproj, draft, adapters): what one document refuses, and how the
loader resolves each file under the model roots like the weights, one located error per problem.
Real files from `make shapes` (docs/model-shapes.md) where the loader needs files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from controller.errors import InvalidManifests, ManifestError
from controller.manifests.document import ModelManifest
from controller.manifests.loader import load_folder
from controller.manifests.model import AdapterFile, ExtraFiles
from tests.weights.files import SMOLLM2

ROOT = SMOLLM2.parent
GGUF = SMOLLM2.name
SHAPES = [
    GGUF,
    "smollm2-lora-a.gguf",
    "smollm2-lora-b.gguf",
    "smollm2-lora-a/adapter_config.json",
    "smollm2-safetensors/config.json",
    "tiny-vlm/tiny-vlm.gguf",
    "tiny-vlm/mmproj-tiny-vlm.gguf",
    "smollm2-split/SmolLM2-135M-Instruct.Q4_1-00003-of-00003.gguf",
]


@pytest.fixture(scope="module")
def root() -> Path:
    missing = [name for name in SHAPES if not (ROOT / name).is_file()]
    if missing:
        pytest.fail(f"{ROOT} lacks {missing}; run `make shapes`")
    return ROOT


# --- one document ---------------------------------------------------------------------------------


def refusal(doc: dict[str, Any]) -> tuple[str, str]:
    """The one error of an invalid document: its field, dotted as the loader shows it, and message."""
    with pytest.raises(ValidationError) as caught:
        ModelManifest.model_validate(doc)
    (error,) = caught.value.errors()
    return ".".join(map(str, error["loc"])), error["msg"].removeprefix("Value error, ")


LORA = {"name": "a", "path": "a.gguf"}


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"model": "m.gguf", "name": "m", "adapters": [{"name": "m", "path": "a.gguf"}]}, "adapters.0.name",
         "'m' is already this model's name"),
        ({"model": "m.gguf", "aliases": ["x"], "adapters": [{"name": "x", "path": "a.gguf"}]},
         "adapters.0.name", "'x' is already an alias of this model"),
        ({"model": "m.gguf", "adapters": [LORA, {"name": "a", "path": "b.gguf"}]}, "adapters.1.name",
         "'a' is already the name of adapters.0"),
        ({"model": "m.gguf", "adapters": [{"name": "m:a", "path": "a.gguf"}]}, "adapters.0.name",
         "not a valid name"),
        ({"model": "m.safetensors", "mmproj": "p.gguf"}, "mmproj",
         "vLLM reads a vision model's projector from the model folder itself"),
        ({"model": "m.gguf", "mmproj": "hf://org"}, "mmproj", "'hf://org' is not a hub reference"),
        ({"model": "m.gguf", "draft": "hf://org/repo:Q4:0"}, "draft", "is not a hub reference"),
        ({"model": "m.safetensors", "mmproj": "hf://org/vlm"}, "mmproj",
         "vLLM reads a vision model's projector from the model folder itself"),
        ({"model": "m.safetensors", "draft": "hf://org/small:Q4_0"}, "draft",
         "':TAG' selects a GGUF file, which is llama.cpp's; not for vllm"),
        ({"model": "m.safetensors", "adapters": [{"name": "a", "path": "hf://org/lora:a"}]},
         "adapters.0.path", "':TAG' selects a GGUF file"),
        ({"model": "m.gguf", "mmproj": "p.bin"}, "mmproj", "llama.cpp loads a GGUF projector file"),
        ({"model": "m.gguf", "draft": "draft/"}, "draft", "llama.cpp loads a GGUF draft file"),
        ({"model": "m.gguf", "adapters": [LORA, {"name": "b", "path": "lora-b"}]}, "adapters.1.path",
         "llama.cpp loads a GGUF adapter file, not 'lora-b'"),
        ({"model": "m.gguf", "adapters": [{"name": "a", "path": "a,b.gguf"}]}, "adapters.0.path",
         "cannot take an adapter path with ',' or ':'"),
        ({"model": "m.safetensors", "adapters": [LORA]}, "adapters.0.path",
         "vLLM's adapter is a PEFT folder"),
        ({"model": "m.safetensors", "draft": "d.safetensors"}, "draft", "vLLM's draft is a model folder"),
    ],
)  # fmt: skip
def test_a_file_beside_the_weights_that_cannot_be_is_refused_at_its_field(
    doc: dict[str, Any], field: str, words: str
) -> None:
    got_field, message = refusal(doc)
    assert got_field == field and words in message, message
    assert "\n" not in message


def test_what_each_engine_loads_passes() -> None:
    llama = ModelManifest.model_validate(
        {
            "model": "m.gguf",
            "mmproj": "p.gguf",
            "draft": "d.gguf",
            "adapters": [LORA, {"name": "b", "path": "b.gguf"}],
        }
    )
    assert [a.name for a in llama.adapters] == ["a", "b"]
    vllm = ModelManifest.model_validate(
        {"model": "m", "engine": "vllm", "draft": "small", "adapters": [{"name": "a", "path": "lora-a"}]}
    )
    assert (vllm.draft, vllm.adapters[0].path) == ("small", "lora-a")


def test_hub_references_beside_the_weights_pass_for_the_engine_that_takes_them() -> None:
    llama = ModelManifest.model_validate(
        {
            "model": "m.gguf",
            "mmproj": "hf://org/vlm-GGUF:F16",
            "draft": "hf://org/small-GGUF:Q8_0",
            "adapters": [{"name": "a", "path": "hf://org/loras:a"}, {"name": "b", "path": "hf://org/lora-b"}],
        }
    )
    assert (llama.mmproj, llama.draft) == ("hf://org/vlm-GGUF:F16", "hf://org/small-GGUF:Q8_0")
    assert [a.path for a in llama.adapters] == ["hf://org/loras:a", "hf://org/lora-b"]
    vllm = ModelManifest.model_validate(
        {
            "model": "hf://org/big",
            "draft": "hf://org/small",
            "adapters": [{"name": "a", "path": "hf://org/peft"}],
        }
    )
    assert (vllm.resolved_engine, vllm.draft, vllm.adapters[0].path) == (
        "vllm",
        "hf://org/small",
        "hf://org/peft",
    )


# --- the loader -----------------------------------------------------------------------------------


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.yaml").write_text(text)
    return folder


def load_error(folder: Path, roots: list[Path]) -> ManifestError:
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, model_roots=roots)
    (error,) = caught.value.errors
    assert Path(error.file).name == "m.yaml"
    return error


def test_each_file_is_resolved_under_the_roots_into_files(root: Path, tmp_path: Path) -> None:
    text = f"""name: s
model: {GGUF}
draft: {GGUF}
adapters:
  - {{name: s-a, path: smollm2-lora-a.gguf}}
  - {{name: s-b, path: ./smollm2-lora-b.gguf}}
---
name: vlm
model: tiny-vlm/tiny-vlm.gguf
mmproj: tiny-vlm/../tiny-vlm/mmproj-tiny-vlm.gguf
---
name: v
model: smollm2-safetensors
engine: vllm
adapters: [{{name: v-a, path: smollm2-lora-a}}]
"""
    s, v, vlm = load_folder(write(tmp_path / "m", text), model_roots=[root])
    adapters = (
        AdapterFile("s-a", root / "smollm2-lora-a.gguf"),
        AdapterFile("s-b", root / "smollm2-lora-b.gguf"),
    )
    assert s.files == ExtraFiles(draft=root / GGUF, adapters=adapters)
    assert vlm.files == ExtraFiles(mmproj=root / "tiny-vlm" / "mmproj-tiny-vlm.gguf")
    assert v.files == ExtraFiles(adapters=(AdapterFile("v-a", root / "smollm2-lora-a"),))


def test_hub_references_are_not_looked_up_under_the_roots(root: Path, tmp_path: Path) -> None:
    """A hub file beside local weights is left to the pull (no 'not found under the model roots'),
    while a local file beside it is still resolved."""
    text = f"""model: {GGUF}
draft: hf://test/smollm2-GGUF:Q4_1
adapters:
  - {{name: a, path: smollm2-lora-a.gguf}}
  - {{name: b, path: "hf://test/smollm2-lora:b"}}
"""
    (model,) = load_folder(write(tmp_path / "m", text), model_roots=[root])
    assert model.weights == root / GGUF
    assert model.files == ExtraFiles(adapters=(AdapterFile("a", root / "smollm2-lora-a.gguf"),))
    assert model.pulled is None


def test_without_roots_nothing_is_looked_up(tmp_path: Path) -> None:
    (model,) = load_folder(write(tmp_path, "model: m.gguf\nadapters: [{name: a, path: nowhere.gguf}]\n"))
    assert model.files == ExtraFiles()


def vlm_root(tmp_path: Path, root: Path) -> Path:
    """A model root of its own holding tiny-vlm's text model (nothing else)."""
    mine = tmp_path / "root"
    mine.mkdir()
    shutil.copy(root / "tiny-vlm" / "tiny-vlm.gguf", mine / "m.gguf")
    return mine


def test_a_projector_linked_out_of_the_roots_is_one_located_error(root: Path, tmp_path: Path) -> None:
    mine = vlm_root(tmp_path, root)
    (mine / "p.gguf").symlink_to(root / "tiny-vlm" / "mmproj-tiny-vlm.gguf")  # outside this root
    error = load_error(write(tmp_path / "m", "model: m.gguf\nmmproj: p.gguf\n"), [mine])
    assert (error.field, error.line) == ("mmproj", 2)
    assert error.message.startswith("'p.gguf' resolves to ") and "outside the model roots" in error.message


def test_dot_dot_out_of_the_roots_is_refused(root: Path, tmp_path: Path) -> None:
    mine = vlm_root(tmp_path, root)
    shutil.copy(root / "tiny-vlm" / "tiny-vlm.gguf", tmp_path / "draft.gguf")  # beside the root
    error = load_error(write(tmp_path / "m", "model: m.gguf\ndraft: ../draft.gguf\n"), [mine])
    assert (error.field, error.line) == ("draft", 2)
    assert "outside the model roots" in error.message


def test_a_missing_adapter_is_one_located_error(root: Path, tmp_path: Path) -> None:
    text = f"""model: {GGUF}
adapters:
  - name: a
    path: smollm2-lora-a.gguf
  - name: b
    path: smollm2-lora-z.gguf
"""
    error = load_error(write(tmp_path / "m", text), [root])
    assert (error.field, error.line) == ("adapters.1.path", 6)
    assert error.message.startswith("adapter 'smollm2-lora-z.gguf' not found under the model roots")


def test_a_vllm_adapter_must_be_a_folder_and_a_llamacpp_one_a_file(root: Path, tmp_path: Path) -> None:
    adapter = "{name: a, path: smollm2-lora-a/adapter_config.json}"
    vllm = f"model: smollm2-safetensors\nengine: vllm\nadapters: [{adapter}]\n"
    error = load_error(write(tmp_path / "v", vllm), [root])
    assert (
        error.field == "adapters.0.path"
        and "is not a folder; vLLM loads a folder as adapter" in error.message
    )
    (root_copy := tmp_path / "r").mkdir()
    (root_copy / "x.gguf").mkdir()
    shutil.copy(root / GGUF, root_copy / GGUF)
    error = load_error(
        write(tmp_path / "l", f"model: {GGUF}\nadapters: [{{name: a, path: x.gguf}}]\n"), [root_copy]
    )
    assert error.field == "adapters.0.path" and "is not a file; llama.cpp loads a GGUF file" in error.message


def test_a_split_draft_needs_every_shard(root: Path, tmp_path: Path) -> None:
    mine = vlm_root(tmp_path, root)
    shards = sorted((root / "smollm2-split").glob("*.gguf"))
    for shard in (shards[0], shards[2]):
        shutil.copy(shard, mine / shard.name)
    error = load_error(write(tmp_path / "m", f"model: m.gguf\ndraft: {shards[0].name}\n"), [mine])
    assert (error.field, error.line) == ("draft", 2)
    assert f"shard '{shards[1].name}' is missing" in error.message


def test_an_adapter_name_taken_by_another_model_is_one_located_error(root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.yaml").write_text(f"name: chat\nmodel: {GGUF}\naliases: [helper]\n")
    write(folder, f"model: {GGUF}\nname: base\nadapters:\n  - name: ok\n    path: smollm2-lora-a.gguf\n"
          "  - name: helper\n    path: smollm2-lora-b.gguf\n")  # fmt: skip
    error = load_error(folder, [root])
    assert (error.field, error.line) == ("adapters.1.name", 6)
    assert error.message == f"name 'helper' is already used by {folder / 'a.yaml'}"


def test_adapter_names_are_unique_across_models_without_roots_too(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model: a.gguf\nadapters: [{name: tuned, path: t.gguf}]\n")
    (tmp_path / "m.yaml").write_text("model: b.gguf\nadapters: [{name: tuned, path: u.gguf}]\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(tmp_path)
    (error,) = caught.value.errors
    assert (error.field, error.line, Path(error.file).name) == ("adapters.0.name", 2, "m.yaml")


def test_a_check_that_fails_is_one_error_and_the_other_models_load(root: Path, tmp_path: Path) -> None:
    def broken(model: object) -> list[tuple[tuple[str | int, ...], str]]:
        raise RuntimeError("a bug")

    folder = write(tmp_path / "m", f"model: {GGUF}\ndraft: {GGUF}\n")
    (folder / "b.yaml").write_text(f"name: plain\nmodel: {GGUF}\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, model_roots=[root], check_files=broken)
    (error,) = caught.value.errors
    assert Path(error.file).name == "m.yaml"
    assert error.message == "cannot check the files beside the weights: RuntimeError: a bug"
    (plain,) = load_folder(folder / "b.yaml", model_roots=[root], check_files=broken)  # no files: no check
    assert plain.name == "plain"
