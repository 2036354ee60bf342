"""``/v1/plan``: the plan preview over HTTP, for the console's page and ``modelctl plan --diff``.

The controller answers it because only it knows what runs, its GPUs and host, its model roots and
the manifests it runs now. ``GET`` previews the folder it watches; ``POST`` the files in the body
(``{"files": {"relative/path.yaml": "text"}}``), loaded as the controller loads its own folder
(same model roots, same environment for ``${NAME}`` references) from a temporary folder whose name
never shows: errors name the body's paths. The preview itself is pure (``reconcile.preview``);
this module reads its inputs the way a reconcile pass does, each blocking read in a thread.

A broken watched folder is not an error of the preview: the controller keeps running the last
good set, so nothing would change (200, ``changes: false``, the errors listed). Broken files in a
POST are the caller's to fix: 422 with the errors.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from controller.errors import InvalidManifests, ManifestError, ModelctlError
from controller.manifests.loader import MANIFEST_SUFFIXES, LoadedModel, load_folder
from controller.reconcile.loop import Reconciler
from controller.reconcile.preview import Preview, counts_now, preview

MAX_FILES = 1000


def add_routes(app: web.Application, reconciler: Reconciler, *, model_roots: Sequence[Path]) -> None:
    """``GET /v1/plan`` and ``POST /v1/plan`` (docs/console.md); ``model_roots``: where the
    controller allows weights from, to load posted manifests as its own."""

    async def watched(request: web.Request) -> web.Response:
        try:
            models = await asyncio.to_thread(reconciler.load_models)
        except InvalidManifests as exc:
            return web.json_response(Preview(errors=tuple(str(e) for e in exc.errors)).to_json())
        return await answer(reconciler, models)

    async def posted(request: web.Request) -> web.Response:
        try:
            files = posted_files(await request.json())
        except ValueError as exc:  # JSONDecodeError is one
            return web.json_response({"error": f"bad plan request: {exc}"}, status=400)
        try:
            models = await asyncio.to_thread(load_posted, files, model_roots)
        except InvalidManifests as exc:
            return web.json_response(Preview(errors=tuple(str(e) for e in exc.errors)).to_json(), status=422)
        return await answer(reconciler, models)

    app.router.add_get("/v1/plan", watched)
    app.router.add_post("/v1/plan", posted)


async def answer(reconciler: Reconciler, models: list[LoadedModel]) -> web.Response:
    try:
        result = await preview_now(reconciler, models)
    except ModelctlError as exc:  # Docker unreachable, mostly
        return web.json_response({"error": f"cannot preview the plan now: {exc}"}, status=503)
    return web.json_response(result.to_json())


async def preview_now(reconciler: Reconciler, models: list[LoadedModel]) -> Preview:
    """The preview of ``models`` against what runs now: the containers, GPUs and processes the
    reconciler's last pass read (read here only before its first pass; a page polling the plan
    costs no Docker or NVML calls), the scaler's counts without recording a sample."""
    seen = reconciler.seen
    if seen is None:  # before the first pass
        seen = await asyncio.to_thread(reconciler.read_seen)
    observed, inventory, pids = seen.observed, seen.inventory, seen.pids
    current = list(reconciler.models)
    host = await asyncio.to_thread(reconciler.on_demand.host, current, observed)
    scaled = {name: s.desired for name, s in reconciler.on_demand.scaling.items()}
    counts = counts_now(models, scaled, observed)
    demand = reconciler.on_demand.demand.current()
    waiting = {(r.model, r.replica): r.reason for r in reconciler.replicas if r.state == "BackingOff"}
    return await asyncio.to_thread(
        partial(
            preview,
            managed_pids=pids,
            counts=counts,
            host=host,
            demand=demand,
            backing_off=waiting,
            hash_key=reconciler.runtime.hash_key,
        ),
        models,
        current,
        observed,
        inventory,
    )


def posted_files(body: Any) -> dict[PurePosixPath, str]:
    """The body's files by relative path. Raises ValueError saying what is wrong with it."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict):  # empty is fine: no models, so everything would go
        raise ValueError('send {"files": {"relative/path.yaml": "text of the file", ...}}')
    if len(files) > MAX_FILES:
        raise ValueError(f"{len(files)} files: at most {MAX_FILES}")
    checked: dict[PurePosixPath, str] = {}
    for name, text in files.items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"{name!r}: a relative path inside the folder, please")
        if path.suffix not in MANIFEST_SUFFIXES:
            raise ValueError(f"{name!r}: not a manifest file ({', '.join(MANIFEST_SUFFIXES)})")
        if not isinstance(text, str):
            raise ValueError(f"{name!r}: the file's text must be a string")
        checked[path] = text
    if len({p.parent for p in checked}) > 1:
        raise ValueError("the files must be in one folder: the controller loads a folder, not its subfolders")
    return checked


def load_posted(files: dict[PurePosixPath, str], model_roots: Sequence[Path]) -> list[LoadedModel]:
    """Load the files as the controller loads its folder. Raises InvalidManifests whose errors
    name the files by their posted paths."""
    with tempfile.TemporaryDirectory(prefix="modelctl-plan-") as tmp:
        for name, text in files.items():
            target = Path(tmp, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        folder = Path(tmp, next(iter(files)).parent) if files else Path(tmp)
        try:
            return load_folder(folder, model_roots=model_roots)
        except InvalidManifests as exc:
            raise InvalidManifests([posted_error(e, tmp) for e in exc.errors]) from exc


def posted_error(error: ManifestError, tmp: str) -> ManifestError:
    """``error`` naming the posted path instead of the temporary folder's (also in its message:
    a duplicate name names the other file)."""
    prefix = tmp.rstrip("/") + "/"
    return ManifestError(
        error.message.replace(prefix, ""),
        file=error.file.removeprefix(prefix),
        document=error.document,
        field=error.field,
        line=error.line,
    )
