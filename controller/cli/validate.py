"""`modelctl validate PATH`: check manifests as the controller would load them; one line per model,
or every error (file:line, field) and exit 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.cli.render import replica_range, report_invalid
from controller.errors import InvalidManifests
from controller.manifests.loader import load_folder
from controller.weights.compat import check_files
from controller.weights.task import detect_task


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser("validate", help="check manifests; exit 1 listing every error")
    validate.add_argument("path", type=Path)
    validate.add_argument("--model-root", action="append", type=Path, help="also check weights exist")
    validate.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    roots = [p.absolute() for p in args.model_root] if args.model_root else None
    try:
        models = load_folder(args.path, model_roots=roots, check_files=check_files, detect_task=detect_task)
    except InvalidManifests as exc:
        return report_invalid(exc, args.path)
    for model in models:
        m = model.manifest
        print(
            f"ok  {model.name:<24} {m.engine:<9} replicas={replica_range(m)} num_gpus={m.num_gpus}"
            f"  {model.file}"
        )
    return 0
