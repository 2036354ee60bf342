"""``/v1/plan``: the plan preview over HTTP, for the console's page and ``modelctl plan --diff``.

The controller answers it because only it knows what runs, its GPUs and host, its model roots and
the manifests it runs now. ``GET`` previews the folder it watches; ``POST`` the files in the body
(``{"files": {"relative/path.yaml": "text"}}``), loaded as the controller loads its own folder
(same model roots, same environment for ``${NAME}`` references) from a temporary folder whose name
never shows: errors name the body's paths. It decides nothing of its own: the last pass's snapshot
(``report.Report.snapshot``) with these manifests swapped in goes through the pass's own
``decide.decide``, read back as rows (``reconcile.preview.rows``).

A broken watched folder is not an error of the preview: the controller keeps running the last
good set, so nothing would change (200, ``changes: false``, the errors listed). Broken files in a
POST are the caller's to fix: 422 with the errors. A body that is not ``{"files": {...}}`` with at
most ``MAX_FILES`` relative manifest paths in one folder gets 400 naming the field.

A POST must not tell anyone what is on the controller's host. So a posted manifest is first loaded
without looking anything up (``load_posted``): weights that lie outside the model roots by their
path alone, and ``${NAME}`` references to variables the controller's own manifests do not refer to
(never ``MODELCTL_*``), get one refusal each, the same whether that file or variable exists or not.
Only then is it loaded as the controller loads its folder, with only those variables, and a link
under a root that points out is refused with the same words (its target is not named).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from controller.endpoints.refusal import refusal
from controller.errors import InvalidManifests, ManifestError, ModelctlError
from controller.manifests.envrefs import references
from controller.manifests.loader import MANIFEST_SUFFIXES, load_folder
from controller.manifests.model import LoadedModel
from controller.reconcile.controls import Controls
from controller.reconcile.decide import Snapshot, decide
from controller.reconcile.preview import Preview, rows
from controller.reconcile.report import ReportStore
from controller.weights.compat import check_files
from controller.weights.task import detect_task

log = logging.getLogger(__name__)

MAX_FILES = 1000
MAX_PATH = 1024  # characters of a posted file's relative path
MAX_PART = 255  # bytes of one part of it (what file systems take)
HINT = 'send {"files": {"relative/path.yaml": "text of the file", ...}}'
NEVER_SHARED = "MODELCTL_"  # the controller's own settings (keys files...): never a manifest's


def add_routes(
    app: web.Application, reports: ReportStore, controls: Controls, *, model_roots: Sequence[Path]
) -> None:
    """``GET /v1/plan`` and ``POST /v1/plan`` (docs/console.md); ``model_roots``: where the
    controller allows weights from, to load posted manifests as its own."""

    async def watched(request: web.Request) -> web.Response:
        try:
            models = await asyncio.to_thread(controls.load_models)
        except InvalidManifests as exc:
            return web.json_response(Preview(errors=tuple(str(e) for e in exc.errors)).to_json())
        return await answer(reports, controls, models)

    async def posted(request: web.Request) -> web.Response:
        try:
            files = posted_files(await request.read())
        except ValidationError as exc:
            return web.json_response(refusal("bad plan request", exc, hint=HINT), status=400)
        shared = shared_environ(reports.current().models)
        try:
            models = await asyncio.to_thread(load_posted, files, model_roots, shared)
        except InvalidManifests as exc:
            return web.json_response(Preview(errors=tuple(str(e) for e in exc.errors)).to_json(), status=422)
        except Exception as exc:  # the loader met what it did not expect: the caller's files, still
            log.exception("loading posted manifests failed")
            problem = f"the posted files could not be loaded ({type(exc).__name__})"
            return web.json_response(Preview(errors=(problem,)).to_json(), status=422)
        return await answer(reports, controls, models)

    app.router.add_get("/v1/plan", watched)
    app.router.add_post("/v1/plan", posted)


async def answer(reports: ReportStore, controls: Controls, models: list[LoadedModel]) -> web.Response:
    try:
        result = await preview_now(reports, controls, models)
    except ModelctlError as exc:  # Docker unreachable, mostly
        return web.json_response({"error": f"cannot preview the plan now: {exc}"}, status=503)
    return web.json_response(result.to_json())


async def preview_now(reports: ReportStore, controls: Controls, models: list[LoadedModel]) -> Preview:
    """The preview of ``models`` against what runs now: the snapshot the last pass decided from
    (read here only before the first pass; a page polling the plan costs no Docker or NVML calls),
    with ``models`` in place of the manifests it runs, decided as a pass decides."""
    snapshot = reports.current().snapshot
    if snapshot is None:  # before the first pass
        snapshot = await controls.read_snapshot()
    asked = swapped(snapshot, models)
    return await asyncio.to_thread(lambda: rows(asked, decide(asked)))


def swapped(snapshot: Snapshot, models: Sequence[LoadedModel]) -> Snapshot:
    """``snapshot`` with ``models`` to decide for, the manifests it ran as the current ones."""
    return replace(snapshot, models=tuple(models), current=snapshot.running_models)


def posted_path(name: str) -> str:
    """``name`` when it is a relative manifest path inside the folder; raises ValueError saying why not."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError("a relative path inside the folder, please")
    if not name.isprintable() or any(len(part.encode()) > MAX_PART for part in path.parts):
        raise ValueError(f"a path of printable parts of at most {MAX_PART} bytes, please")
    if path.suffix not in MANIFEST_SUFFIXES:
        raise ValueError(f"not a manifest file ({', '.join(MANIFEST_SUFFIXES)})")
    return name


