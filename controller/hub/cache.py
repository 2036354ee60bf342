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

Where a pulled file lies depends on the commit the Hub named at pull time, which a Kubernetes
rendering cannot know: there a pod's initContainer (``modelctl pull --ref``) pulls the files beside
the weights and links each at a place that depends on its reference only (``HubRef.link``:
``<root>/modelctl/links/<key>[.gguf]``, a relative link into its snapshot), and the engine's flags
name that place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.errors import HubError
from controller.hub.select import Selection, split_info
from controller.manifests.engines import LLAMACPP
from controller.manifests.model import AdapterFile, LoadedModel, PulledFiles
from controller.manifests.rules import hub_reference

log = logging.getLogger(__name__)

HF_FOLDER = "huggingface/hub"  # huggingface_hub's cache_dir under the root (vLLM's HF_HOME/hub)
RECORDS = "modelctl/pulls"
LINKS = "modelctl/links"  # a pulled file at a place its reference alone names (``HubRef.link``)
RECORD_LIMIT = 1 << 20  # bytes: a record lists a few hundred files at most


def default_root() -> Path:
    """Where a controller run on the host keeps the cache: ~/.cache/modelctl/hub."""
    return Path(os.path.expanduser("~/.cache/modelctl/hub"))


WEIGHTS = "weights"
# What a reference names, by its role in the manifest: which files ``select`` picks for it.
KINDS = ("weights", "draft", "mmproj", "adapter")
ADAPTER_ROLE = "adapter:"  # an adapter's role: 'adapter:<name>'


def kind_of(role: str) -> str | None:
    """The kind of file a role names (``weights``, ``draft``, ``mmproj``, ``adapter:<name>``
    -> ``adapter``); None for a role we do not know."""
    if role.startswith(ADAPTER_ROLE):
        return "adapter" if len(role) > len(ADAPTER_ROLE) else None
    return role if role in KINDS and role != "adapter" else None


@dataclass(frozen=True, slots=True)
class HubRef:
    """A hub reference as a pull sees it: the repo, the quant tag (llama.cpp), the engine, and
    what it names (``kind``: the weights, a draft, a projector or an adapter)."""

    repo: str
    tag: str
    engine: str
    kind: str = WEIGHTS

    @classmethod
    def parse(cls, value: str, engine: str, kind: str = WEIGHTS) -> HubRef | None:
        ref = hub_reference(value)
        if ref is None:
            return None
        repo, _, tag = ref.partition(":")
        return cls(repo, tag, engine, kind)

    @classmethod
    def of(cls, model: LoadedModel) -> HubRef | None:
        """The model's hub weights, if its weights are a hub reference."""
        return cls.parse(model.manifest.model, model.manifest.resolved_engine)

    def __str__(self) -> str:
        return f"hf://{self.repo}{':' + self.tag if self.tag else ''}"

    @property
    def key(self) -> str:
        """The record's file name: readable, and unique per engine, reference and kind (the
        weights' keys are those of the records before kinds were known)."""
        kind = "" if self.kind == WEIGHTS else f"|{self.kind}"
        named = f"{self.engine}|{self.repo}|{self.tag.upper()}{kind}"
        digest = hashlib.sha256(named.encode()).hexdigest()[:12]
        return f"{self.repo.replace('/', '--')}-{digest}"

    @property
    def link(self) -> str:
        """Where ``HubCache.write_link`` links the pulled file, relative to the cache's root: a
        llama.cpp GGUF file (``.gguf``), or vLLM's snapshot folder."""
        return f"{LINKS}/{self.key}{'.gguf' if self.engine == LLAMACPP else ''}"


def hub_refs(model: LoadedModel) -> tuple[tuple[str, HubRef], ...]:
    """Every hub reference ``model``'s manifest names, by role: ``weights``, ``draft``,
    ``mmproj``, ``adapter:<name>`` (in the manifest's order)."""
    manifest, engine = model.manifest, model.manifest.resolved_engine
    named = [(WEIGHTS, manifest.model), ("draft", manifest.draft), ("mmproj", manifest.mmproj)]
    named += [(f"{ADAPTER_ROLE}{a.name}", a.path) for a in manifest.adapters]
    refs = []
    for role, value in named:
        kind = kind_of(role)
        ref = HubRef.parse(value, engine, kind) if value is not None and kind is not None else None
        if ref is not None:
            refs.append((role, ref))
    return tuple(refs)


