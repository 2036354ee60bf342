"""Load a folder of manifest files into validated models, or every error with its file, document,
field and line.

A folder holds *.yaml / *.yml / *.json files; a file holds one or more documents; a document is one
model (see ``controller.manifests.document``). Loading is all-or-nothing: the caller gets every model, or an
``InvalidManifests`` listing every problem, so a bad edit never half-applies.

Weights paths are checked against the configured model roots here (symlinks resolved), because a
manifest must never be able to bind-mount an arbitrary host path into a container.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.errors import InvalidManifests, ManifestError
from controller.manifests.document import ModelManifest, hub_reference
from controller.manifests.envrefs import expand

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A valid manifest, where it came from, and the host path of its weights (if checked)."""

    manifest: ModelManifest
    file: str
    document: int
    weights: Path | None  # resolved host path under a model root; None for hub references and
    # when no roots were given
    created: int = 0  # the manifest file's modification time (OpenAI's `created` in /v1/models)
    # ``env`` with its ${NAME} references filled in (envrefs.py); None: not filled (the manifest's
    # values as written). Secrets may be in it: kept out of repr.
    filled_env: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """The engine's extra environment, references filled in when the loader did so."""
        if self.filled_env is not None:
            return self.filled_env
        return tuple(self.manifest.env.items())

    @property
    def hub(self) -> str | None:
        """'org/repo[:quant]' when the engine downloads the weights itself."""
        return hub_reference(self.manifest.model)

    @property
    def name(self) -> str:
        return self.manifest.resolved_name


def load_folder(
    path: Path, *, model_roots: Sequence[Path] | None = None, environ: Mapping[str, str] | None = None
) -> list[LoadedModel]:
    """Load every manifest under ``path`` (a folder or one file).

    Returns the models sorted by name. Raises InvalidManifests with every problem found.
    ``model_roots`` given: weights must exist under one of them (else an error names the field).
    ``${NAME}`` references in ``env`` are filled from ``environ`` (default: this process's).
    """
    errors: list[ManifestError] = []
    models: list[LoadedModel] = []
    environ = os.environ if environ is None else environ
    for file in manifest_files(path, errors):
        models.extend(load_file(file, errors, model_roots, environ))
    check_unique_names(models, errors)
    if errors:
        raise InvalidManifests(errors)
    return sorted(models, key=lambda m: m.name)


def manifest_files(path: Path, errors: list[ManifestError]) -> list[Path]:
    """The manifest files at ``path``: itself if a file, else its *.yaml/*.yml/*.json, sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        errors.append(ManifestError("no such file or folder", file=str(path)))
        return []
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def load_file(
    file: Path,
    errors: list[ManifestError],
    model_roots: Sequence[Path] | None,
    environ: Mapping[str, str],
) -> list[LoadedModel]:
    """Validate each document of one file; append problems to ``errors``."""
    loaded: list[LoadedModel] = []
    try:
        documents = list(parse_documents(file))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        errors.append(ManifestError(yaml_problem(exc), file=str(file), line=yaml_line(exc)))
        return loaded
    for index, (node, data) in enumerate(documents, start=1):
        model = validate_document(file, index, node, data, errors)
        if model is None:
            continue
        weights = None
        if model_roots is not None and hub_reference(model.model) is None:
            weights = resolve_or_report(model, file, index, node, model_roots, errors)
        env = fill_env_or_report(model, file, index, node, environ, errors)
        loaded.append(LoadedModel(model, str(file), index, weights, modified_at(file), env))
    return loaded


def fill_env_or_report(
    model: ModelManifest,
    file: Path,
    index: int,
    node: yaml.Node,
    environ: Mapping[str, str],
    errors: list[ManifestError],
) -> tuple[tuple[str, str], ...]:
    """``model.env`` with its references filled; an error per value naming a variable not set."""
    filled = []
    for name, value in model.env.items():
        try:
            filled.append((name, expand(value, environ)))
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


def parse_documents(file: Path) -> Iterator[tuple[yaml.Node, Any]]:
    """Yield (node, data) for each non-empty document; nodes keep line numbers for errors."""
    loader = yaml.SafeLoader(file.read_text(encoding="utf-8"))
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not is_empty(node):
                yield node, loader.construct_document(node)
    finally:
        loader.dispose()


def is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def validate_document(
    file: Path, index: int, node: yaml.Node, data: Any, errors: list[ManifestError]
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
    """A pydantic error in the words a manifest author needs."""
    if err["type"] == "extra_forbidden":
        return "unknown field (check the spelling)"
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
                return key if isinstance(value, yaml.ScalarNode) and value.value == "" else value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


def resolve_or_report(
    model: ModelManifest,
    file: Path,
    index: int,
    node: yaml.Node,
    roots: Sequence[Path],
    errors: list[ManifestError],
) -> Path | None:
    try:
        return resolve_weights(model.model, roots)
    except ValueError as exc:
        errors.append(
            ManifestError(
                str(exc),
                file=str(file),
                document=index,
                field="model",
                line=line_of(node, ("model",)),
            )
        )
        return None


def resolve_weights(weights: str, roots: Sequence[Path]) -> Path:
    """The real host path of ``weights``, which must exist under one of ``roots``.

    Relative paths are tried against each root in order. Symlinks are resolved before the check, so
    a link inside a root cannot point outside it. Raises ValueError saying why not.
    """
    if not roots:
        raise ValueError("no model root is configured (set MODELCTL_MODEL_ROOTS)")
    candidates = [Path(weights)] if Path(weights).is_absolute() else [r / weights for r in roots]
    for candidate in candidates:
        if not candidate.exists():
            continue
        real = candidate.resolve()
        if any(real.is_relative_to(root.resolve()) for root in roots):
            return real
        raise ValueError(f"'{weights}' resolves to {real}, outside the model roots")
    shown = ", ".join(str(r) for r in roots)
    raise ValueError(f"weights '{weights}' not found under the model roots ({shown})")


def check_unique_names(models: list[LoadedModel], errors: list[ManifestError]) -> None:
    """Names and aliases must be unique across all models: a request must route to one model."""
    seen: dict[str, LoadedModel] = {}
    for model in models:
        for name in model.manifest.names:
            other = seen.setdefault(name, model)
            if other is not model:
                errors.append(
                    ManifestError(
                        f"name '{name}' is already used by {other.file} (document {other.document})",
                        file=model.file,
                        document=model.document,
                        field="name",
                    )
                )


def yaml_problem(exc: Exception) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        return f"invalid YAML: {exc.problem}"
    return f"cannot read: {exc}"


def yaml_line(exc: Exception) -> int | None:
    mark = getattr(exc, "problem_mark", None)
    return mark.line + 1 if mark is not None else None


def modified_at(file: Path) -> int:
    try:
        return int(file.stat().st_mtime)
    except OSError:
        return 0
