"""The rendered folders of the examples, byte for byte, and what a manifest change changes.

Regenerate after an intended change with ``MODELCTL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/kubernetes/test_golden.py`` and review the diff of tests/kubernetes/golden/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from controller.kubernetes.options import RenderOptions
from controller.kubernetes.render import render, write

from .support import FIXTURES, GGUF, REPO, model_root

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    # name: (manifests, options, uses the local model root)
    "seed": (REPO / "examples" / "seed.json", RenderOptions(), False),
    "vllm-gpu": (REPO / "examples" / "qwen-vllm-gpu.yaml", RenderOptions(inference_pool=True), False),
    "llamacpp-cpu": (REPO / "models" / "smollm2.yaml", RenderOptions(namespace="llm"), True),
    "hub-files": (FIXTURES / "hub-files.yaml", RenderOptions(), False),
}


def rendered(case: str) -> dict[str, str]:
    path, options, local = CASES[case]
    root = model_root() if local else None
    if root is not None and not (root / GGUF).is_file():
        pytest.fail(f"{root / GGUF} is missing; run `make example-model`")
    return render(path, options, model_root=root).files


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_folder(case: str) -> None:
    files = rendered(case)
    folder = GOLDEN / case
    if os.environ.get("MODELCTL_UPDATE_GOLDEN"):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    on_disk = {p.name: p.read_text() for p in sorted(folder.iterdir())}
    assert sorted(on_disk) == sorted(files), "regenerate: MODELCTL_UPDATE_GOLDEN=1 (see the docstring)"
    for name, text in files.items():
        assert on_disk[name] == text, f"{case}/{name} differs; regenerate if intended"


def test_rendering_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first = render(REPO / "examples", RenderOptions(inference_pool=True))
    assert render(REPO / "examples", RenderOptions(inference_pool=True)) == first
    out = tmp_path / "out"
    assert write(first, out)[0] == sorted(first.files)
    assert write(first, out) == ([], [])  # nothing to write the second time


def test_a_manifest_change_changes_only_what_it_touches(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(REPO / "examples", models)
    out = tmp_path / "out"
    write(render(models, RenderOptions()), out)
    lazy = models / "smollm2-on-demand.yaml"
    lazy.write_text(lazy.read_text().replace("context_length: 2048", "context_length: 1024"))
    written, removed = write(render(models, RenderOptions()), out)
    assert (written, removed) == (["deployment-smollm2-lazy.yaml"], [])
    lazy.write_text(lazy.read_text().replace("max_batch_size: 2", "max_batch_size: 3"))
    written, _ = write(render(models, RenderOptions()), out)
    # max_concurrency is the gateway's too; the Service's labels carry it.
    assert written == [
        "configmap-modelctl-gateway-models.yaml",
        "deployment-smollm2-lazy.yaml",
        "service-smollm2-lazy.yaml",
    ]
    (models / "seed.json").unlink()
    written, removed = write(render(models, RenderOptions()), out)
    assert removed == ["deployment-model.yaml", "service-model.yaml"]
    assert written == ["configmap-modelctl-gateway-models.yaml", "kustomization.yaml"]
    (out / "mine.yaml").write_text("kind: Keep\n")  # not rendered by us: never removed
    assert write(render(models, RenderOptions()), out) == ([], [])