def describe(refs: tuple[tuple[str, HubRef], ...]) -> str:
    """'hf://a/b:Q4_K_M' for the weights alone, else each with its role: 'hf://a/b (draft), ...'."""
    if len(refs) == 1 and refs[0][0] == WEIGHTS:
        return str(refs[0][1])
    return ", ".join(str(ref) if role == WEIGHTS else f"{ref} ({role})" for role, ref in refs)


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

    def find(self, ref: HubRef) -> tuple[str, str | None] | None:
        """Where ``ref``'s pulled files are, relative to the root: (what the engine opens, the
        projector pulled with llama.cpp weights), when every file is in the cache; None otherwise.
        What the engine opens is llama.cpp's GGUF (shard 1) or vLLM's snapshot folder. No network."""
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
        path = snapshot / primary if ref.engine == LLAMACPP else snapshot
        extra = self.relative(snapshot / mmproj) if isinstance(mmproj, str) and mmproj in files else None
        return self.relative(path), (extra if ref.kind == WEIGHTS else None)

    def write_link(self, ref: HubRef) -> Path:
        """Link ``ref``'s pulled file (llama.cpp) or snapshot folder (vLLM) at ``ref.link``, replacing
        an older link at once (a reader sees the old target or the new, never none). Returns the
        link. Raises HubError when the files are not all in the cache, or when the file is one
        shard of a split GGUF (llama.cpp finds shards 2..N by shard 1's own name, which one link
        cannot keep)."""
        found = self.find(ref)
        if found is None:
            raise HubError(f"{ref}: not in the hub cache at {self.root}: nothing to link")
        target = self.root / found[0]
        if ref.engine == LLAMACPP and split_info(target.name)[3] > 1:
            raise HubError(
                f"{ref}: {target.name} is one shard of a split GGUF, which cannot be linked as one "
                "file: give it under the model root instead"
            )
        link = self.root / ref.link
        link.parent.mkdir(parents=True, exist_ok=True)
        fresh = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(os.path.relpath(target, link.parent))
        fresh.replace(link)
        return link

    def lookup(self, ref: HubRef) -> PulledFiles | None:
        """The pulled files of the hub weights ``ref`` when every one is in the cache; else None."""
        found = self.find(ref)
        if found is None:
            return None
        source, volume = self.mount
        return PulledFiles(source=source, volume=volume, path=found[0], mmproj=found[1])

    def lookup_model(self, model: LoadedModel) -> PulledFiles | None:
        """Every hub file ``model`` names, when all are in the cache (a replica starts only then);
        None otherwise, or when it names none. A few ``stat`` calls, no network."""
        refs = hub_refs(model)
        if not refs:
            return None
        path, mmproj, beside = "", None, []
        for role, ref in refs:
            found = self.find(ref)
            if found is None:
                return None
            if role == WEIGHTS:
                path, mmproj = found
            else:
                beside.append((role, found[0]))
        source, volume = self.mount
        return PulledFiles(source, volume, path, mmproj, tuple(beside))

    def resolve(self, models: list[LoadedModel]) -> list[LoadedModel]:
        """``models``, each whose hub files are all cached with ``pulled`` set (and those beside
        its weights in ``files``, where the estimate reads them)."""
        out = []
        for model in models:
            pulled = self.lookup_model(model)
            out.append(model if pulled is None else self.with_pulled(model, pulled))
        return out

    def with_pulled(self, model: LoadedModel, pulled: PulledFiles) -> LoadedModel:
        """``model`` with ``pulled``, and its hub files beside the weights in ``files`` at their
        place in the cache as the controller sees it (the loader left them out: not under a root)."""
        files = model.files
        draft, mmproj = pulled.of("draft"), pulled.of("mmproj")
        adapters = {a.name: a for a in files.adapters}
        for adapter in model.manifest.adapters:
            found = pulled.of(f"adapter:{adapter.name}")
            if found is not None:
                adapters[adapter.name] = AdapterFile(adapter.name, self.root / found)
        files = replace(
            files,
            draft=self.root / draft if draft is not None else files.draft,
            mmproj=self.root / mmproj if mmproj is not None else files.mmproj,
            adapters=tuple(adapters[a.name] for a in model.manifest.adapters if a.name in adapters),
        )
        return replace(model, pulled=pulled, files=files, pulled_root=self.root)


def safe(path: str) -> bool:
    """A repo-relative path that stays inside the snapshot (a record is a file on disk: trust it
    no more than the Hub's listing)."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "" not in parts
