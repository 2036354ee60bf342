"""`modelctl gpus`: the GPUs NVML reports, static facts and live usage (``--json``: a saved
inventory that `modelctl plan --inventory` reads back)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gpus = sub.add_parser("gpus", help="the GPUs NVML reports (static facts and live usage)")
    gpus.add_argument("--json", action="store_true")
    gpus.set_defaults(func=cmd_gpus)


def cmd_gpus(args: argparse.Namespace) -> int:
    from controller.gpus.nvml import read_inventory
    from controller.placement.report import gpus_json, gpus_table

    inventory = read_inventory()
    print(gpus_json(inventory) if args.json else gpus_table(inventory))
    return 0
