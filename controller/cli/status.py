"""`modelctl status`: every model and replica as the controller sees them (state, endpoint,
restarts, age, last reason); exit 1 when the controller reports manifest errors or failing
replicas, so scripts can wait on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from controller.cli import client
from controller.cli.render import render_table
from controller.reconcile.states import ReplicaState

# Replica states that make `modelctl status` exit 1: cannot be placed, or crashed and restarting.
FAILING_STATES = (ReplicaState.PENDING, ReplicaState.BACKING_OFF)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status",
        help="models and replicas as the controller sees them",
        description="Models and replicas as the controller sees them. Exit status 1 when the "
        f"controller reports manifest errors or replicas in {' or '.join(FAILING_STATES)}.",
    )
    status.add_argument(
        "--controller-url",
        default=client.default_url(),
        help=f"the controller's API (MODELCTL_CONTROLLER_URL, default {client.DEFAULT_API})",
    )
    status.add_argument("--json", action="store_true", help="the raw JSON")
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    url = args.controller_url.rstrip("/") + "/v1/status"
    payload = client.get_json(url, timeout=5, doing="read status from")
    print(json.dumps(payload, indent=2) if args.json else render_table(payload))
    problems = status_problems(payload)
    if problems:
        print(f"modelctl: status: {problems}", file=sys.stderr)
        return 1
    return 0


def status_problems(payload: dict[str, Any]) -> str:
    """What makes a status answer an exit 1, in words ("" when nothing): manifest errors, and
    replicas that cannot be placed or keep crashing."""
    problems = []
    errors = len(payload.get("manifest_errors") or [])
    if errors:
        problems.append(f"{errors} manifest error(s)")
    for state in FAILING_STATES:
        count = sum(1 for r in payload.get("replicas", []) if r.get("state") == state)
        if count:
            problems.append(f"{count} replica(s) {state}")
    return ", ".join(problems)
