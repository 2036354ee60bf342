"""Manifests to a folder of Kubernetes YAML: one file per object plus a kustomization.yaml.

Deterministic: objects are built in a fixed key order, files are named ``<kind>-<name>.yaml`` and
written only when their bytes change, so rendering twice gives the same bytes and a manifest change
changes only the files of the objects it touches (and the gateway's models ConfigMap when names,
balancing or capacity change). Files a previous rendering wrote that no object needs any more are
removed; nothing else in the folder is touched.

Weights: with ``model_root`` (a local copy of the model root) they are checked and sized as on
Docker; without it a relative path stands for the same path under the cluster's model root, and a
CPU replica's memory request is only the engine's overhead (notes say so). Files beside the weights
named as hub references are pulled by the pod itself (``hubfiles``: an initContainer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from controller.errors import ModelctlError
from controller.kubernetes.engine import cache_claim, model_objects
from controller.kubernetes.gateway import gateway_objects
from controller.kubernetes.hubfiles import has_hub_files, linked
from controller.kubernetes.notes import model_notes
from controller.kubernetes.options import RenderOptions
from controller.manifests.envrefs import ANY_NAME
from controller.manifests.loader import load_folder
from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel
from controller.manifests.rules import hub_reference
from controller.weights.compat import check_files
from controller.weights.task import detect_task

HEADER = "# Rendered by `modelctl render kubernetes`"
KUSTOMIZATION = "kustomization.yaml"
# Stands for the cluster's model root (the models claim, or --host-model-root) when no local copy
# of the model root is given.
CLUSTER_ROOT = PurePosixPath("/model-root")


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors and aliases where objects share a dict (kubectl reads them, people
    and diffs do not)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    """Multi-line strings (the gateway's models.json) as literal blocks, as people write them."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


class _AnyVariable(Mapping[str, str]):
    """An environment in which every ``${NAME}`` is set: rendering keeps references, never values."""

    def __getitem__(self, key: str) -> str:
        return ""

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Rendering:
    files: dict[str, str]  # file name -> YAML text, in name order
    notes: tuple[str, ...]


def load_models(path: Path, model_root: Path | None) -> list[tuple[LoadedModel, PurePosixPath | None]]:
    """The manifests under ``path`` with their ``env`` as written (references kept) and their
    weights' root. Raises InvalidManifests (every problem, located) or ModelctlError."""
    roots = [model_root.absolute()] if model_root else None
    loaded: list[tuple[LoadedModel, PurePosixPath | None]] = []
    found = load_folder(
        path,
        model_roots=roots,
        environ=_AnyVariable(),
        env_allow=ANY_NAME,
        check_files=check_files,
        detect_task=detect_task,
    )
    for model in found:
        model = linked(dataclasses.replace(model, filled_env=None))  # hub files: the pod pulls them
        local = not model.hub or beside_weights(model)  # files that lie under the model root
        if not local:
            loaded.append((model, None))
        elif model_root is not None:
            loaded.append((model, PurePosixPath(model_root.resolve())))
        else:
            loaded.append((cluster_weights(model), CLUSTER_ROOT))
    return loaded


def beside_weights(model: LoadedModel) -> bool:
    """Whether the manifest names a file beside the weights under the model root (not hf://)."""
    manifest = model.manifest
    named = [manifest.mmproj, manifest.draft, *(a.path for a in manifest.adapters)]
    return any(path is not None and hub_reference(path) is None for path in named)


def local_path(path: str | None) -> str | None:
    """``path`` when it lies under the model root; None when absent or a hub reference."""
    return path if path is not None and hub_reference(path) is None else None


def cluster_weights(model: LoadedModel) -> LoadedModel:
    """``model`` with its weights (unless from the hub) and the files beside them under
    CLUSTER_ROOT. The engine code mounts a safetensors file's folder for vLLM when the file exists;
    without the file here, the folder is given directly. vLLM adapters' ranks cannot be read here
    (the notes say what that means)."""
    manifest = model.manifest
    vllm = manifest.resolved_engine == "vllm"
    weights = None if model.hub else cluster_path(model, manifest.model, folder=vllm)
    mmproj, draft = local_path(manifest.mmproj), local_path(manifest.draft)
    files = ExtraFiles(
        mmproj=cluster_path(model, mmproj) if mmproj else None,
        draft=cluster_path(model, draft) if draft else None,
        adapters=tuple(
            AdapterFile(a.name, cluster_path(model, a.path)) for a in manifest.adapters if local_path(a.path)
        ),
    )
    return dataclasses.replace(model, weights=weights, files=files)


def cluster_path(model: LoadedModel, path: str, *, folder: bool = False) -> Path:
    """``path`` (relative to the model root) under CLUSTER_ROOT; ``folder``: a .safetensors file
    stands for its folder (vLLM loads the folder)."""
    relative = PurePosixPath(path)
    if relative.is_absolute():
        raise ModelctlError(
            f"{model.file}: model {model.name}: an absolute path ({path}) needs --model-root (the local "
            "model root it lies under)"
        )
    found = CLUSTER_ROOT / relative
    if folder and relative.suffix.lower() == ".safetensors":
        found = found.parent
    return Path(found)


def render(path: Path, options: RenderOptions, *, model_root: Path | None = None) -> Rendering:
    """Every object for the manifests under ``path``, as files. Raises InvalidManifests, ModelctlError."""
    loaded = load_models(path, model_root)
    files: dict[str, str] = {}
    notes: list[str] = []
    for model, root in loaded:
        lines = model_notes(model, options)
        notes.extend(lines)
        for obj in model_objects(model, root, options):
            files[file_name(obj)] = dump(obj, source=Path(model.file).name, notes=lines)
    if any(model.hub or has_hub_files(model) for model, _ in loaded):
        files[file_name(cache_claim(options))] = dump(cache_claim(options), source=None, notes=[])
    for obj in gateway_objects([m for m, _ in loaded], options):
        files[file_name(obj)] = dump(obj, source=None, notes=[])
    files[KUSTOMIZATION] = kustomization(sorted(files), options)
    return Rendering(dict(sorted(files.items())), tuple(notes))


def file_name(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def dump(obj: dict[str, Any], *, source: str | None, notes: list[str]) -> str:
    """One object as YAML, keys in the order built, under a header naming its manifest and notes."""
    lines = [HEADER + (f" from {source}" if source else "") + "; edit the manifest, not this file."]
    lines += [f"# note: {note}" for note in notes if obj["kind"] == "Deployment"]
    body = yaml.dump(
        obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )
    return "\n".join(lines) + "\n" + body


def kustomization(resources: list[str], options: RenderOptions) -> str:
    doc: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if options.namespace:
        doc["namespace"] = options.namespace
    doc["resources"] = resources
    return HEADER + "; `kubectl apply -k` this folder.\n" + yaml.safe_dump(doc, sort_keys=False)


def stream(rendering: Rendering) -> str:
    """All objects as one multi-document YAML stream (no kustomization), for stdout."""
    docs = [text for name, text in rendering.files.items() if name != KUSTOMIZATION]
    return "---\n".join(docs)


def write(rendering: Rendering, folder: Path) -> tuple[list[str], list[str]]:
    """Write ``rendering`` into ``folder``: only files whose bytes change; remove files an earlier
    rendering wrote (they start with HEADER) that are no longer rendered. Returns (written, removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    written, removed = [], []
    for name, text in rendering.files.items():
        target = folder / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(name)
    for old in sorted(folder.glob("*.yaml")):
        if old.name not in rendering.files and old.read_text(encoding="utf-8").startswith(HEADER):
            old.unlink()
            removed.append(old.name)
    return written, removed
