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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.engines.common import MODELS_DIR, split_mounts
from controller.errors import EngineError
from controller.manifests.model import LoadedModel
from controller.runtime.spec import Mount

MMPROJ_DIR = "mmproj"
DRAFT_DIR = "draft"
ADAPTERS_DIR = "adapters"


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
    files = model.files
    base = f"{MODELS_DIR}/{model.name}"
    mounts: list[Mount] = []
    placed_mmproj = placed_draft = None
    if mmproj and files.mmproj is not None:
        placed_mmproj = _bind(files.mmproj, f"{base}/{MMPROJ_DIR}/{files.mmproj.name}", mounts)
    if files.draft is not None:
        placed_draft = _bind(files.draft, f"{base}/{DRAFT_DIR}/{files.draft.name}", mounts)
        if not folders:
            mounts += split_mounts(files.draft, f"{base}/{DRAFT_DIR}")
    adapters = []
    for adapter in files.adapters:
        target = f"{base}/{ADAPTERS_DIR}/{adapter.name}" + ("" if folders else ".gguf")
        adapters.append((adapter.name, _bind(adapter.path, target, mounts)))
    return Placed(tuple(mounts), placed_mmproj, placed_draft, tuple(adapters))


def _bind(host: Path, target: str, mounts: list[Mount]) -> str:
    mounts.append(Mount(source=str(host), target=target, read_only=True))
    return target


def check_files(model: LoadedModel, *, mmproj: bool = True) -> None:
    """Raise EngineError unless every file the manifest names beside the weights was resolved by the
    loader (``model.files``) and the weights themselves were checked: as for the weights
    (``common.weights_source``), a spec never mounts an unchecked path, and it never silently leaves
    out a file the manifest asks for."""
    manifest, files = model.manifest, model.files
    named = bool(files.mmproj or files.draft or files.adapters)
    if named and model.weights is None and model.hub is None:
        raise EngineError(f"model {model.name}: weights were not checked against the model roots")
    missing = [
        field
        for field, asked, found in (
            ("mmproj", manifest.mmproj if mmproj else None, files.mmproj),
            ("draft", manifest.draft, files.draft),
        )
        if asked is not None and found is None
    ]
    if [a.name for a in manifest.adapters] != [a.name for a in files.adapters]:
        missing.append("adapters")
    if missing:
        raise EngineError(
            f"model {model.name}: {', '.join(missing)} not checked against the model roots "
            "(only files under a model root are served beside the weights)"
        )
