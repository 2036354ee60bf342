"""`modelctl logs MODEL`: the engine output of every replica of a model (or of one), read from the
containers themselves, each under a header."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Protocol

from controller.errors import ModelctlError

if TYPE_CHECKING:
    from controller.runtime.observed import ObservedContainer


class LogSource(Protocol):
    """What `modelctl logs` reads: the managed containers and their output (runtime.docker)."""

    def list(self) -> list[ObservedContainer]: ...

    def logs(self, container_id: str, tail: int = 50) -> str: ...


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = sub.add_parser("logs", help="engine output of a model's replicas")
    logs.add_argument("model", help="the model's name (as in its manifest and `modelctl status`)")
    logs.add_argument(
        "--replica", type=int, metavar="N", help="only replica N (0, 1, ...); default: every replica"
    )
    logs.add_argument(
        "--tail", type=int, default=100, metavar="LINES", help="last LINES lines per container (default 100)"
    )
    logs.add_argument(
        "--instance",
        default=os.environ.get("MODELCTL_INSTANCE", "default"),
        help="the controller instance whose containers to read (MODELCTL_INSTANCE, default 'default')",
    )
    logs.set_defaults(func=cmd_logs)


def cmd_logs(args: argparse.Namespace) -> int:
    from controller.runtime.docker import DockerRuntime, connect

    runtime = DockerRuntime(connect(os.environ.get("DOCKER_HOST")), instance=args.instance, network="")
    print_logs(runtime, args.model, replica=args.replica, tail=args.tail, instance=args.instance)
    return 0


def print_logs(source: LogSource, model: str, *, replica: int | None, tail: int, instance: str) -> None:
    """Print the output of every container of ``model`` (or of one replica), each under a header,
    by replica, oldest container first. Raises ModelctlError naming what exists when nothing matches."""
    containers = source.list()
    known = sorted({c.model for c in containers})
    mine = [c for c in containers if c.model == model]
    if not mine:
        raise ModelctlError(
            f"no model {model} (known: {', '.join(known) or 'none'}; controller instance {instance})"
        )
    found = [c for c in mine if replica is None or c.replica == replica]
    if not found:
        replicas = ", ".join(str(r) for r in sorted({c.replica for c in mine}))
        raise ModelctlError(f"no replica {replica} of {model} (replicas: {replicas})")
    for container in sorted(found, key=lambda c: (c.replica, c.started_at)):
        print(f"==> {model} replica {container.replica}: {container.name} ({container.state}) <==")
        text = source.logs(container.id, tail=tail)
        print(text, end="" if text.endswith("\n") or not text else "\n", flush=True)
