"""The `modelctl` command line: ``main`` parses the arguments, runs one command, and turns any
ModelctlError into one line on stderr (exit 1), never a traceback.

One module per concern adds its subcommands (``add_parser``) and runs them: ``serve`` (the
long-running processes: controller, gateway, both), ``validate``, ``plan``, ``status``, ``logs``,
``gpus``, ``down``, ``pull``; ``render`` draws what they print, ``client`` asks the controller's API.
`modelctl render kubernetes` is ``controller.kubernetes.command``'s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from controller.cli import down, gpus, logs, plan, pull, serve, status, validate
from controller.errors import ModelctlError
from controller.kubernetes import command as render_kubernetes

DESCRIPTION = (
    "Run LLM inference servers (vLLM, llama.cpp) from declarative YAML manifests, behind one "
    "OpenAI-compatible endpoint. Start here: `modelctl status` (what runs), `modelctl plan PATH --diff` "
    "(what a change would do), `modelctl validate PATH`."
)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MODELCTL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ModelctlError as exc:
        print(f"modelctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def parser() -> argparse.ArgumentParser:
    """Every subcommand, in the order `modelctl --help` lists them."""
    root = argparse.ArgumentParser(prog="modelctl", description=DESCRIPTION)
    sub = root.add_subparsers(required=True, metavar="COMMAND")
    serve.add_parser(sub)
    validate.add_parser(sub)
    gpus.add_parser(sub)
    plan.add_parser(sub)
    status.add_parser(sub)
    pull.add_parser(sub)
    logs.add_parser(sub)
    down.add_parser(sub)
    render_kubernetes.add_parser(sub)
    return root
