"""Manifests: the seed example, defaults, and errors that name file, document, field and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.errors import InvalidManifests
from controller.manifests.document import ModelManifest
from controller.manifests.loader import load_folder

SEED = {"model": "path/to/model.safetensors", "engine": "vllm", "num_gpus": 2, "max_batch_size": 16}


def test_seed_example_is_a_valid_manifest_verbatim() -> None:
    m = ModelManifest.model_validate(SEED)
    assert (m.model, m.engine, m.num_gpus, m.max_batch_size) == (
        "path/to/model.safetensors",
        "vllm",
        2,
        16,
    )
    assert m.name == "model"
    assert (m.replicas, m.min_count, m.max_count, m.on_demand) == (1, 1, 1, False)


@pytest.mark.parametrize(
    ("doc", "name", "engine"),
    [
        ({"model": "SmolLM2-135M-Instruct.Q4_1.gguf"}, "smollm2-135m-instruct.q4_1", "llamacpp"),
        ({"model": "org/Qwen2.5-0.5B/"}, "qwen2.5-0.5b", "vllm"),
        ({"model": "org/Qwen2.5-0.5B"}, "qwen2.5-0.5b", "vllm"),
        ({"model": "m.safetensors", "name": "chat"}, "chat", "vllm"),
        ({"model": "a/b.gguf", "engine": "llamacpp", "name": "x"}, "x", "llamacpp"),
    ],
)
def test_defaults_come_from_the_weights(doc: dict[str, object], name: str, engine: str) -> None:
    m = ModelManifest.model_validate(doc)
    assert (m.name, m.engine) == (name, engine)


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"model": "m.safetensors", "engine": "llamacpp"}, "engine", "GGUF weights only"),
        ({"model": "m.gguf", "engine": "vllm"}, "engine", "not set up for GGUF"),
        ({"model": "m.gguf", "name": "Bad Name"}, "name", "not a valid name"),
        ({"model": "m.gguf", "replicas": -1}, "replicas", "greater than or equal to 0"),
        ({"model": "m.gguf", "max_batch_size": 0}, "max_batch_size", "greater than or equal to 1"),
        ({"model": "m.gguf", "repicas": 2}, "repicas", "Extra inputs"),
        ({"model": "m.gguf", "args": ["--port=9000"]}, "args", "may not set --port"),
        ({"model": "m.gguf", "name": "a", "aliases": ["a"]}, "aliases", "repeats the model's own"),
        ({"model": "m.gguf", "env": {"1BAD": "x"}}, "env.1BAD.[key]", "not a valid environment"),
        ({"model": "m.gguf", "privileged": True}, "privileged", "Extra inputs"),
        ({"model": "m.gguf", "volumes": ["/:/host"]}, "volumes", "Extra inputs"),
        ({"model": "m.gguf", "min_replicas": 3, "max_replicas": 2}, "max_replicas", "less than min_replicas"),
        ({"model": "m.gguf", "min_replicas": -1}, "min_replicas", "greater than or equal to 0"),
        ({"model": "m.gguf", "max_replicas": 0}, "max_replicas", "greater than or equal to 1"),
        ({"model": "m.gguf", "replicas": 2, "min_replicas": 0}, "replicas", "leave it out"),
        ({"model": "m.gguf", "replicas": 2, "max_replicas": 4}, "replicas", "leave it out"),
        ({"model": "m.gguf", "idle_timeout": "10y"}, "idle_timeout", "not a duration"),
        ({"model": "m.gguf", "idle_timeout": -5}, "idle_timeout", "cannot be negative"),
        ({"model": "m.gguf", "load_timeout": "soon"}, "load_timeout", "not a duration"),
        ({"model": "m.gguf", "target_requests": 0}, "target_requests", "greater than or equal to 1"),
        ({"model": "m.gguf", "priority": 5000}, "priority", "less than or equal to 1000"),
    ],
)
def test_invalid_documents_name_the_field(doc: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelManifest.model_validate(doc)
    errors = info.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [field]
    assert words in errors[0]["msg"]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_folder_of_multi_document_files_loads_sorted(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "model: b.gguf\n---\nmodel: a.gguf\nreplicas: 2\n")
    write(tmp_path, "seed.json", '{"model": "path/to/model.safetensors", "engine": "vllm"}')
    write(tmp_path, "notes.txt", "not a manifest")
    models = load_folder(tmp_path)
    assert [m.name for m in models] == ["a", "b", "model"]
    assert [(Path(m.file).name, m.document) for m in models] == [
        ("a.yaml", 2),
        ("a.yaml", 1),
        ("seed.json", None),  # the only document of its file
    ]


def test_every_error_is_reported_with_file_document_field_and_line(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "model: a.gguf\nrepicas: 2\n---\nmodel: b.gguf\nmax_batch_size: 0\n")
    write(tmp_path, "b.yaml", "model: [unclosed\n")
    with pytest.raises(InvalidManifests) as info:
        load_folder(tmp_path)
    found = [(Path(e.file).name, e.document, e.field, e.line) for e in info.value.errors]
    assert found == [
        ("a.yaml", 1, "repicas", 2),
        ("a.yaml", 2, "max_batch_size", 5),
        ("b.yaml", None, None, 2),
    ]
    assert "invalid YAML" in info.value.errors[2].message
    assert str(info.value.errors[0]).startswith(f"{tmp_path / 'a.yaml'}:2 (document 1) field 'repicas'")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("max_batchsize", "unknown field; did you mean 'max_batch_size'?"),
        ("Replicas", "unknown field; did you mean 'replicas'?"),
        ("gpus", "unknown field; did you mean 'num_gpus'?"),
        ("colour", "unknown field (check the spelling)"),  # nothing close: no guess
        ("x" * 1000, "unknown field (check the spelling)"),  # a hostile key is not compared
    ],
)
def test_a_misspelt_field_names_the_field_it_most_likely_means(
    tmp_path: Path, key: str, message: str
) -> None:
    write(tmp_path, "a.yaml", f"model: a.gguf\n{key}: 2\n")
    with pytest.raises(InvalidManifests) as info:
        load_folder(tmp_path)
    (error,) = info.value.errors
    assert (error.field, error.line, error.message) == (key, 2, message)


def test_the_document_is_named_only_in_a_file_of_several(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", "model: a.gguf\nname: chat\n")
    write(tmp_path, "three.yaml", "model: d.gguf\nmax_batchsize: 2\n")
    write(tmp_path, "two.yaml", "model: b.gguf\nrepicas: 2\n---\nmodel: c.gguf\nname: chat\n")
    with pytest.raises(InvalidManifests) as info:
        load_folder(tmp_path)
    shown = sorted(str(e).removeprefix(f"{tmp_path}/") for e in info.value.errors)
    assert shown == [
        "three.yaml:2 field 'max_batchsize': unknown field; did you mean 'max_batch_size'?",
        "two.yaml:2 (document 1) field 'repicas': unknown field; did you mean 'replicas'?",
        "two.yaml:5 (document 2) field 'name': name 'chat' is already used by "
        f"{tmp_path}/one.yaml",  # its only document: no number
    ]


def test_a_document_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "- model: a.gguf\n")
    with pytest.raises(InvalidManifests, match="must be a mapping"):
        load_folder(tmp_path)


def test_names_and_aliases_are_unique_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "model: a.gguf\naliases: [chat]\n")
    write(tmp_path, "b.yaml", "model: b.gguf\nname: chat\n")
    with pytest.raises(InvalidManifests, match=r"name 'chat' is already used by .*a\.yaml"):
        load_folder(tmp_path)


def test_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidManifests, match="no such file or folder"):
        load_folder(tmp_path / "nope")


class TestWeightsUnderModelRoots:
    def setup_roots(self, tmp_path: Path) -> tuple[Path, Path]:
        root = tmp_path / "root"
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "m.gguf").write_bytes(b"GGUF")
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        return root, manifests

    def test_relative_and_absolute_paths_resolve_under_a_root(self, tmp_path: Path) -> None:
        root, manifests = self.setup_roots(tmp_path)
        write(manifests, "a.yaml", f"model: sub/m.gguf\n---\nname: abs\nmodel: {root}/sub/m.gguf\n")
        models = load_folder(manifests, model_roots=[root])
        assert [m.weights for m in models] == [root / "sub" / "m.gguf"] * 2

    @pytest.mark.parametrize("weights", ["../outside.gguf", "/etc/passwd.gguf", "link.gguf", "missing.gguf"])
    def test_paths_outside_the_roots_are_refused(self, tmp_path: Path, weights: str) -> None:
        root, manifests = self.setup_roots(tmp_path)
        (tmp_path / "outside.gguf").write_bytes(b"GGUF")
        os.symlink(tmp_path / "outside.gguf", root / "link.gguf")
        write(manifests, "a.yaml", f"name: m\nmodel: {weights}\n")
        with pytest.raises(InvalidManifests) as info:
            load_folder(manifests, model_roots=[root])
        (error,) = info.value.errors
        assert (error.field, error.line) == ("model", 2)
        assert "outside the model roots" in error.message or "not found under" in error.message


def test_hub_references_need_no_model_root(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: qwen\nmodel: hf://Qwen/Qwen2.5-0.5B-Instruct\n")
    (model,) = load_folder(tmp_path, model_roots=[tmp_path / "root"])
    assert (model.weights, model.hub, model.manifest.engine) == (None, "Qwen/Qwen2.5-0.5B-Instruct", "vllm")


def test_a_gguf_quant_tag_is_not_for_vllm() -> None:
    with pytest.raises(ValidationError, match=r"llama\.cpp.s; not for vllm"):
        ModelManifest.model_validate({"model": "hf://org/repo:Q4_K_M", "engine": "vllm"})


@pytest.mark.parametrize(
    ("doc", "low", "high", "on_demand"),
    [
        ({}, 1, 1, False),
        ({"replicas": 3}, 3, 3, False),
        ({"replicas": 0}, 0, 0, False),
        ({"min_replicas": 0}, 0, 1, True),
        ({"min_replicas": 2}, 2, 2, False),
        ({"max_replicas": 4}, 1, 4, True),
        ({"min_replicas": 0, "max_replicas": 3}, 0, 3, True),
    ],
)
def test_replica_bounds(doc: dict[str, object], low: int, high: int, on_demand: bool) -> None:
    """``replicas: N`` keeps meaning "always N"; min/max bound what the controller scales between."""
    m = ModelManifest.model_validate({"model": "m.gguf", **doc})
    assert (m.min_count, m.max_count, m.on_demand) == (low, high, on_demand)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10m", 600),
        ("30s", 30),
        ("1h", 3600),
        ("1h30m", 5400),
        ("90", 90),
        (0, 0),
        (2.5, 2.5),
        (" 2 m ", 120),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert ModelManifest.model_validate({"model": "m.gguf", "idle_timeout": value}).idle_timeout_s == seconds


def test_on_demand_defaults_suit_the_engine() -> None:
    gguf = ModelManifest.model_validate({"model": "m.gguf", "min_replicas": 0, "max_batch_size": 3})
    vllm = ModelManifest.model_validate({"model": "m.safetensors"})
    assert (gguf.idle_timeout_s, gguf.target, gguf.priority) == (300, 3, 0)
    assert gguf.load_timeout_s == 120 and vllm.load_timeout_s == 900
    assert ModelManifest.model_validate({"model": "m.gguf", "load_timeout": "45s"}).load_timeout_s == 45
