"""The JSON Schema of a manifest document, generated from the pydantic model, for editors.

The committed copy lives in schema/manifest.schema.json (a test fails when it is stale). Regenerate
with ``python -m controller.manifests.schema > schema/manifest.schema.json``. In an editor with the YAML
language server, put ``# yaml-language-server: $schema=../schema/manifest.schema.json`` on top.
"""

from __future__ import annotations

import json
from typing import Any

from controller.manifests.document import ModelManifest

SCHEMA_ID = "https://modelctl.dev/schema/manifest.schema.json"


def manifest_schema() -> dict[str, Any]:
    """The schema of one manifest document."""
    schema = ModelManifest.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def render() -> str:
    return json.dumps(manifest_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