PostedPath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH), AfterValidator(posted_path)]


class PlanRequest(BaseModel):
    """``POST /v1/plan``'s body: manifest files by their path relative to one folder (empty is fine:
    no models, so everything would go)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    files: Annotated[dict[PostedPath, str], Field(max_length=MAX_FILES)]

    def in_one_folder(self) -> dict[PurePosixPath, str]:
        checked = {PurePosixPath(name): text for name, text in self.files.items()}
        if len({p.parent for p in checked}) > 1:
            raise ValueError(
                "the files must be in one folder: the controller loads a folder, not its subfolders"
            )
        return checked


def posted_files(body: bytes | str) -> dict[PurePosixPath, str]:
    """The body's files by relative path. Raises ValidationError naming what is wrong with it."""
    request = PlanRequest.model_validate_json(body)
    try:
        return request.in_one_folder()
    except ValueError as exc:
        raise ValidationError.from_exception_data(
            "PlanRequest", [{"type": "value_error", "loc": ("files",), "input": None, "ctx": {"error": exc}}]
        ) from exc


def shared_environ(running: Sequence[LoadedModel], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables a posted manifest may refer to: those the controller's own manifests refer to
    (never ``MODELCTL_*``), with their values."""
    names = {name for model in running for name in referenced(model)}
    return {name: environ[name] for name in names if name in environ and not name.startswith(NEVER_SHARED)}


def referenced(model: LoadedModel) -> Iterator[str]:
    for value in model.manifest.env.values():
        try:
            yield from references(value)
        except ValueError:  # a malformed "$": the loader reports it
            continue


def load_posted(
    files: dict[PurePosixPath, str], model_roots: Sequence[Path], shared: Mapping[str, str]
) -> list[LoadedModel]:
    """Load the files as the controller loads its folder, looking up only what ``private_refusals``
    lets through. Raises InvalidManifests whose errors name the files by their posted paths."""
    with tempfile.TemporaryDirectory(prefix="modelctl-plan-") as tmp:
        for name, text in files.items():
            target = Path(tmp, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        folder = Path(tmp, next(iter(files)).parent) if files else Path(tmp)
        try:
            return load_privately(folder, model_roots, shared)
        except InvalidManifests as exc:
            raise InvalidManifests([posted_error(e, tmp) for e in exc.errors]) from exc


class AnyVariable(dict[str, str]):
    """An environment with every variable set (to ""): loading with it looks nothing up."""

    def __contains__(self, name: object) -> bool:
        return True

    def __missing__(self, name: str) -> str:
        return ""


def load_privately(folder: Path, model_roots: Sequence[Path], shared: Mapping[str, str]) -> list[LoadedModel]:
    """Load ``folder`` twice: first looking nothing up (no weights, any variable), refusing what
    ``private_refusals`` refuses; then for real. Raises InvalidManifests."""
    blind = load_folder(folder, model_roots=None, environ=AnyVariable())
    refused = list(private_refusals(blind, model_roots, shared))
    if refused:
        raise InvalidManifests(refused)
    try:
        return load_folder(
            folder, model_roots=model_roots, environ=shared, check_files=check_files, detect_task=detect_task
        )
    except InvalidManifests as exc:
        raise InvalidManifests([hide_outside(e, model_roots) for e in exc.errors]) from exc


def private_refusals(
    models: Sequence[LoadedModel], model_roots: Sequence[Path], shared: Mapping[str, str]
) -> Iterator[ManifestError]:
    """One error per weights path outside ``model_roots`` by its text and per variable not in
    ``shared``: the same words whatever exists on the host."""
    for model in models:
        file, document = model.file, model.document
        for field, path in model.manifest.local_paths if model_roots else ():
            if not lexically_under(path, model_roots):
                yield ManifestError(outside(model_roots, field), file=file, document=document, field=field)
        for key, value in model.manifest.env.items():
            try:
                names = references(value)
            except ValueError:
                continue
            for name in dict.fromkeys(n for n in names if n not in shared):
                yield ManifestError(
                    f"refers to ${{{name}}}: a posted manifest may refer only to the variables the "
                    "controller's own manifests refer to",
                    file=file,
                    document=document,
                    field=f"env.{key}",
                )


def lexically_under(weights: str, roots: Sequence[Path]) -> bool:
    """True when ``weights`` names a path under one of ``roots`` by its text alone (``..`` counted,
    links not followed): absolute, under a root; relative, under every root it is tried against."""
    path = PurePosixPath(weights)
    inside = [r for root in roots for r in (root, root.resolve())]

    def under(candidate: PurePosixPath | Path) -> bool:
        normal = Path(os.path.normpath(candidate))
        return any(normal.is_relative_to(root) for root in inside)

    if path.is_absolute():
        return under(path)
    return all(under(root / path) for root in roots)


def outside(roots: Sequence[Path], field: str = "model") -> str:
    shown = ", ".join(str(r) for r in roots)
    what = "weights" if field == "model" else field
    return f"{what} must be a file or folder under the model roots ({shown}); nothing outside is looked at"


def hide_outside(error: ManifestError, roots: Sequence[Path]) -> ManifestError:
    """``error`` in ``private_refusals``' words when it says where a link under a root points."""
    path_field = error.field in ("model", "mmproj", "draft") or PATH_FIELD.fullmatch(error.field or "")
    if not path_field or "outside the model roots" not in error.message:
        return error
    return ManifestError(
        outside(roots, error.field or "model"),
        file=error.file,
        document=error.document,
        field=error.field,
        line=error.line,
    )


PATH_FIELD = re.compile(r"adapters\.\d+\.path")


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
