"""A controller API over a real Reconciler for the hostile-input tests of ``controller.api``.

The reconciler is the real one (its demand board, scaler, preview), over a runtime that runs
nothing: no container is ever listed, so reading what runs costs nothing and nothing is started.
Its manifests are a real folder loaded by the real loader, with a model root of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.api import create_api
from controller.endpoints.store import EndpointStore
from controller.gpus.inventory import Inventory
from controller.manifests.loader import load_folder
from controller.reconcile.demand import DemandBoard
from controller.reconcile.drain import Drainer
from controller.reconcile.loop import Reconciler
from controller.reconcile.ondemand import OnDemand
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

NOW = 1796170000.0  # the controller's wall clock in these tests (2026-12)
MODELS = """\
name: smollm2
aliases: [smollm]
model: hf://org/smollm2:Q4
gpu_memory: 1GiB
env: {HF_TOKEN: "${HF_TOKEN}"}
"""


class IdleRuntime:
    """Shaped like DockerRuntime for the calls the API's routes make: nothing runs, nothing starts."""

    instance = "default"
    hash_key = b"idle-runtime-spec-hash-key"

    def __init__(self) -> None:
        self.ids = itertools.count()

    def list(self) -> list[ObservedContainer]:
        return []

    def start(self, spec: ContainerSpec) -> str:
        return f"c{next(self.ids)}"

    def remove(self, container_id: str, *, graceful: bool = True) -> None:
        return None

    def logs(self, container_id: str, tail: int = 50) -> str:
        return ""

    def host_pids(self, container_id: str) -> tuple[int, ...]:
        return ()


class NoProber:
    async def ready(self, url: str) -> bool:
        return False

    async def fetch(self, url: str) -> str | None:
        return None


@dataclass
class ControllerApi:
    """The API's application, the reconciler behind it, and its model roots."""

    app: web.Application
    reconciler: Reconciler
    store: EndpointStore
    root: Path
    clock: list[float]

    @property
    def board(self) -> DemandBoard:
        return self.reconciler.on_demand.demand


def controller_api(tmp: Path, manifests: str = MODELS, **options: Any) -> ControllerApi:
    """A controller API whose manifests (``manifests``, one file) are loaded already; ``options``
    go to ``create_api`` (hosts, keys_file, metrics_require_key)."""
    folder, root = tmp / "models", tmp / "models-data"
    folder.mkdir(parents=True)
    root.mkdir()
    (folder / "models.yaml").write_text(manifests)
    clock = [NOW]
    wall: Callable[[], float] = lambda: clock[0]  # noqa: E731
    runtime, prober = IdleRuntime(), NoProber()
    reconciler = Reconciler(
        runtime=runtime,  # type: ignore[arg-type]
        load_models=partial(load_folder, folder, model_roots=(root,)),
        store=EndpointStore(),
        prober=prober,  # type: ignore[arg-type]
        drainer=Drainer(runtime, prober.fetch, settle_s=0, poll_s=0),  # type: ignore[arg-type]
        read_inventory=Inventory,
        wall_clock=wall,
        on_demand=OnDemand(demand=DemandBoard(clock=wall)),
    )
    reconciler.refresh_models()
    assert not reconciler.manifest_errors, reconciler.manifest_errors
    app = create_api(
        reconciler.store, reconciler.reports, reconciler.controls(), model_roots=(root,), **options
    )
    return ControllerApi(app, reconciler, reconciler.store, root, clock)
