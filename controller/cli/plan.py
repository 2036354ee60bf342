"""`modelctl plan PATH`: which replica would get which GPUs, and why the rest would wait, against
this machine's GPUs or a saved inventory; nothing is started. Hub models already in the hub cache
(``modelctl pull``) are sized from their pulled files, and those files checked against the
weights. With ``--diff``, what applying PATH would start, stop, roll or leave Pending against
what the controller runs (exit 0 no change, 2 changes, 1 errors), decided by the controller
itself (POST /v1/plan).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.cli import client
from controller.cli.render import replica_range, report_invalid
from controller.errors import InvalidManifests, ModelctlError
from controller.hub.fit import check_pulled
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.weights.compat import check_files
from controller.weights.task import detect_task

if TYPE_CHECKING:
    from controller.placement.memory import MemoryEstimate


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = sub.add_parser("plan", help="place manifests on the GPUs (nothing is started)")
    plan.add_argument("path", type=Path)
    plan.add_argument(
        "--inventory", type=Path, help="a saved inventory (modelctl gpus --json) instead of NVML"
    )
    plan.add_argument("--model-root", action="append", type=Path, help="where weights are (for sizes)")
    plan.add_argument(
        "--hub-cache",
        type=Path,
        help="where pulled hf:// files are, for their sizes (MODELCTL_HUB_CACHE, ~/.cache/modelctl/hub)",
    )
    plan.add_argument("--json", action="store_true")
    plan.add_argument(
        "--diff",
        action="store_true",
        help="against what the controller runs: exit 0 when nothing would change, 2 when something would",
    )
    plan.add_argument(
        "--controller-url",
        default=client.default_url(),
        help=f"with --diff: the controller's API (MODELCTL_CONTROLLER_URL, default {client.DEFAULT_API})",
    )
    plan.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    if args.diff:
        return cmd_plan_diff(args)
    from controller.gpus.inventory import Inventory
    from controller.gpus.nvml import read_inventory
    from controller.placement.place import place, requests_for
    from controller.placement.report import estimates_table, plan_json, plan_table
    from controller.settings import ControllerSettings

    roots = [p.absolute() for p in args.model_root] if args.model_root else None
    try:
        models = load_folder(args.path, model_roots=roots, check_files=check_files, detect_task=detect_task)
        models = ControllerSettings.from_env(hub_cache=args.hub_cache).hub.resolve(models)  # pulled: sized
        check_pulled(models, check_files)  # and checked against the weights, as the controller does
        inventory = Inventory.from_json(args.inventory.read_text()) if args.inventory else read_inventory()
    except InvalidManifests as exc:
        return report_invalid(exc, args.path)
    except (OSError, ValueError) as exc:
        raise ModelctlError(f"cannot read the inventory {args.inventory}: {exc}") from exc
    requests, pending = requests_for(models)
    placement = place(requests, inventory)
    estimates = estimates_of(models)
    if args.json:
        print(plan_json(placement, pending=pending, estimates=estimates))
        return 0
    print(plan_table(placement, pending=pending))
    if estimates:
        print("\nMemory of one replica, estimated from its files:\n" + estimates_table(estimates))
    for model in models:
        if not model.manifest.num_gpus:
            count = replica_range(model.manifest)
            print(
                f"{model.name}: {count} replica(s) on the CPU (num_gpus: 0), "
                "placed against the host's memory and cores"
            )
    return 0


def estimates_of(models: list[LoadedModel]) -> dict[str, MemoryEstimate]:
    """Each model's memory by part, as placement counts it (a GPU replica's, or a CPU replica's
    in host memory), for the models placed from their files: not those whose manifest sets
    ``gpu_memory``, nor those that cannot be sized (their Pending reason says why)."""
    from controller.placement.memory import estimate, host_estimate
    from controller.weights.info import EstimateError

    found = {}
    for model in models:
        if model.manifest.gpu_memory is not None or model.readable_weights is None:
            continue
        try:
            found[model.name] = estimate(model) if model.manifest.num_gpus else host_estimate(model)
        except EstimateError:
            continue
    return found


class AnyVariable(dict[str, str]):
    """An environment with every variable set: ``${NAME}``s are the controller's to fill."""

    def __contains__(self, name: object) -> bool:
        return True

    def __missing__(self, name: str) -> str:
        return ""


def cmd_plan_diff(args: argparse.Namespace) -> int:
    """Check PATH here (not the weights: those are the controller's to find), then ask the
    controller what applying it would change. Exit 0: nothing; 2: something; 1: errors."""
    from controller.manifests.loader import manifest_files

    if args.inventory or args.model_root:
        raise ModelctlError(
            "--diff uses the controller's GPUs and model roots: leave out --inventory, --model-root"
        )
    try:
        load_folder(args.path, environ=AnyVariable())
    except InvalidManifests as exc:
        return report_invalid(exc, args.path)
    files = manifest_files(args.path, [])
    shown = {str(f.relative_to(args.path)) if args.path.is_dir() else f.name: str(f) for f in files}
    body = {"files": {name: Path(file).read_text(encoding="utf-8") for name, file in shown.items()}}
    url = args.controller_url.rstrip("/") + "/v1/plan"
    payload = dict(client.post_json(url, body, timeout=60, accept=(422,)))  # 422: manifest errors
    errors = [located(error, shown) for error in payload.get("errors", [])]
    if args.json:
        print(json.dumps({**payload, "errors": errors}, indent=2))
    elif errors:
        print("\n".join(errors), file=sys.stderr)
        print(f"{len(errors)} error(s) in {args.path}, found by the controller", file=sys.stderr)
    else:
        print_plan(payload.get("rows", []))
    return 1 if errors else 2 if payload.get("changes") else 0


def located(error: str, shown: dict[str, str]) -> str:
    """A controller's error about a posted file, naming the file as the user gave it."""
    for name, path in shown.items():
        if error.startswith((f"{name}:", f"{name} ")):
            return path + error[len(name) :]
    return error


def print_plan(rows: list[dict[str, Any]]) -> None:
    """Each change's line (kept replicas are only in --json), then terraform's summary line."""
    from controller.reconcile.preview import summary

    for row in rows:
        if row["action"] != "keep":
            print(row["line"])
    print(summary([r["action"] for r in rows]))
