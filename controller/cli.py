"""The `modelctl` command line: thin parsing around the composition root in ``controller.app``.

    modelctl serve        controller + gateway in one process (development, single host)
    modelctl controller   the control plane alone (compose: needs the Docker socket)
    modelctl gateway      the data plane alone (compose: no Docker socket)
    modelctl validate     check manifests; exit 1 with every error
    modelctl gpus         the GPUs NVML reports: static facts and live usage
    modelctl plan PATH    which replica would get which GPUs, and why the rest would wait
    modelctl plan PATH --diff   what applying PATH would start, stop, roll or leave Pending, against
                          what the controller runs; exit 0 no change, 2 changes, 1 errors
    modelctl status       every model and replica: state, endpoint, restarts, age, last reason;
                          exit 1 when the controller reports manifest errors or failing replicas
    modelctl logs MODEL   the engine output of every replica of MODEL (or one: --replica N)
    modelctl down         remove every container modelctl started, and nothing else
    modelctl render kubernetes PATH   the manifests as Kubernetes YAML (docs/kubernetes.md)

Users see one line per error, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from controller.errors import InvalidManifests, ModelctlError
from controller.gateway import GatewaySettings, SettingsError, run_gateway
from controller.kubernetes import command as render_kubernetes
from controller.manifests.document import ModelManifest
from controller.manifests.loader import load_folder
from controller.reconcile.states import ReplicaState
from controller.reconcile.status import render_table
from controller.settings import ControllerSettings

if TYPE_CHECKING:
    from controller.runtime.observed import ObservedContainer

DESCRIPTION = (
    "Run LLM inference servers (vLLM, llama.cpp) from declarative YAML manifests, behind one "
    "OpenAI-compatible endpoint. Start here: `modelctl status` (what runs), `modelctl plan PATH --diff` "
    "(what a change would do), `modelctl validate PATH`."
)
DEFAULT_API = "http://127.0.0.1:8081"
# Replica states that make `modelctl status` exit 1: cannot be placed, or crashed and restarting.
FAILING_STATES = (ReplicaState.PENDING, ReplicaState.BACKING_OFF)


class LogSource(Protocol):
    """What `modelctl logs` reads: the managed containers and their output (runtime.docker)."""

    def list(self) -> list[ObservedContainer]: ...

    def logs(self, container_id: str, tail: int = 50) -> str: ...


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
    root = argparse.ArgumentParser(prog="modelctl", description=DESCRIPTION)
    sub = root.add_subparsers(required=True, metavar="COMMAND")
    add_controller_args(sub.add_parser("controller", help="run the control plane"), cmd_controller)
    serve = sub.add_parser("serve", help="run controller and gateway in one process")
    add_controller_args(serve, cmd_serve)
    add_gateway_args(serve)
    gateway = sub.add_parser("gateway", help="run the OpenAI-compatible gateway")
    add_gateway_args(gateway)
    gateway.add_argument("--controller-url", help="the controller's API (MODELCTL_CONTROLLER_URL)")
    gateway.set_defaults(func=cmd_gateway)
    validate = sub.add_parser("validate", help="check manifests; exit 1 listing every error")
    validate.add_argument("path", type=Path)
    validate.add_argument("--model-root", action="append", type=Path, help="also check weights exist")
    validate.set_defaults(func=cmd_validate)
    gpus = sub.add_parser("gpus", help="the GPUs NVML reports (static facts and live usage)")
    gpus.add_argument("--json", action="store_true")
    gpus.set_defaults(func=cmd_gpus)
    plan = sub.add_parser("plan", help="place manifests on the GPUs (nothing is started)")
    plan.add_argument("path", type=Path)
    plan.add_argument(
        "--inventory", type=Path, help="a saved inventory (modelctl gpus --json) instead of NVML"
    )
    plan.add_argument("--model-root", action="append", type=Path, help="where weights are (for sizes)")
    plan.add_argument("--json", action="store_true")
    plan.add_argument(
        "--diff",
        action="store_true",
        help="against what the controller runs: exit 0 when nothing would change, 2 when something would",
    )
    plan.add_argument(
        "--controller-url",
        default=os.environ.get("MODELCTL_CONTROLLER_URL", DEFAULT_API),
        help=f"with --diff: the controller's API (MODELCTL_CONTROLLER_URL, default {DEFAULT_API})",
    )
    plan.set_defaults(func=cmd_plan)
    status = sub.add_parser(
        "status",
        help="models and replicas as the controller sees them",
        description="Models and replicas as the controller sees them. Exit status 1 when the "
        f"controller reports manifest errors or replicas in {' or '.join(FAILING_STATES)}.",
    )
    status.add_argument(
        "--controller-url",
        default=os.environ.get("MODELCTL_CONTROLLER_URL", DEFAULT_API),
        help=f"the controller's API (MODELCTL_CONTROLLER_URL, default {DEFAULT_API})",
    )
    status.add_argument("--json", action="store_true", help="the raw JSON")
    status.set_defaults(func=cmd_status)
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
    down = sub.add_parser("down", help="remove every container modelctl started")
    down.add_argument("--instance", help="only this controller instance's containers")
    down.set_defaults(func=cmd_down)
    render_kubernetes.add_parser(sub)
    return root


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


def cmd_validate(args: argparse.Namespace) -> int:
    roots = [p.absolute() for p in args.model_root] if args.model_root else None
    try:
        models = load_folder(args.path, model_roots=roots)
    except InvalidManifests as exc:
        return report_invalid(exc, args.path)
    for model in models:
        m = model.manifest
        print(
            f"ok  {model.name:<24} {m.engine:<9} replicas={replica_range(m)} num_gpus={m.num_gpus}"
            f"  {model.file}"
        )
    return 0


def cmd_gpus(args: argparse.Namespace) -> int:
    from controller.placement.inventory import read_inventory
    from controller.placement.report import gpus_json, gpus_table

    inventory = read_inventory()
    print(gpus_json(inventory) if args.json else gpus_table(inventory))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    if args.diff:
        return cmd_plan_diff(args)
    from controller.placement.inventory import Inventory, read_inventory
    from controller.placement.place import place, requests_for
    from controller.placement.report import plan_json, plan_table

    roots = [p.absolute() for p in args.model_root] if args.model_root else None
    try:
        models = load_folder(args.path, model_roots=roots)
        inventory = Inventory.from_json(args.inventory.read_text()) if args.inventory else read_inventory()
    except InvalidManifests as exc:
        return report_invalid(exc, args.path)
    except (OSError, ValueError) as exc:
        raise ModelctlError(f"cannot read the inventory {args.inventory}: {exc}") from exc
    requests, pending = requests_for(models)
    placement = place(requests, inventory)
    render = plan_json if args.json else plan_table
    print(render(placement, pending=pending))
    if not args.json:
        for model in models:
            if not model.manifest.num_gpus:
                count = replica_range(model.manifest)
                print(
                    f"{model.name}: {count} replica(s) on the CPU (num_gpus: 0), "
                    "placed against the host's memory and cores"
                )
    return 0


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
    payload = post_plan(args.controller_url.rstrip("/") + "/v1/plan", body)
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


def post_plan(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the files to /v1/plan; the answer's JSON (a 422's too: it lists manifest errors).
    Raises ModelctlError naming the URL when the controller cannot be reached or refuses."""
    headers = {"Content-Type": "application/json", **controller_key_header()}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            payload = json.loads(answer)
            if exc.code == 422 and isinstance(payload, dict):
                return payload
            answer = payload.get("error", answer) if isinstance(payload, dict) else answer
        raise ModelctlError(f"the controller at {url} answered {exc.code}: {answer}") from exc
    except (OSError, ValueError) as exc:
        reason = f"{exc} (is it running? `make up`)"
        raise ModelctlError(f"cannot reach the controller at {url}: {reason}") from exc


