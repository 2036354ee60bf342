"""`modelctl pull PATH|MODEL`: pull hub weights into the hub cache ahead of time.

Every model naming ``hf://`` files (weights, draft, projector, adapters) in the manifests at PATH
(a folder or a file), or the one model named MODEL
(its name or an alias, in the manifests at ``--manifests``), is pulled as the controller would pull
it before its first start: the files its engine needs, into MODELCTL_HUB_CACHE (``--hub-cache``),
with progress. A model already cached is said so without a network call. For an air-gapped site,
pull on a connected machine and carry the cache folder over (or fill the compose volume
``modelctl-hub-cache`` from it): the controller serves what it finds there offline.
Exit status 0 when every model is in the cache, 1 when any pull failed (one line each on stderr).

`modelctl pull --ref ROLE=hf://org/repo[:TAG] ... --engine ENGINE` pulls files beside the weights
with no manifest at hand: what a Kubernetes pod's initContainer runs (``controller.kubernetes.
hubfiles``). ROLE is ``draft``, ``mmproj`` or ``adapter:NAME``; the files are chosen as for a
manifest naming the same reference for that engine (``controller.hub.select``), and each is linked
where its reference alone names it (``HubRef.link``), which the rendered engine flags name. The
Hub token is the process's ``HF_TOKEN`` (the pod's, from its Secret), never an argument.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from controller.errors import HubError, InvalidManifests
from controller.hub.cache import WEIGHTS, HubCache, HubRef, describe, hub_refs, kind_of
from controller.hub.pull import TOKEN_VARS, Puller, PullPlan
from controller.manifests.engines import ENGINE_NAMES, VLLM
from controller.manifests.envrefs import EnvAllow
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.manifests.rules import HUB_PATTERN
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
    pull.add_argument(
        "target", nargs="?", metavar="PATH|MODEL", help="a manifests folder or file, or a model's name"
    )
    pull.add_argument(
        "--manifests",
        type=Path,
        default=Path(os.environ.get("MODELCTL_MANIFESTS", "models")),
        help="where MODEL is looked up (MODELCTL_MANIFESTS, default ./models)",
    )
    pull.add_argument(
        "--hub-cache", type=Path, help="the cache folder (MODELCTL_HUB_CACHE, ~/.cache/modelctl/hub)"
    )
    pull.add_argument(
        "--ref",
        action="append",
        default=[],
        metavar="ROLE=hf://org/repo[:TAG]",
        help="instead of PATH|MODEL: a file beside the weights (ROLE draft, mmproj or adapter:NAME), "
        "pulled for --engine and linked at a place its reference names (Kubernetes' initContainer)",
    )
    pull.add_argument("--engine", choices=ENGINE_NAMES, help="the engine the --ref files are for")
    pull.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace) -> int:
    # The HTTP client's request lines would print the CDN's signed URLs (download.py never logs them).
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    settings = ControllerSettings.from_env(hub_cache=args.hub_cache)
    if args.ref or args.engine:
        if args.target is not None:
            raise HubError("give PATH|MODEL or --ref, not both")
        return pull_refs(Puller(HubCache(settings.hub_cache)), parse_refs(args.ref, args.engine))
    if args.target is None:
        raise HubError("nothing to pull: give PATH|MODEL, or --ref ROLE=hf://org/repo with --engine")
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
    return watched(puller, model.name, ref, lambda on_plan: puller.pull(model, on_plan=on_plan))


def parse_refs(values: list[str], engine: str | None) -> tuple[tuple[str, HubRef], ...]:
    """``--ref ROLE=hf://...`` values as (role, reference) for ``engine``. Raises HubError naming
    the value that is not one."""
    if engine is None or not values:
        raise HubError("--ref and --engine go together: --ref ROLE=hf://org/repo[:TAG] --engine ENGINE")
    refs = []
    for value in values:
        role, _, reference = value.partition("=")
        kind = kind_of(role)
        if kind is None or kind == WEIGHTS:
            raise HubError(
                f"--ref {value}: ROLE is draft, mmproj or adapter:NAME (the engine pulls its weights)"
            )
        if kind == "mmproj" and engine == VLLM:
            raise HubError(f"--ref {value}: vLLM takes no projector file")
        ref = HubRef.parse(reference, engine, kind) if HUB_PATTERN.match(reference) else None
        if ref is None:
            raise HubError(f"--ref {value}: not a hub reference (hf://org/repo[:TAG])")
        refs.append((role, ref))
    return tuple(refs)


def pull_refs(puller: Puller, refs: tuple[tuple[str, HubRef], ...]) -> int:
    """Pull ``refs`` (the token: the process's HF_TOKEN), then link each at its ``HubRef.link``;
    0, or 1 with one line on stderr when the pull or a link failed."""
    label, token = describe(refs), next((os.environ[n] for n in TOKEN_VARS if os.environ.get(n)), None)
    if all(puller.cache.find(ref) is not None for _, ref in refs):
        print(f"{label} is in the cache")
    elif not watched(
        puller, "pull", label, lambda on_plan: puller.pull_refs([r for _, r in refs], token, on_plan=on_plan)
    ):
        return 1
    try:
        for role, ref in refs:
            print(f"{role}: {ref} at {puller.cache.write_link(ref)}")
    except (HubError, OSError) as exc:
        print(f"modelctl: pull: {exc}", file=sys.stderr)
        return 1
    return 0


def watched(puller: Puller, name: str, ref: str, job: Callable[[Callable[[PullPlan], None]], object]) -> bool:
    """Run ``job`` (a pull, handed the callback that hears its plans) on a thread, printing its
    progress as ``name: ref: ...``; False (and one line on stderr) when it failed."""
    plans: list[PullPlan] = []
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            job(plans.append)
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
                print(f"{name}: {ref}: {progress.describe()}", flush=True)
    error = outcome[0] if outcome else RuntimeError("the pull ended without a result")
    if error is None:
        print(f"{name}: {ref} pulled into {puller.cache.root}")
        return True
    if not isinstance(error, HubError):
        error = HubError(f"{ref}: unexpected error: {type(error).__name__}: {error}")
    print(f"modelctl: pull: {name}: {error}", file=sys.stderr)
    return False
