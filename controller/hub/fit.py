"""Whether a model's pulled hub files fit its weights, checked before any replica of it starts.

The manifest loader checks the files beside the weights (an adapter for another base, a projector
of another width, a draft of another vocabulary: ``controller.weights.compat``) while it loads, but
only the local ones: a hub reference (``hf://``) is in no folder until the controller pulls it,
and hub weights are not here either. Unchecked, an adapter of another architecture pulled from the
Hub failed only inside the engine: a replica that never became ready, restarted with backoff.

So the load goes on here once the hub cache holds every hub file a model names (``HubCache.resolve``
gave it their paths): the same check runs on the resolved files (pulled weights with local or
pulled files beside them, local weights with pulled ones), and a misfit is a located manifest
error (``check_found``: file:line, field, the reference and the pulled file). The load then
fails as for any invalid manifest: the reconciler keeps the last good set, in which the model
still waits for its files, so no replica of it is created and the replicas of an older version
keep serving. The check reads headers once per version of the files (compat's cache).

The check is handed in (``FilesCheck``): reading weight files is ``controller.weights``', a
package beside this one.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.manifests.loader import FileProblem, FilesCheck, check_found
from controller.manifests.model import LoadedModel
from controller.manifests.rules import hub_reference


def check_pulled(models: Iterable[LoadedModel], check: FilesCheck) -> None:
    """``check`` (``controller.weights.compat.check_files``) on every model of ``models`` whose hub
    files are all pulled (``pulled`` set: its weights and files where the controller reads them).
    Raises InvalidManifests with one located error per problem, naming the hub reference it was
    pulled from."""
    pulled = [model for model in models if model.pulled is not None]
    check_found(pulled, lambda model: named(model, check(model)))


def named(model: LoadedModel, problems: Iterable[FileProblem]) -> list[FileProblem]:
    """``problems``, each saying which hub reference its file, or the weights, came from."""
    return [(loc, f"{pulled_from(model, loc)}{message}") for loc, message in problems]


def pulled_from(model: LoadedModel, loc: tuple[str | int, ...]) -> str:
    """'hf://org/repo, pulled: ' for a problem with a field naming a hub reference; the weights'
    reference when they are one and the field is not; '' otherwise."""
    value = field_value(model, loc)
    if value is not None and hub_reference(value) is not None:
        return f"{value}, pulled: "
    if model.hub is not None:
        return f"with the weights {model.manifest.model}, pulled: "
    return ""


def field_value(model: LoadedModel, loc: tuple[str | int, ...]) -> str | None:
    """The manifest's value at ``loc`` (``mmproj``, ``draft``, ``adapters.N.path``), if it is one
    of those."""
    manifest = model.manifest
    if loc == ("mmproj",):
        return manifest.mmproj
    if loc == ("draft",):
        return manifest.draft
    if len(loc) == 3 and loc[0] == "adapters" and isinstance(loc[1], int) and loc[1] < len(manifest.adapters):
        return manifest.adapters[loc[1]].path
    return None
