"""`modelctl controller`, `modelctl gateway`, `modelctl serve`: the long-running processes, each
until SIGTERM or SIGINT. Flags over MODELCTL_* variables over defaults; the composition root
(``controller.app``) builds the controller, ``controller.gateway`` the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from controller.errors import ModelctlError
from controller.gateway import GatewaySettings, SettingsError, run_gateway
from controller.settings import ControllerSettings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `controller`, `serve` and `gateway` to the CLI's subcommands."""
    add_controller_args(sub.add_parser("controller", help="run the control plane"), cmd_controller)
    serve = sub.add_parser("serve", help="run controller and gateway in one process")
    add_controller_args(serve, cmd_serve)
    add_gateway_args(serve)
    gateway = sub.add_parser("gateway", help="run the OpenAI-compatible gateway")
    add_gateway_args(gateway)
    gateway.add_argument("--controller-url", help="the controller's API (MODELCTL_CONTROLLER_URL)")
    gateway.set_defaults(func=cmd_gateway)


def add_controller_args(p: argparse.ArgumentParser, func: Any) -> None:
    p.add_argument("--manifests", type=Path, help="manifest folder or file (MODELCTL_MANIFESTS)")
    p.add_argument("--model-root", action="append", type=Path, help="allowed weights folder, repeatable")
    p.add_argument("--instance", help="controller instance name (MODELCTL_INSTANCE)")
    p.add_argument("--network", help="Docker network for replicas (MODELCTL_NETWORK)")
    p.add_argument("--api-host", help="internal API address (MODELCTL_API_HOST)")
    p.add_argument("--api-port", type=int, help="internal API port (MODELCTL_API_PORT)")
    p.set_defaults(func=func)


def add_gateway_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (MODELCTL_GATEWAY_HOST, default 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (MODELCTL_GATEWAY_PORT, default 8080)")
    p.add_argument("--workers", type=int, help="processes on the port (MODELCTL_GATEWAY_WORKERS)")
    p.add_argument("--api-keys-file", help="bearer keys, one per line (MODELCTL_API_KEYS_FILE); none: open")


def gateway_settings(args: argparse.Namespace, **overrides: object) -> GatewaySettings:
    """Flags over MODELCTL_* variables over defaults; one clear error for a bad value."""
    env = dict(os.environ)
    if args.api_keys_file:
        env["MODELCTL_API_KEYS_FILE"] = args.api_keys_file
    try:
        return GatewaySettings.from_env(
            env, host=args.host, port=args.port, workers=args.workers, **overrides
        )
    except SettingsError as exc:
        raise ModelctlError(f"gateway settings: {exc}") from exc


def controller_settings(args: argparse.Namespace) -> ControllerSettings:
    roots = tuple(p.absolute() for p in args.model_root) if args.model_root else None
    return ControllerSettings.from_env(
        manifests=args.manifests,
        model_roots=roots,
        instance=args.instance,
        network=args.network,
        api_host=args.api_host,
        api_port=args.api_port,
    )


def cmd_controller(args: argparse.Namespace) -> int:
    from controller.app import run_controller

    return run_until_signal(run_controller(controller_settings(args)))


def cmd_serve(args: argparse.Namespace) -> int:
    from controller.app import run_controller

    return run_until_signal(run_controller(controller_settings(args), gateway=gateway_settings(args)))


def cmd_gateway(args: argparse.Namespace) -> int:
    return run_until_signal(run_gateway(gateway_settings(args, controller_url=args.controller_url)))


def run_until_signal(main_coro: Coroutine[Any, Any, None]) -> int:
    """Run a long-lived coroutine; SIGTERM and SIGINT stop it cleanly (exit 0)."""

    async def runner() -> None:
        task = asyncio.ensure_future(main_coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    return 0
