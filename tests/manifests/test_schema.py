"""The committed JSON Schema matches the models, and the example manifests satisfy it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from controller.manifests.schema import manifest_schema, render

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "schema" / "manifest.schema.json"
EXAMPLES = sorted([*(REPO / "models").glob("*.yaml"), *(REPO / "examples").glob("*.*")])


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == render(), (
        "schema/manifest.schema.json is stale: "
        "python -m controller.manifests.schema > schema/manifest.schema.json"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_satisfy_the_schema(example: Path) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for document in yaml.safe_load_all(example.read_text()):
        validator.validate(document)


def test_the_schema_rejects_what_the_models_reject() -> None:
    validator = jsonschema.Draft202012Validator(manifest_schema())
    assert not validator.is_valid({"model": "a.gguf", "privileged": True})
    assert not validator.is_valid({"model": "a.gguf", "name": "Bad Name"})
    assert validator.is_valid(
        {"model": "path/to/model.safetensors", "engine": "vllm", "num_gpus": 2, "max_batch_size": 16}
    )
