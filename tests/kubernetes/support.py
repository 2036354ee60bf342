"""What the Kubernetes tests share: the repo's paths, rendering into plain objects, validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from controller.kubernetes.options import RenderOptions
from controller.kubernetes.render import KUSTOMIZATION, Rendering, render

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The newest Kubernetes release whose schemas kubernetes-validate ships (1.37 in 1.37.0).
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()


def model_root() -> Path:
    return Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")).absolute()


def objects(rendering: Rendering) -> list[dict[str, Any]]:
    """Every rendered object (the kustomization aside)."""
    return [yaml.safe_load(text) for name, text in rendering.files.items() if name != KUSTOMIZATION]


def by_kind(rendering: Rendering, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects(rendering) if o["kind"] == kind]


def render_dir(path: Path, **options: Any) -> Rendering:
    root = options.pop("model_root", None)
    return render(path, RenderOptions(**options), model_root=root)


def inference_pool_schema() -> dict[str, Any]:
    """The v1 schema of the InferencePool CRD vendored from the Gateway API Inference Extension."""
    crd = yaml.safe_load((FIXTURES / "inference.networking.k8s.io_inferencepools.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return dict(version["schema"]["openAPIV3Schema"])


def unknown_fields(obj: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Fields of ``obj`` the schema does not declare (what the API server would prune): strict mode
    for a CRD, as kubernetes-validate --strict is for the built-in kinds."""
    found: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += unknown_fields(value, schema["properties"][key], f"{where}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{where}[{i}]")
    return found


def validate(obj: dict[str, Any]) -> None:
    """Raise unless ``obj`` is valid: built-in kinds against Kubernetes' OpenAPI schemas in strict
    mode, InferencePool against its CRD (also strict)."""
    if obj["kind"] == "InferencePool":
        schema = inference_pool_schema()
        jsonschema.validate(obj, schema)
        assert unknown_fields(obj, schema) == [], "fields the CRD does not declare"
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
