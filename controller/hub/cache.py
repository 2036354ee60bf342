"""The hub cache on disk, as the controller sees it and as the engines see it.

Files are kept in huggingface_hub's own layout under ``<root>/huggingface/hub`` (``models--org--repo/
blobs``, ``snapshots/<commit>/<file>`` as links to the blobs): the same place vLLM's ``HF_HOME=
/cache/huggingface`` reads, and a folder ``huggingface-cli`` knows. Each completed pull writes a
record (``<root>/modelctl/pulls/<key>.json``: the reference, the commit and the files it needs), so
"are this model's files here?" is a few ``stat`` calls and never a network call: a cached model is
served offline, and a cache carried to an air-gapped machine works as it did where it was filled.

The engines mount the same cache at ``HUB_CACHE_DIR`` (/cache): the controller's ``root`` is the
Docker volume ``modelctl-hub-cache`` in compose (``source`` names it), or a host folder that is
bind-mounted as it is (a controller run on the host).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.hub.select import Selection
from controller.manifests.engines import LLAMACPP
from controller.manifests.model import LoadedModel, PulledFiles
from controller.manifests.rules import hub_reference

log = logging.getLogger(__name__)

HF_FOLDER = "huggingface/hub"  # huggingface_hub's cache_dir under the root (vLLM's HF_HOME/hub)
RECORDS = "modelctl/pulls"
RECORD_LIMIT = 1 << 20  # bytes: a record lists a few hundred files at most


def default_root() -> Path:
    """Where a controller run on the host keeps the cache: ~/.cache/modelctl/hub."""
    return Path(os.path.expanduser("~/.cache/modelctl/hub"))


@dataclass(frozen=True, slots=True)
class HubRef:
    """A model's hub weights as a pull sees them: the repo, the quant tag (llama.cpp), the engine."""

    repo: str
    tag: str
    engine: str

    @classmethod
    def of(cls, model: LoadedModel) -> HubRef | None:
        ref = hub_reference(model.manifest.model)
        if ref is None:
            return None
        repo, _, tag = ref.partition(":")
        return cls(repo, tag, model.manifest.resolved_engine)

    def __str__(self) -> str:
        return f"hf://{self.repo}{':' + self.tag if self.tag else ''}"

    @property
    def key(self) -> str:
        """The record's file name: readable, and unique per engine and reference."""
        digest = hashlib.sha256(f"{self.engine}|{self.repo}|{self.tag.upper()}".encode()).hexdigest()[:12]
        return f"{self.repo.replace('/', '--')}-{digest}"


@dataclass(frozen=True, slots=True)
class HubCache:
    """The cache's root as the controller sees it, and what the engines mount for it."""

    root: Path
    source: str = ""  # a Docker volume name, or "" to bind-mount ``root`` itself
    revision: str = "main"

    @property
    def hf_dir(self) -> Path:
        return self.root / HF_FOLDER

    @property
    def mount(self) -> tuple[str, bool]:
        """(source, is a volume) for the engines' mount of the cache."""
        return (self.source, True) if self.source else (str(self.root.resolve()), False)

    def record_path(self, ref: HubRef) -> Path:
        return self.root / RECORDS / f"{ref.key}.json"

    def snapshot(self, repo: str, commit: str) -> Path:
        return self.hf_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / commit

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def write_record(self, ref: HubRef, commit: str, selection: Selection) -> None:
        """Note a completed pull (written whole, then renamed: a reader never sees half of it)."""
        record = {
            "reference": str(ref),
            "engine": ref.engine,
            "commit": commit,
            "files": [f.path for f in selection.files],
            "primary": selection.primary,
            "mmproj": selection.mmproj,
            "bytes": selection.total,
        }
        path = self.record_path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(record, indent=1))
        partial.replace(path)

    def read_record(self, ref: HubRef) -> dict[str, Any] | None:
        path = self.record_path(ref)
        try:
            with path.open("rb") as f:
                data = json.loads(f.read(RECORD_LIMIT))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("hub cache: unreadable pull record %s (pulling again): %s", path, exc)
            return None
        return data if isinstance(data, dict) else None

    def lookup(self, ref: HubRef) -> PulledFiles | None:
        """The pulled files of ``ref`` when every one is in the cache; None otherwise. No network."""
        record = self.read_record(ref)
        if record is None or not isinstance(record.get("commit"), str):
            return None
        snapshot = self.snapshot(ref.repo, record["commit"])
        files = [str(f) for f in record.get("files") or [] if isinstance(f, str)]
        if not files or not all(safe(f) and (snapshot / f).is_file() for f in files):
            return None
        primary, mmproj = record.get("primary") or "", record.get("mmproj")
        if ref.engine == LLAMACPP and not (isinstance(primary, str) and primary in files):
            return None
        source, volume = self.mount
        path = snapshot / primary if ref.engine == LLAMACPP else snapshot
        extra = self.relative(snapshot / mmproj) if isinstance(mmproj, str) and mmproj in files else None
        return PulledFiles(source=source, volume=volume, path=self.relative(path), mmproj=extra)

    def resolve(self, models: list[LoadedModel]) -> list[LoadedModel]:
        """``models``, each hub model whose files are all cached with ``pulled`` set."""
        out = []
        for model in models:
            ref = HubRef.of(model)
            pulled = self.lookup(ref) if ref is not None else None
            out.append(model if pulled is None else _with_pulled(model, pulled))
        return out


def safe(path: str) -> bool:
    """A repo-relative path that stays inside the snapshot (a record is a file on disk: trust it
    no more than the Hub's listing)."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "" not in parts


def _with_pulled(model: LoadedModel, pulled: PulledFiles) -> LoadedModel:
    return replace(model, pulled=pulled)