def replica_range(manifest: ModelManifest) -> str:
    """'2' for a fixed count, '0-2' for a model scaled on demand."""
    if manifest.on_demand:
        return f"{manifest.min_count}-{manifest.max_count}"
    return str(manifest.min_count)


def report_invalid(exc: InvalidManifests, path: Path) -> int:
    for error in exc.errors:
        print(error, file=sys.stderr)
    print(f"{len(exc.errors)} error(s) in {path}", file=sys.stderr)
    return 1


def controller_key_header() -> dict[str, str]:
    """The Authorization header for a controller whose API wants keys (MODELCTL_CONTROLLER_KEY)."""
    key = os.environ.get("MODELCTL_CONTROLLER_KEY", "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def cmd_status(args: argparse.Namespace) -> int:
    url = args.controller_url.rstrip("/") + "/v1/status"
    try:
        request = urllib.request.Request(url, headers=controller_key_header())
        with urllib.request.urlopen(request, timeout=5) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            payload = json.loads(answer)
            answer = str(payload.get("error", answer)) if isinstance(payload, dict) else answer
        hint = " (set MODELCTL_CONTROLLER_KEY)" if exc.code == 401 else ""
        raise ModelctlError(f"the controller at {url} answered {exc.code}: {answer}{hint}") from exc
    except (OSError, ValueError) as exc:
        raise ModelctlError(
            f"cannot read status from the controller at {url}: {exc} (is it running? `make up`)"
        ) from exc
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


def cmd_down(args: argparse.Namespace) -> int:
    from controller.runtime.docker import connect, remove_all, remove_unused_networks

    client = connect(os.environ.get("DOCKER_HOST"))
    removed = remove_all(client, args.instance)
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} container(s) removed")
    for name in remove_unused_networks(client):
        print(f"removed network {name}")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
