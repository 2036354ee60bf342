"""The files a replica loads beside its weights (a vision projector, a draft model, LoRA adapters),
mounted read-only at fixed places inside the container, so that each engine's flags can name them:

    /models/<model>/mmproj/<file name>          llama.cpp's projector (--mmproj)
    /models/<model>/draft/<file or folder name>  the draft (a GGUF and its shards; a vLLM folder)
    /models/<model>/adapters/<adapter>.gguf      a llama.cpp adapter (--lora-scaled)
    /models/<model>/adapters/<adapter>           a vLLM PEFT folder (--lora-modules)

Adapter and model names follow the manifest's name pattern (no ',' and no ':'), so these paths are
safe in llama.cpp's `--lora-scaled FILE:SCALE,...`, which splits on both. The host paths are the
loader's (``LoadedModel.files``), each resolved under the model roots; a spec never mounts a file
that was not checked, and never leaves out one the manifest names.

A file named as a hub reference (``hf://``) is not bind-mounted: the controller pulled it into the
hub cache (``LoadedModel.pulled``), which the replica mounts read-only at /cache (once, shared with
hub weights), and the flag names its place there (``/cache/huggingface/hub/models--org--repo/
snapshots/<commit>/...``; a llama.cpp adapter file whose name holds ',' or ':' is refused when it
is pulled). Until it is pulled the spec names ``/cache/not-pulled/<role>``, and is not created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.engines.common import HUB_CACHE_DIR, MODELS_DIR, pulled_source, split_mounts
from controller.errors import EngineError
from controller.manifests.model import LoadedModel
from controller.manifests.rules import hub_reference
from controller.runtime.spec import Mount

MMPROJ_DIR = "mmproj"
DRAFT_DIR = "draft"
ADAPTERS_DIR = "adapters"
# Where a spec names a hub file not pulled yet: such a spec is never created (the reconciler holds
# the start until the pull: ``reconcile.pulls``), and its path changes to the cache's once pulled.
NOT_PULLED = "not-pulled"


@dataclass(frozen=True, slots=True)
class Placed:
    """Where the files beside the weights appear inside the container, and their mounts."""

    mounts: tuple[Mount, ...] = ()
    mmproj: str | None = None
    draft: str | None = None
    adapters: tuple[tuple[str, str], ...] = ()  # (name, path inside), in the manifest's order


NO_FILES = Placed()


def place_files(model: LoadedModel, *, folders: bool, mmproj: bool = True) -> Placed:
    """Mounts and in-container paths of ``model``'s projector (when the engine takes one:
    ``mmproj``), draft and adapters. ``folders``: the engine loads a draft or an adapter as a folder
    (vLLM: a model folder, a PEFT folder; the manifest refuses files there), mounted whole; else they
    are GGUF files (a split draft's shards mounted beside it). Raises EngineError when a file is
    named but was not checked against the model roots (``check_files``)."""
    check_files(model, mmproj=mmproj)
    files, hub = model.files, dict(hub_fields(model))
    base = f"{MODELS_DIR}/{model.name}"
    mounts: list[Mount] = []
    placed_mmproj = placed_draft = None
    if mmproj and "mmproj" in hub:
        placed_mmproj = _in_cache(model, "mmproj")
    elif mmproj and files.mmproj is not None:
        placed_mmproj = _bind(files.mmproj, f"{base}/{MMPROJ_DIR}/{files.mmproj.name}", mounts)
    if "draft" in hub:
        placed_draft = _in_cache(model, "draft")
    elif files.draft is not None:
        placed_draft = _bind(files.draft, f"{base}/{DRAFT_DIR}/{files.draft.name}", mounts)
        if not folders:
            mounts += split_mounts(files.draft, f"{base}/{DRAFT_DIR}")
    local = {a.name: a.path for a in files.adapters}
    adapters = []
    for adapter in model.manifest.adapters:
        role = f"adapter:{adapter.name}"
        if role in hub:
            adapters.append((adapter.name, _in_cache(model, role)))
        else:
            target = f"{base}/{ADAPTERS_DIR}/{adapter.name}" + ("" if folders else ".gguf")
            adapters.append((adapter.name, _bind(local[adapter.name], target, mounts)))
    if hub and model.pulled is not None and model.hub is None:
        mounts.append(pulled_source(model.pulled).mount)  # hub weights mount the cache themselves
    return Placed(tuple(mounts), placed_mmproj, placed_draft, tuple(adapters))


def _in_cache(model: LoadedModel, role: str) -> str:
    """The in-container path of the hub file for ``role``: its place in the cache once pulled;
    before that a path that is never opened (``NOT_PULLED``)."""
    found = model.pulled.of(role) if model.pulled is not None else None
    if found is None:
        return f"{HUB_CACHE_DIR}/{NOT_PULLED}/{role.replace(':', '-')}"
    return f"{HUB_CACHE_DIR}/{found}"


def _bind(host: Path, target: str, mounts: list[Mount]) -> str:
    mounts.append(Mount(source=str(host), target=target, read_only=True))
    return target


def check_files(model: LoadedModel, *, mmproj: bool = True) -> None:
    """Raise EngineError unless every file the manifest names beside the weights was resolved by the
    loader (``model.files``; a hub reference's is pulled instead) and the weights themselves were
    checked: as for the weights (``common.weights_source``), a spec never mounts an unchecked path,
    and it never silently leaves out a file the manifest asks for."""
    manifest, files = model.manifest, model.files
    named = bool(files.mmproj or files.draft or files.adapters)
    if named and model.weights is None and model.hub is None:
        raise EngineError(f"model {model.name}: weights were not checked against the model roots")
    hub = dict(hub_fields(model))
    missing = [
        field
        for field, asked, found in (
            ("mmproj", manifest.mmproj if mmproj else None, files.mmproj),
            ("draft", manifest.draft, files.draft),
        )
        if asked is not None and found is None and field not in hub
    ]
    local = {a.name for a in files.adapters}
    if any(a.name not in local for a in manifest.adapters if f"adapter:{a.name}" not in hub):
        missing.append("adapters")
    if missing:
        raise EngineError(
            f"model {model.name}: {', '.join(missing)} not checked against the model roots "
            "(only files under a model root are served beside the weights)"
        )


def hub_fields(model: LoadedModel) -> list[tuple[str, str]]:
    """(role, reference) of each file beside the weights the manifest names as a hub reference."""
    manifest = model.manifest
    named = [("draft", manifest.draft), ("mmproj", manifest.mmproj)]
    named += [(f"adapter:{a.name}", a.path) for a in manifest.adapters]
    return [(role, value) for role, value in named if value is not None and hub_reference(value) is not None]
