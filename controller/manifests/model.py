"""``LoadedModel``, the main domain type: a valid manifest, where it came from, and the host path of
its weights. Placement, the engines, the reconciler and the Kubernetes renderer all take it; the
loader (``loader``) makes it from a folder, apart from YAML so that its readers need not know YAML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from controller.manifests.document import ModelManifest
from controller.manifests.rules import hub_reference
from controller.manifests.values import Task


@dataclass(frozen=True, slots=True)
class AdapterFile:
    """A LoRA adapter's name and its resolved host path (a GGUF file, or a PEFT folder)."""

    name: str
    path: Path


@dataclass(frozen=True, slots=True)
class ExtraFiles:
    """The files a replica loads beside its weights, resolved under the model roots like them
    (shards of a split GGUF are found from the weights' own name: ``shards``); a hub reference's
    file is here once pulled, at its place in the hub cache as the controller sees it."""

    mmproj: Path | None = None  # llama.cpp's vision/audio projector
    draft: Path | None = None  # the draft model of speculative decoding
    adapters: tuple[AdapterFile, ...] = ()  # LoRA adapters, in the manifest's order


@dataclass(frozen=True, slots=True)
class PulledFiles:
    """Hub files the controller pulled into the hub cache (``controller.hub``): where the engine
    finds them. ``source`` is what the engine mounts at the cache's container path: a Docker
    volume name (``volume``) or a host folder; the paths are relative to it (POSIX). ``path``:
    hub weights' llama.cpp GGUF (shard 1, the others beside it) or vLLM snapshot folder ("" when
    the weights are not a hub reference); ``mmproj``: the projector pulled with them. ``beside``:
    the files beside the weights named as hub references, by role (``draft``, ``mmproj``,
    ``adapter:<name>``): a GGUF file (llama.cpp) or a snapshot folder (vLLM)."""

    source: str
    volume: bool
    path: str = ""
    mmproj: str | None = None
    beside: tuple[tuple[str, str], ...] = ()

    def of(self, role: str) -> str | None:
        """The cache-relative path of the hub file for ``role``, if one was pulled."""
        return dict(self.beside).get(role)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A valid manifest, where it came from, and the host path of its weights (if checked)."""

    manifest: ModelManifest
    file: str
    document: int | None  # its position in a file of several documents (from 1); None: the only one
    weights: Path | None  # resolved host path under a model root; None for hub references and
    # when no roots were given
    created: int = 0  # the manifest file's modification time (OpenAI's `created` in /v1/models)
    # ``env`` with its ${NAME} references filled in (envrefs.py); None: not filled (the manifest's
    # values as written). Secrets may be in it: kept out of repr.
    filled_env: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)
    files: ExtraFiles = ExtraFiles()  # resolved mmproj, draft and adapters (empty when not checked)
    # every hub file the manifest names, found in the hub cache (None: not all pulled yet); the
    # files beside the weights among them are in ``files`` too, as the controller sees them
    pulled: PulledFiles | None = None
    # where the controller reads the hub cache that ``pulled``'s paths are relative to (None: not
    # pulled, or pulled into a cache the controller cannot read)
    pulled_root: Path | None = None
    # What the weights say they are for (``controller.weights.task``, run by the loader when it is
    # handed the detection); None: they do not say, or were not read.
    detected_task: Task | None = None

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """The engine's extra environment, references filled in when the loader did so."""
        if self.filled_env is not None:
            return self.filled_env
        return tuple(self.manifest.env.items())

    @property
    def readable_weights(self) -> Path | None:
        """The weights where the controller can read them: resolved under a model root, or hub
        weights pulled into the cache (llama.cpp's shard 1, vLLM's snapshot folder); None before
        the pull. The estimate and the description read these."""
        if self.weights is not None:
            return self.weights
        if self.pulled is not None and self.pulled.path and self.pulled_root is not None:
            return self.pulled_root / self.pulled.path
        return None

    @property
    def readable_files(self) -> ExtraFiles:
        """``files``, with the projector pulled beside hub weights (what ``-hf`` would load) when the
        manifest names none: the estimate counts it."""
        pulled, root = self.pulled, self.pulled_root
        if self.files.mmproj is None and pulled is not None and pulled.mmproj and root is not None:
            return dataclasses.replace(self.files, mmproj=root / pulled.mmproj)
        return self.files

    @property
    def hub(self) -> str | None:
        """'org/repo[:quant]' when the engine downloads the weights itself."""
        return hub_reference(self.manifest.model)

    @property
    def name(self) -> str:
        return self.manifest.resolved_name

    @property
    def task(self) -> Task:
        """What the model is for: the manifest's ``task``, else what the weights say, else generate."""
        return self.manifest.task or self.detected_task or "generate"
