"""The files beside the weights on a cluster: every mount of the engine's spec becomes a read-only
volume mount of the pod (a subPath of the models claim, or a hostPath volume of its own), volume
names stay unique, and the container runs the engine's own flags for them."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from controller.kubernetes.engine import container_spec, model_objects
from controller.kubernetes.options import RenderOptions
from controller.kubernetes.render import Rendering
from controller.manifests.document import ModelManifest
from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel

from .support import GGUF, REPO, by_kind, model_root, render_dir, validate

ADAPTERS = {"lora-a": "smollm2-lora-a.gguf", "lora-b": "smollm2-lora-b.gguf"}
MANIFEST = {
    "name": "smol",
    "model": GGUF,
    "draft": GGUF,
    "adapters": [{"name": name, "path": path} for name, path in ADAPTERS.items()],
}


def smol_with_adapters(root: Path) -> LoadedModel:
    for name in (GGUF, *ADAPTERS.values()):
        if not (root / name).is_file():
            pytest.fail(f"{root / name} is missing; run `make model shapes`")
    files = ExtraFiles(
        draft=root / GGUF, adapters=tuple(AdapterFile(n, root / p) for n, p in ADAPTERS.items())
    )
    return LoadedModel(ModelManifest.model_validate(MANIFEST), "m.yaml", 1, root / GGUF, files=files)


def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    validate(deployment)
    return dict(deployment["spec"]["template"]["spec"])


def test_each_file_is_a_subpath_of_the_models_claim() -> None:
    root = model_root().resolve()
    model = smol_with_adapters(root)
    spec = container_spec(model, RenderOptions())
    spec_pod = pod(model_objects(model, PurePosixPath(root), RenderOptions()))
    (container,) = spec_pod["containers"]
    assert container["args"] == list(spec.command)
    assert (
        container["args"][container["args"].index("--lora-scaled") + 1]
        == "/models/smol/adapters/lora-a.gguf:0"
    )
    assert container["volumeMounts"] == [
        {"name": "weights", "mountPath": "/models/smol/" + GGUF, "readOnly": True, "subPath": GGUF},
        {"name": "weights", "mountPath": "/models/smol/draft/" + GGUF, "readOnly": True, "subPath": GGUF},
        *(
            {
                "name": "weights",
                "mountPath": f"/models/smol/adapters/{n}.gguf",
                "readOnly": True,
                "subPath": p,
            }
            for n, p in ADAPTERS.items()
        ),
    ]
    assert [v["name"] for v in spec_pod["volumes"]] == ["weights"]


def test_on_host_paths_each_file_is_a_volume_of_its_own() -> None:
    root = model_root().resolve()
    model = smol_with_adapters(root)
    options = RenderOptions(host_model_root="/srv/models")
    spec_pod = pod(model_objects(model, PurePosixPath(root), options))
    volumes = {v["name"]: v["hostPath"] for v in spec_pod["volumes"]}
    assert len(volumes) == len(spec_pod["volumes"]) == 4  # names unique: the API server requires it
    mounts = {m["mountPath"]: volumes[m["name"]]["path"] for m in spec_pod["containers"][0]["volumeMounts"]}
    assert mounts == {
        "/models/smol/" + GGUF: "/srv/models/" + GGUF,
        "/models/smol/draft/" + GGUF: "/srv/models/" + GGUF,
        **{f"/models/smol/adapters/{n}.gguf": f"/srv/models/{p}" for n, p in ADAPTERS.items()},
    }
    assert {v["type"] for v in volumes.values()} == {"File"}


def test_without_a_local_model_root_the_files_are_the_manifest_s_paths_on_the_cluster(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    lines = [f"name: smol\nmodel: {GGUF}\ndraft: {GGUF}\nadapters:"]
    lines += [f"  - {{name: {n}, path: loras/{p}}}" for n, p in ADAPTERS.items()]
    (folder / "m.yaml").write_text("\n".join(lines) + "\n")
    (deployment,) = [d for d in by_kind(render_dir(folder), "Deployment") if d["metadata"]["name"] == "smol"]
    validate(deployment)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert [(m["mountPath"], m["subPath"]) for m in container["volumeMounts"]] == [
        ("/models/smol/" + GGUF, GGUF),
        ("/models/smol/draft/" + GGUF, GGUF),
        *((f"/models/smol/adapters/{n}.gguf", f"loras/{p}") for n, p in ADAPTERS.items()),
    ]
    assert "-md" in container["args"] and container["args"].count("--lora-scaled") == 2


def test_vllm_adapters_get_their_rank_with_a_model_root_and_vllm_s_default_without(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.yaml").write_text((REPO / "examples" / "smollm2-lora-vllm.yaml").read_text())

    def args(rendering: Rendering) -> list[str]:
        (deployment,) = [d for d in by_kind(rendering, "Deployment") if "smollm2" in d["metadata"]["name"]]
        return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    without = render_dir(folder)
    assert "--max-lora-rank" not in args(without) and "--enable-lora" in args(without)
    assert any("vLLM's default --max-lora-rank (16)" in note for note in without.notes)
    with_root = render_dir(folder, model_root=model_root())
    assert args(with_root)[args(with_root).index("--max-lora-rank") + 1] == "8"  # r=8 (make shapes)
    assert not any("--max-lora-rank" in note for note in with_root.notes)


def test_the_gateway_s_models_file_names_the_adapters_so_the_dns_table_routes_them() -> None:
    import json

    from controller.gateway.tables.dns import parse_models
    from controller.kubernetes.gateway import models_document

    document = json.loads(models_document([smol_with_adapters(model_root())], RenderOptions()))
    (entry,) = document["models"]
    assert (entry["engine"], entry["adapters"], entry["vision"]) == ("llamacpp", ["lora-a", "lora-b"], False)
    (model,) = parse_models(document)
    assert model.endpoints.adapters == ("lora-a", "lora-b")
