"""`modelctl pull PATH|MODEL`: pull hub weights into the hub cache ahead of time.

Every model naming ``hf://`` files (weights, draft, projector, adapters) in the manifests at PATH
(a folder or a file), or the one model named MODEL
(its name or an alias, in the manifests at ``--manifests``), is pulled as the controller would pull
it before its first start: the files its engine needs, into MODELCTL_HUB_CACHE (``--hub-cache``),
with progress. A model already cached is said so without a network call. For an air-gapped site,
pull on a connected machine and carry the cache folder over (or fill the compose volume
``modelctl-hub-cache`` from it): the controller serves what it finds there offline.
Exit status 0 when every model is in the cache, 1 when any pull failed (one line each on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from controller.errors import HubError, InvalidManifests
from controller.hub.cache import HubCache, describe, hub_refs
from controller.hub.pull import Puller, PullPlan
from controller.manifests.envrefs import EnvAllow
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.settings import ControllerSettings

POLL_S = 1.0  # between progress lines' checks
STEP = 10  # percent between progress lines


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pull = sub.add_parser(
        "pull",
        help="pull hf:// weights into the hub cache ahead of time",
        description="Pull the hf:// weights of every model in the manifests at PATH, or of the model "
        "named MODEL, into the hub cache, as the controller pulls them before a first start.",
    )
    pull.add_argument("target", metavar="PATH|MODEL", help="a manifests folder or file, or a model's name")
    pull.add_argument(
        "--manifests",
        type=Path,
        default=Path(os.environ.get("MODELCTL_MANIFESTS", "models")),
        help="where MODEL is looked up (MODELCTL_MANIFESTS, default ./models)",
    )
    pull.add_argument(
        "--hub-cache", type=Path, help="the cache folder (MODELCTL_HUB_CACHE, ~/.cache/modelctl/hub)"
    )
    pull.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace) -> int:
    settings = ControllerSettings.from_env(hub_cache=args.hub_cache)
    models = chosen(args.target, args.manifests, settings)
    if not models:
        print(f"nothing to pull: no hf:// models in {args.target}")
        return 0
    puller = Puller(HubCache(settings.hub_cache))
    failed = 0
    for model in models:
        failed += not pull_one(puller, model)
    return 1 if failed else 0


def chosen(target: str, manifests: Path, settings: ControllerSettings) -> list[LoadedModel]:
    """The hub models to pull: all at PATH, or the one named. Raises HubError or InvalidManifests."""
    path = Path(target)
    folder = path if path.exists() else manifests
    try:
        models = load_folder(folder, env_allow=EnvAllow.of(settings.manifest_env_allow))
    except InvalidManifests as exc:
        raise HubError(
            f"{folder}: {len(exc.errors)} manifest error(s); `modelctl validate {folder}` lists them"
        ) from exc
    hub = [m for m in models if hub_refs(m)]
    if path.exists():
        return hub
    named = [m for m in models if target in m.manifest.names]
    if not named:
        raise HubError(f"no model named '{target}' in {folder} (and no such file or folder)")
    if not hub or named[0] not in hub:
        raise HubError(f"model '{target}' ({named[0].file}) names no hf:// files to pull")
    return named[:1]


def pull_one(puller: Puller, model: LoadedModel) -> bool:
    """Pull one model, printing its progress; False (and one line on stderr) when it failed."""
    ref = describe(hub_refs(model))
    if puller.cached(model) is not None:
        print(f"{model.name}: {ref} is in the cache")
        return True
    plans: list[PullPlan] = []
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            puller.pull(model, on_plan=plans.append)
            outcome.append(None)
        except BaseException as exc:  # reported below, on the main thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name=f"pull {ref}", daemon=True)
    worker.start()
    shown = -STEP
    while worker.is_alive():
        worker.join(POLL_S)
        if plans:
            progress = puller.measure(*plans)
            if progress.percent >= shown + STEP or (progress.percent == 100 and shown < 100):
                shown = progress.percent
                print(f"{model.name}: {ref}: {progress.describe()}", flush=True)
    error = outcome[0] if outcome else RuntimeError("the pull ended without a result")
    if error is None:
        print(f"{model.name}: {ref} pulled into {puller.cache.root}")
        return True
    if not isinstance(error, HubError):
        error = HubError(f"{ref}: unexpected error: {type(error).__name__}: {error}")
    print(f"modelctl: pull: {model.name}: {error}", file=sys.stderr)
    return False
