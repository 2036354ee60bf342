"""${NAME} references in manifest env values: syntax, filling from the environment, no leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engines import build_spec
from controller.errors import InvalidManifests
from controller.manifests.envrefs import expand, references
from controller.manifests.loader import load_folder

SECRET = "hf_s3cr3t-value"


@pytest.mark.parametrize(
    ("value", "names", "filled"),
    [
        ("plain", [], "plain"),
        ("${HF_TOKEN}", ["HF_TOKEN"], SECRET),
        ("Bearer ${HF_TOKEN}!", ["HF_TOKEN"], f"Bearer {SECRET}!"),
        ("${A}-${_B2}", ["A", "_B2"], "a-b"),
        ("cost: $$5, ref $${HF_TOKEN}", [], "cost: $5, ref ${HF_TOKEN}"),
        ("", [], ""),
    ],
)
def test_references_and_filling(value: str, names: list[str], filled: str) -> None:
    assert references(value) == names
    assert expand(value, {"HF_TOKEN": SECRET, "A": "a", "_B2": "b"}) == filled


@pytest.mark.parametrize("value", ["$HF_TOKEN", "${HF_TOKEN", "${1X}", "price $", "${}"])
def test_a_dollar_that_is_no_reference_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"write \$\$ for a literal \$"):
        references(value)


def test_a_missing_variable_is_named_once() -> None:
    with pytest.raises(ValueError, match=r"refers to \$\{NOPE\}, not set") as caught:
        expand("${NOPE}:${NOPE}:${SET}", {"SET": SECRET})
    assert SECRET not in str(caught.value)


def write(tmp_path: Path, env_yaml: str) -> Path:
    (tmp_path / "m.yaml").write_text(f"name: m\nmodel: m.gguf\nenv:\n{env_yaml}")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    return tmp_path


def test_the_loader_fills_references_into_the_container_env(tmp_path: Path) -> None:
    folder = write(tmp_path, "  HF_TOKEN: ${HF_TOKEN}\n  MODE: fast\n")
    (model,) = load_folder(folder, model_roots=[folder], environ={"HF_TOKEN": SECRET})
    assert model.manifest.env["HF_TOKEN"] == "${HF_TOKEN}"  # the manifest keeps what git has
    spec = build_spec(model, 0)
    assert ("HF_TOKEN", SECRET) in spec.env and ("MODE", "fast") in spec.env
    for text in (repr(model), repr(spec), str(spec)):
        assert SECRET not in text


def test_a_variable_not_set_is_an_error_on_the_field(tmp_path: Path) -> None:
    folder = write(tmp_path, "  MODE: fast\n  HF_TOKEN: ${HF_TOKEN}\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, environ={})
    (error,) = caught.value.errors
    assert (error.field, error.line, error.document) == ("env.HF_TOKEN", 5, 1)
    assert "${HF_TOKEN}, not set in the controller's environment" in error.message


def test_a_malformed_reference_is_a_manifest_error(tmp_path: Path) -> None:
    folder = write(tmp_path, "  HF_TOKEN: $HF_TOKEN\n")
    with pytest.raises(InvalidManifests) as caught:
        load_folder(folder, environ={"HF_TOKEN": SECRET})
    (error,) = caught.value.errors
    assert error.field == "env.HF_TOKEN" and "starts no ${NAME} reference" in error.message


def test_a_changed_secret_changes_the_spec_hash(tmp_path: Path) -> None:
    folder = write(tmp_path, "  HF_TOKEN: ${HF_TOKEN}\n")
    (old,) = load_folder(folder, model_roots=[folder], environ={"HF_TOKEN": "one"})
    (new,) = load_folder(folder, model_roots=[folder], environ={"HF_TOKEN": "two"})
    assert build_spec(old, 0).spec_hash() != build_spec(new, 0).spec_hash()  # a rolling update
