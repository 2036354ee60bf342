"""Load a folder of manifest files into validated models, or every error with its file, line, field
and, in a file of several documents, the document.

A folder holds *.yaml / *.yml / *.json files; a file holds one or more documents; a document is one
model (see ``controller.manifests.document``). Loading is all-or-nothing: the caller gets every model, or an
``InvalidManifests`` listing every problem, so a bad edit never half-applies.

Weights paths, and the files beside them (``mmproj``, ``draft``, ``adapters``), are checked against
the configured model roots here (symlinks resolved), because a manifest must never be able to
bind-mount an arbitrary host path into a container. Whether those files fit the weights (an adapter
for another base, a projector of another width) is read from their headers by the weights package,
a layer above this one: its check is handed in (``check_files``) and its problems located here;
``check_found`` locates the same check's problems with files found after the load (hub files,
once the controller has pulled them).

The folder is hostile input (``controller.manifests.reading`` bounds every step): whatever it
holds, ``load_folder`` returns models or raises ``InvalidManifests``, so the reconciler keeps
serving the last good set. Anything else escaping from one file would be a bug; it is still turned
into that file's error (and logged with its traceback) rather than ending the caller's loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.errors import InvalidManifests, ManifestError
from controller.manifests.document import ModelManifest, closest_field
from controller.manifests.envrefs import EnvAllow, check_allowed, expand
from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel
from controller.manifests.quoting import shown
from controller.manifests.reading import (
    MANIFEST_SUFFIXES,
    Budget,
    Unreadable,
    manifest_files,
    parse_documents,
    read_text,
)
from controller.manifests.rules import hub_reference
from controller.manifests.shards import SHARD_NAME, shard_names, shard_paths
from controller.manifests.values import Task

__all__ = ["MANIFEST_SUFFIXES", "check_found", "load_folder", "manifest_files"]

log = logging.getLogger(__name__)

# A problem with the files beside the weights: the manifest field it is about (("adapters", 1,
# "path")) and what is wrong, naming the file.
FileProblem = tuple[tuple[str | int, ...], str]
# Whether a model's resolved files fit its weights (``controller.weights.compat.check_files``).
FilesCheck = Callable[[LoadedModel], Iterable[FileProblem]]
# What a model's weights say it is for (``controller.weights.task.detect_task``), None: nothing.
TaskDetect = Callable[[LoadedModel], Task | None]


def load_folder(
    path: Path,
    *,
    model_roots: Sequence[Path] | None = None,
    environ: Mapping[str, str] | None = None,
    env_allow: EnvAllow | None = None,
    check_files: FilesCheck | None = None,
    detect_task: TaskDetect | None = None,
) -> list[LoadedModel]:
    """Load every manifest under ``path`` (a folder or one file).

    Returns the models sorted by name. Raises InvalidManifests with every problem found, and
    nothing else whatever the folder holds.
    ``model_roots`` given: weights, and the files beside them, must exist under one of them (else
    an error names the field); ``check_files`` then says whether those files fit the weights.
    ``${NAME}`` references in ``env`` are filled from ``environ`` (default: this process's), and
    may name only what ``env_allow`` allows (default: from this process's
    MODELCTL_MANIFEST_ENV_ALLOW, as ``ControllerSettings`` reads it).
    """
    errors: list[ManifestError] = []
    located: list[Located] = []
    environ = os.environ if environ is None else environ
    if env_allow is None:
        try:
            env_allow = EnvAllow.from_environ(os.environ)
        except ValueError as exc:
            raise InvalidManifests([ManifestError(str(exc), file=str(path))]) from exc
    budget = Budget()
    files = Files(model_roots, check_files, detect_task)
    for file in manifest_files(path, errors):
        located.extend(load_file(file, errors, files, Env(environ, env_allow), budget))
    check_unique_names(located, errors)
    if errors:
        raise InvalidManifests(errors)
    return sorted((model for model, _ in located), key=lambda m: m.name)


@dataclass(frozen=True, slots=True)
class Env:
    """Where ``${NAME}`` values come from, and which names manifests may use."""

    environ: Mapping[str, str]
    allow: EnvAllow


@dataclass(frozen=True, slots=True)
class Files:
    """Where weights and the files beside them must be (None: not looked up), and the check of
    whether those files fit the weights (None: not checked)."""

    roots: Sequence[Path] | None
    check: FilesCheck | None = None
    detect_task: TaskDetect | None = None


# A loaded model and its document's YAML node, for errors found after loading (names in use twice).
Located = tuple[LoadedModel, yaml.Node]


def load_file(
    file: Path,
    errors: list[ManifestError],
    files: Files,
    env: Env,
    budget: Budget,
) -> list[Located]:
    """Validate each document of one file; append problems to ``errors``. ``budget``: what this
    load may still read."""
    try:
        return load_documents(file, errors, files, env, budget)
    except Unreadable as exc:
        errors.append(ManifestError(exc.message, file=str(file), line=exc.line))
    except Exception as exc:  # a bug of ours met by hostile input: located, logged, never the loop's end
        log.exception("unexpected error loading %s", file)
        errors.append(ManifestError(f"cannot load: {type(exc).__name__}: {exc}"[:300], file=str(file)))
    return []


def load_documents(
    file: Path,
    errors: list[ManifestError],
    files: Files,
    env: Env,
    budget: Budget,
) -> list[Located]:
    loaded: list[Located] = []
    documents = list(parse_documents(read_text(file, budget), budget.documents))
    budget.documents -= len(documents)
    for position, (node, data) in enumerate(documents, start=1):
        index = position if len(documents) > 1 else None  # "document 1" of one says nothing
        model = validate_document(file, index, node, data, errors)
        if model is None:
            continue
        where = Where(file, index, node, errors)
        weights, extra = None, ExtraFiles()
        if files.roots is not None:
            if hub_reference(model.model) is None:
                weights = resolve_or_report(model, where, files.roots)
            extra = resolve_files_or_report(model, where, files.roots)
        filled = fill_env_or_report(model, file, index, node, env, errors)
        found = LoadedModel(model, str(file), index, weights, modified_at(file), filled, extra)
        if files.check is not None and weights is not None and all_found(model, extra):
            report_problems(files.check, found, where)
        if files.detect_task is not None and weights is not None and model.task is None:
            found = replace(found, detected_task=detect_or_log(files.detect_task, found))
        loaded.append((found, node))
    return loaded


@dataclass(frozen=True, slots=True)
class Where:
    """A document being loaded, and where its errors go: enough to locate an error at a field."""

    file: Path
    index: int | None
    node: yaml.Node | None  # None: the document is gone (an error found after the load)
    errors: list[ManifestError]

    def report(self, loc: tuple[str | int, ...], message: str) -> None:
        self.errors.append(
            ManifestError(
                message,
                file=str(self.file),
                document=self.index,
                field=".".join(str(p) for p in loc),
                line=None if self.node is None else line_of(self.node, loc),
            )
        )


def fill_env_or_report(
    model: ModelManifest,
    file: Path,
    index: int | None,
    node: yaml.Node,
    env: Env,
    errors: list[ManifestError],
) -> tuple[tuple[str, str], ...]:
    """``model.env`` with its references filled; an error per value naming a variable that
    manifests may not use or that is not set."""
    filled = []
    for name, value in model.env.items():
        try:
            check_allowed(value, env.allow)
            filled.append((name, expand(value, env.environ)))
        except ValueError as exc:  # names the variables, never a value
            errors.append(
                ManifestError(
                    str(exc),
                    file=str(file),
                    document=index,
                    field=f"env.{name}",
                    line=line_of(node, ("env", name)),
                )
            )
    return tuple(filled)


def validate_document(
    file: Path, index: int | None, node: yaml.Node, data: Any, errors: list[ManifestError]
) -> ModelManifest | None:
    """Return the valid manifest, or None after appending one error per problem."""
    if not isinstance(data, dict):
        errors.append(
            ManifestError(
                f"a manifest document must be a mapping, not {type(data).__name__}",
                file=str(file),
                document=index,
                line=node.start_mark.line + 1,
            )
        )
        return None
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            errors.append(
                ManifestError(
                    describe(err),
                    file=str(file),
                    document=index,
                    field=".".join(str(p) for p in loc) or None,
                    line=line_of(node, loc),
                )
            )
        return None


def describe(err: Any) -> str:
    """A pydantic error in the words a manifest author needs: a misspelt field gets the field it
    most likely means."""
    if err["type"] == "extra_forbidden":
        loc = tuple(err["loc"])
        meant = closest_field(str(loc[0])) if len(loc) == 1 else None
        return f"unknown field; did you mean '{meant}'?" if meant else "unknown field (check the spelling)"
    if err["type"] == "missing":
        return "required field is missing"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")


def line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the value at ``loc`` in ``node``, or of the deepest part that exists."""
    for part in loc:
        child = child_node(node, part)
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def child_node(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                found: yaml.Node = key if isinstance(value, yaml.ScalarNode) and value.value == "" else value
                return found
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item: yaml.Node = node.value[part]
        return item
    return None


def resolve_or_report(model: ModelManifest, where: Where, roots: Sequence[Path]) -> Path | None:
    try:
        weights = resolve_weights(model.model, roots)
        check_shards(model.model, weights, roots)
        return weights
    except ValueError as exc:
        where.report(("model",), str(exc))
        return None


def resolve_files_or_report(model: ModelManifest, where: Where, roots: Sequence[Path]) -> ExtraFiles:
    """The files beside the weights, each resolved as the weights are (``resolve_beside``); one
    located error per file that is not there, and that file left out. A hub reference is left out
    too: the controller pulls it (``controller.hub``), as it does hub weights."""

    def resolve(loc: tuple[str | int, ...], path: str) -> Path | None:
        if hub_reference(path) is not None:
            return None
        try:
            return resolve_beside(loc, path, model.resolved_engine, roots)
        except ValueError as exc:
            where.report(loc, str(exc))
            return None

    mmproj = resolve(("mmproj",), model.mmproj) if model.mmproj is not None else None
    draft = resolve(("draft",), model.draft) if model.draft is not None else None
    adapters = []
    for index, adapter in enumerate(model.adapters):
        path = resolve(("adapters", index, "path"), adapter.path)
        if path is not None:
            adapters.append(AdapterFile(adapter.name, path))
    return ExtraFiles(mmproj=mmproj, draft=draft, adapters=tuple(adapters))


# What each file beside the weights is called in errors, by its field.
BESIDE_NAMES = {"mmproj": "projector", "draft": "draft", "adapters": "adapter"}


def resolve_beside(loc: tuple[str | int, ...], path: str, engine: str, roots: Sequence[Path]) -> Path:
    """The real host path of a file beside the weights (``loc``: its field), under one of
    ``roots`` like the weights: a GGUF file for llama.cpp (a split draft's every shard too), a
    folder for vLLM (a model folder as draft, PEFT folders as adapters). Raises ValueError."""
    what = BESIDE_NAMES[str(loc[0])]
    real = resolve_weights(path, roots, what=what)
    if engine == "llamacpp":
        if not real.is_file():
            raise ValueError(f"{what} '{shown(path)}' is not a file; llama.cpp loads a GGUF file")
        if loc == ("draft",):
            check_shards(path, real, roots)
    elif not real.is_dir():
        raise ValueError(f"{what} '{shown(path)}' is not a folder; vLLM loads a folder as {what}")
    return real


def all_found(model: ModelManifest, files: ExtraFiles) -> bool:
    """The manifest names files beside the weights, and every one was found (the others were
    reported): only then is there something to check against the weights."""
    mmproj, draft = local(model.mmproj), local(model.draft)  # hub references are pulled later
    adapters = [a for a in model.adapters if local(a.path) is not None]
    named = mmproj is not None or draft is not None or bool(adapters)
    return (
        named
        and (mmproj is None) == (files.mmproj is None)
        and (draft is None) == (files.draft is None)
        and len(adapters) == len(files.adapters)
    )


def local(path: str | None) -> str | None:
    """``path`` unless it is a hub reference."""
    return path if path is not None and hub_reference(path) is None else None


def report_problems(check: FilesCheck, model: LoadedModel, where: Where) -> None:
    """Located errors for what ``check`` finds in ``model``'s files."""
    for loc, message in checked(check, model):
        where.report(loc, message)


def checked(check: FilesCheck, model: LoadedModel) -> list[FileProblem]:
    """What ``check`` finds in ``model``'s files; a bug of the check is one problem, not the end
    of the load (its traceback logged)."""
    try:
        return list(check(model))
    except Exception as exc:
        log.exception("unexpected error checking the files of %s", model.file)
        return [((), f"cannot check the files beside the weights: {type(exc).__name__}: {exc}"[:300])]


def check_found(models: Iterable[LoadedModel], check: FilesCheck) -> None:
    """``check`` run on loaded models whose files were found after the load (hub files the
    controller pulled into its cache, ``controller.hub``), each problem located as the load
    locates it (the manifest read again for its lines, only when there is one). Raises
    InvalidManifests with every problem, and nothing else."""
    errors: list[ManifestError] = []
    for model in models:
        problems = checked(check, model)
        if problems:
            where = Where(Path(model.file), model.document, document_node(model), errors)
            for loc, message in problems:
                where.report(loc, message)
    if errors:
        raise InvalidManifests(errors)


def document_node(model: LoadedModel) -> yaml.Node | None:
    """The YAML node of ``model``'s document, read again from its file; None when the file cannot
    be read now or no longer holds that document (the error then has no line)."""
    try:
        documents = list(parse_documents(read_text(Path(model.file), Budget())))
    except Unreadable:
        return None
    index = (model.document or 1) - 1
    return documents[index][0] if index < len(documents) else None


def detect_or_log(detect: TaskDetect, model: LoadedModel) -> Task | None:
    """What ``detect`` says ``model``'s weights are for; None (logged) when it fails: the weights'
    own problems are the estimate's to report, and generate is the default either way."""
    try:
        return detect(model)
    except Exception:
        log.exception("cannot read what the weights of %s are for", model.file)
        return None


def resolve_weights(weights: str, roots: Sequence[Path], *, what: str = "weights") -> Path:
    """The real host path of ``weights`` (or another file: ``what`` names it in errors), which must
    exist under one of ``roots``.

    Relative paths are tried against each root in order. Symlinks are resolved before the check, so
    a link inside a root cannot point outside it (nor can '..'). Raises ValueError saying why not,
    also for a path the system refuses to look up (too long, a symlink loop, no permission).
    """
    if not roots:
        raise ValueError("no model root is configured (set MODELCTL_MODEL_ROOTS)")
    try:
        real = first_existing(weights, roots)
    except (OSError, RuntimeError) as exc:  # RuntimeError: pathlib's "Symlink loop from ..."
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot look up {what} '{shown(weights)}': {reason}") from exc
    if real is None:
        where = ", ".join(str(r) for r in roots)
        raise ValueError(f"{what} '{shown(weights)}' not found under the model roots ({where})")
    if any(real.is_relative_to(root.resolve()) for root in roots):
        return real
    raise ValueError(f"'{shown(weights)}' resolves to {shown(str(real))}, outside the model roots")


def check_shards(weights: str, real: Path, roots: Sequence[Path]) -> None:
    """A split GGUF (``weights`` names shard 1, ``...-00001-of-0000N.gguf``): every sibling shard
    must exist beside the first, under the model roots (llama.cpp loads them from shard 1's folder
    and fails on a missing one). Raises ValueError naming another shard than the first, a missing
    shard, or one outside the roots."""
    shard_names(Path(weights).name)  # names another shard: say to name shard 1
    if SHARD_NAME.match(Path(weights).name) and not SHARD_NAME.match(real.name):
        raise ValueError(
            f"'{shown(weights)}' resolves to {shown(str(real))}, not a shard's name: llama.cpp finds "
            "the other shards by shard 1's name; link the folder, not each shard"
        )
    for shard in shard_paths(real)[1:]:
        if not shard.exists():
            raise ValueError(
                f"split GGUF: shard '{shown(shard.name)}' is missing beside '{shown(real.name)}'"
            )
        resolve_weights(str(shard), roots)


def first_existing(weights: str, roots: Sequence[Path]) -> Path | None:
    """The real path of the first of ``weights``' candidates that exists. Raises OSError (a name
    too long, no permission) or RuntimeError when a lookup fails for another reason than absence."""
    candidates = [Path(weights)] if Path(weights).is_absolute() else [r / weights for r in roots]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve(strict=True)
    return None


def check_unique_names(models: Sequence[Located], errors: list[ManifestError]) -> None:
    """Names, aliases and adapter names must be unique across all models: a request must route to
    one model (or adapter). ``base:adapter`` needs no check of its own: ':' is in no name."""
    seen: dict[str, LoadedModel] = {}
    for model, node in models:
        for name, loc in names_of(model.manifest):
            other = seen.setdefault(name, model)
            if other is not model:
                errors.append(
                    ManifestError(
                        f"name '{name}' is already used by {other.file}{document_of(other)}",
                        file=model.file,
                        document=model.document,
                        field=".".join(map(str, loc)),
                        line=line_of(node, loc),
                    )
                )


def names_of(manifest: ModelManifest) -> list[tuple[str, tuple[str | int, ...]]]:
    """Every name a request may give to reach ``manifest``'s model, with the field it is set in."""
    names: list[tuple[str, tuple[str | int, ...]]] = [(manifest.resolved_name, ("name",))]
    names += [(alias, ("aliases", i)) for i, alias in enumerate(manifest.aliases)]
    names += [(a.name, ("adapters", i, "name")) for i, a in enumerate(manifest.adapters)]
    return names


def document_of(model: LoadedModel) -> str:
    """' (document 2)' for a model from a file of several documents, '' for one from a file of one."""
    return "" if model.document is None else f" (document {model.document})"


def modified_at(file: Path) -> int:
    try:
        return int(file.stat().st_mtime)
    except OSError:
        return 0
