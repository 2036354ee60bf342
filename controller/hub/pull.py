"""Pulling hub files into the cache with huggingface_hub: plan, check the disk, download.

A model's pull covers every hub reference its manifest names (``hub_refs``: the weights, a draft,
a projector, adapters): each is planned, the room for all of them checked at once, then each is
downloaded and recorded; the model's replicas start when every one is in the cache.

``Puller.plan`` asks the Hub for the repo's listing with sizes (``/api/models/{repo}/revision/main``
with blobs), picks what the engine would fetch (``select``) and notes which of those files the cache
holds already; ``check_room`` refuses a pull whose missing bytes do not fit on the cache's disk;
``download`` fetches the missing files one by one at the listed commit with our own ``Downloader``
(``download.py``), then writes the cache's record. It does not use ``hf_hub_download``: 2.x
resumes a dropped connection only within one call and deletes its partial file when the call
fails, so every try (after a backoff, a restart, ``modelctl pull`` run again) started a cut file
from 0; ours keeps one partial per blob (``<blob>.incomplete``) and continues it with a Range
request on the next try. ``measure`` says how far a pull is by the sizes of the blobs on disk
(complete or partial), so progress needs no hook into the download.

The token is the manifest's: ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``) from the model's env, its
``${NAME}`` references filled in by the loader; never the controller's own, never logged. A model
whose files are all cached is not planned at all: no network call (``HubCache.lookup``).
Every failure is a ``HubError`` with one line saying what and where; the library's exception is
its cause.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from controller.errors import HubError
from controller.hub.cache import WEIGHTS, HubCache, HubRef, describe, hub_refs
from controller.hub.download import Downloader, Target, partial_path, reason
from controller.hub.select import (
    RepoFile,
    Selection,
    for_llamacpp,
    for_lora_gguf,
    for_mmproj,
    for_peft,
    for_vllm,
)
from controller.manifests.engines import LLAMACPP
from controller.manifests.model import LoadedModel, PulledFiles

log = logging.getLogger(__name__)

TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
DEFAULT_ENDPOINT = "https://huggingface.co"
MiB = 1 << 20
# Left free on the cache's disk after a pull: a full disk breaks more than the pull.
DISK_MARGIN = 256 * MiB
LISTING_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a pull is: bytes on disk of the bytes it needs."""

    done: int
    total: int

    @property
    def percent(self) -> int:
        return 100 if self.total <= 0 else min(100, self.done * 100 // self.total)

    def describe(self) -> str:
        """'pulling 42% (120.0 of 290.1 MiB)'."""
        return f"pulling {self.percent}% ({self.done / MiB:.1f} of {self.total / MiB:.1f} MiB)"


@dataclass(frozen=True, slots=True)
class PullPlan:
    ref: HubRef
    commit: str
    selection: Selection
    missing: tuple[RepoFile, ...]  # the selected files the cache does not hold yet

    @property
    def to_fetch(self) -> int:
        return sum(f.size for f in self.missing)


def hub_token(model: LoadedModel) -> str | None:
    """The manifest's Hub token, if its env names one."""
    env = dict(model.env)
    return next((env[name] for name in TOKEN_VARS if env.get(name)), None)


def disk_free(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class Puller:
    """Pulls into one ``HubCache``; ``endpoint`` None: HF_ENDPOINT (when set and not empty), else
    huggingface.co."""

    def __init__(
        self,
        cache: HubCache,
        *,
        endpoint: str | None = None,
        free_space: Callable[[Path], int] = disk_free,
    ) -> None:
        self.cache = cache
        self.endpoint = endpoint
        self.free_space = free_space

    def _endpoint(self) -> str:
        """The hub's URL: the one given, else HF_ENDPOINT (a mirror), else huggingface.co. Never
        empty: huggingface_hub takes an HF_ENDPOINT that is set but empty as its URL, and every
        download then fails on a URL without a host."""
        return self.endpoint or os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT

    def cached(self, model: LoadedModel) -> PulledFiles | None:
        return self.cache.lookup_model(model)

    def plan(self, ref: HubRef, token: str | None) -> PullPlan:
        """The files to fetch for ``ref`` at the Hub's current commit. Raises HubError."""
        from huggingface_hub import HfApi  # imported on use: the CLI's other commands need none of it

        api = HfApi(endpoint=self._endpoint())
        try:
            info = api.model_info(
                ref.repo, revision=self.cache.revision, files_metadata=True, token=token or False,
                timeout=LISTING_TIMEOUT_S,
            )  # fmt: skip
        except Exception as exc:  # the library's many (HTTP, network, OS, validation): one line
            raise HubError(f"{ref}: cannot list the repo: {reason(exc)}") from exc
        selection = select(ref, tuple(listed(info.siblings or ())))
        commit = str(info.sha or "")
        if not commit:
            raise HubError(f"{ref}: the Hub named no commit for revision {self.cache.revision}")
        snapshot = self.cache.snapshot(ref.repo, commit)
        missing = tuple(f for f in selection.files if not (snapshot / f.path).is_file())
        return PullPlan(ref, commit, selection, missing)

    def check_room(self, *plans: PullPlan) -> None:
        """Raise HubError when the missing bytes of ``plans`` (less what partial downloads hold)
        do not fit."""
        need = sum(p.to_fetch - self.partial_bytes(p) for p in plans) + DISK_MARGIN
        free = self.free_space(self.cache.root)
        if need > free:
            raise HubError(
                f"{', '.join(str(p.ref) for p in plans)}: not enough disk space in the hub cache "
                f"{self.cache.root}: "
                f"{(need - DISK_MARGIN) / MiB:.1f} MiB to fetch (+{DISK_MARGIN // MiB} MiB margin), "
                f"{free / MiB:.1f} MiB free"
            )

    def download(self, plan: PullPlan, token: str | None) -> None:
        """Fetch the missing files (each resumed from its partial blob, if an earlier try left
        one), then record the pull. Raises HubError; a partial blob stays for the next try."""
        with Downloader(self._endpoint(), token) as downloader:
            for f in plan.missing:
                downloader.fetch(self.target(plan, f))
        self.cache.write_record(plan.ref, plan.commit, plan.selection)
        if self.cache.find(plan.ref) is None:
            raise HubError(f"{plan.ref}: downloaded, but the files are not in the cache at {self.cache.root}")

    def pull(self, model: LoadedModel, *, on_plan: Callable[[PullPlan], None] | None = None) -> PulledFiles:
        """Every hub file ``model`` names (``hub_refs``: weights, draft, projector, adapters) in
        the cache: all cached at once (no network), else each missing one planned, the room for
        all of them checked, then downloaded one after another. ``on_plan`` hears each plan before
        the downloads start. Raises HubError."""
        refs = hub_refs(model)
        if not refs:
            raise HubError(f"model {model.name}: it names no hub reference")
        pulled = self.cache.lookup_model(model)
        if pulled is not None:
            return pulled
        self.pull_refs([ref for _, ref in refs], hub_token(model), on_plan=on_plan)
        pulled = self.cache.lookup_model(model)
        if pulled is None:
            where = self.cache.root
            raise HubError(f"{describe(refs)}: downloaded, but the files are not in the cache at {where}")
        return pulled

    def pull_refs(
        self,
        refs: Iterable[HubRef],
        token: str | None,
        *,
        on_plan: Callable[[PullPlan], None] | None = None,
    ) -> None:
        """``refs`` in the cache: each not cached planned (one plan per distinct reference: two
        adapters from one repo share it), the room for all checked, then each downloaded and
        recorded, as ``pull`` does for a model (``modelctl pull --ref`` calls it with no manifest).
        Raises HubError."""
        unique = dict.fromkeys(refs)
        plans = [self.plan(ref, token) for ref in unique if self.cache.find(ref) is None]
        self.check_room(*plans)
        for plan in plans:
            if on_plan is not None:
                on_plan(plan)
        for plan in plans:
            self.download(plan, token)

    def target(self, plan: PullPlan, f: RepoFile) -> Target:
        """Where ``f`` of ``plan`` comes from (its resolve URL at the plan's commit) and goes."""
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(plan.ref.repo, f.path, revision=plan.commit, endpoint=self._endpoint())
        snapshot = self.cache.snapshot(plan.ref.repo, plan.commit)
        return Target(str(plan.ref), f, url, self.blobs(plan), snapshot)

    def blobs(self, plan: PullPlan) -> Path:
        return self.cache.hf_dir / f"models--{plan.ref.repo.replace('/', '--')}" / "blobs"

    def partial_bytes(self, plan: PullPlan) -> int:
        """Bytes of the missing files' partial blobs (what a resumed download keeps)."""
        folder = self.blobs(plan)
        return sum(partial(folder, f.blob) for f in plan.missing if f.blob)

    def measure(self, *plans: PullPlan) -> Progress:
        """How far the downloads of ``plans`` are, together, from the blobs on disk (complete or
        partial)."""
        done = total = 0
        for plan in plans:
            folder, snapshot = self.blobs(plan), self.cache.snapshot(plan.ref.repo, plan.commit)
            total += plan.selection.total
            for f in plan.selection.files:
                if (snapshot / f.path).is_file():
                    done += f.size
                elif f.blob:
                    done += min(f.size, max(_size(folder / f.blob), partial(folder, f.blob)))
        return Progress(done, total)


def select(ref: HubRef, files: tuple[RepoFile, ...]) -> Selection:
    """What ``ref`` needs of the repo's ``files``, by its engine and kind. Raises HubError."""
    if ref.engine != LLAMACPP:
        return for_peft(files, ref.repo) if ref.kind == "adapter" else for_vllm(files, ref.repo)
    if ref.kind == "mmproj":
        return for_mmproj(files, ref.repo, ref.tag)
    if ref.kind == "adapter":
        return for_lora_gguf(files, ref.repo, ref.tag)
    return for_llamacpp(files, ref.repo, ref.tag, projector=ref.kind == WEIGHTS)


def listed(siblings: object) -> list[RepoFile]:
    """The repo's files from the Hub's listing (names and sizes; the blob a download keeps)."""
    files = []
    for s in siblings:  # type: ignore[attr-defined]
        lfs = getattr(s, "lfs", None)
        size = getattr(lfs, "size", None) if lfs is not None else getattr(s, "size", None)
        blob = getattr(lfs, "sha256", None) if lfs is not None else getattr(s, "blob_id", None)
        if not isinstance(size, int) or size < 0:
            raise HubError(f"the Hub listed {s.rfilename!r} without a size")
        files.append(RepoFile(str(s.rfilename), size, str(blob or "")))
    return files


def partial(folder: Path, blob: str) -> int:
    """Bytes of ``blob``'s download in progress or left by an earlier try: its partial file
    (``<blob>.incomplete``, which the next try continues)."""
    return _size(partial_path(folder, blob))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
