"""The reconciler: a level-based loop that makes Docker match the manifests, and publishes which
replicas are ready.

Each pass reads the manifests (keeping the last good set if they became invalid), lists the managed
containers by label, computes a plan (``controller.plan``), executes it (deletes before creates),
probes the live replicas' health and publishes the ready ones to the endpoint store. It trusts what
Docker reports over its own memory, so a restarted controller adopts what is running. Events (a
manifest change, a replica starting) only make the next pass come sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from controller.endpoint_store import EndpointStore
from controller.endpoints import ModelEndpoints, Replica
from controller.engines import build_spec
from controller.errors import InvalidManifests, ModelctlError
from controller.health import Prober
from controller.manifest_loader import LoadedModel
from controller.plan import Kept, Plan, calculate_plan
from controller.runtime.docker import DockerRuntime
from controller.spec import ContainerSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What one replica is doing, for `modelctl status` and the controller's API."""

    model: str
    replica: int
    state: str  # Pending, Starting, Ready, Failed
    container: str | None = None
    endpoint: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Desired:
    specs: list[ContainerSpec]
    pending: list[ReplicaStatus]


class Reconciler:
    """Owns the control loop; nothing else changes containers, so it needs no locks."""

    def __init__(
        self,
        *,
        runtime: DockerRuntime,
        load_models: Callable[[], list[LoadedModel]],
        store: EndpointStore,
        prober: Prober,
        interval_s: float = 5.0,
        busy_interval_s: float = 0.5,
    ) -> None:
        self.runtime = runtime
        self.load_models = load_models
        self.store = store
        self.prober = prober
        self.interval_s = interval_s  # between passes when everything is settled
        self.busy_interval_s = busy_interval_s  # while replicas start: readiness is noticed fast
        self.models: list[LoadedModel] = []  # the last valid manifests
        self.manifest_errors: list[str] = []
        self.replicas: list[ReplicaStatus] = []
        self.start_errors: dict[tuple[str, int], str] = {}
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Reconcile until cancelled. Errors of one pass are logged; the next pass retries."""
        while True:
            try:
                settled = await self.reconcile_once()
            except ModelctlError as exc:
                log.warning("reconcile pass failed, retrying: %s", exc)
                settled = False
            await self.sleep(self.interval_s if settled else self.busy_interval_s)

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)
        self.wake.clear()

    async def reconcile_once(self) -> bool:
        """One pass. Returns True when every desired replica is ready (nothing to watch closely)."""
        await asyncio.to_thread(self.refresh_models)
        desired = desired_state(self.models)
        observed = await asyncio.to_thread(self.runtime.list)
        plan = calculate_plan(desired.specs, observed)
        await self.execute(plan)
        ready = await self.probe(plan.remain)
        await self.store.publish(endpoint_table(self.models, ready))
        self.replicas = self.statuses(desired, plan, ready)
        return not plan.changes and len(ready) == len(desired.specs)

    def refresh_models(self) -> None:
        """Load the manifests; on errors keep serving the last good set and report them once."""
        try:
            self.models = self.load_models()
            self.manifest_errors = []
        except InvalidManifests as exc:
            errors = [str(e) for e in exc.errors]
            if errors != self.manifest_errors:
                log.error("manifests invalid, still serving the last good set:\n%s", "\n".join(errors))
            self.manifest_errors = errors

    async def execute(self, plan: Plan) -> None:
        """Delete, then create; one failing replica does not stop the others."""
        for container in plan.delete:
            log.info("removing %s (replica %s-%d)", container.name, container.model, container.replica)
            await asyncio.to_thread(self.runtime.remove, container.id)
        for spec in plan.create:
            slot = (spec.model, spec.replica)
            try:
                await asyncio.to_thread(self.runtime.start, spec)
                self.start_errors.pop(slot, None)
                log.info("started replica %s-%d (%s)", spec.model, spec.replica, spec.image)
            except ModelctlError as exc:
                if self.start_errors.get(slot) != str(exc):
                    log.error("%s", exc)
                self.start_errors[slot] = str(exc)

    async def probe(self, kept: list[Kept]) -> dict[tuple[str, int], Kept]:
        """The kept replicas whose engine answers its health endpoint."""
        live = [k for k in kept if k.container.running and k.container.url]
        answers = await asyncio.gather(
            *(self.prober.ready(f"{k.container.url}{k.container.health_path}") for k in live)
        )
        return {(k.spec.model, k.spec.replica): k for k, ok in zip(live, answers, strict=True) if ok}

    def statuses(
        self, desired: Desired, plan: Plan, ready: dict[tuple[str, int], Kept]
    ) -> list[ReplicaStatus]:
        found = {(k.spec.model, k.spec.replica): k for k in plan.remain}
        out = list(desired.pending)
        for spec in desired.specs:
            slot = (spec.model, spec.replica)
            kept = found.get(slot)
            name = kept.container.name if kept else None
            if slot in ready:
                out.append(ReplicaStatus(*slot, "Ready", name, ready[slot].container.url))
            elif slot in self.start_errors:
                out.append(ReplicaStatus(*slot, "Failed", name, None, self.start_errors[slot]))
            else:
                out.append(ReplicaStatus(*slot, "Starting", name, None, "waiting for /health"))
        return sorted(out, key=lambda s: (s.model, s.replica))


def desired_state(models: list[LoadedModel]) -> Desired:
    """Container specs for every replica that can run here, and Pending reasons for the rest."""
    specs: list[ContainerSpec] = []
    pending: list[ReplicaStatus] = []
    for model in models:
        for index in range(model.manifest.replicas):
            if model.manifest.num_gpus:
                reason = f"needs {model.manifest.num_gpus} GPU(s); GPU placement is not available yet"
                pending.append(ReplicaStatus(model.name, index, "Pending", reason=reason))
                continue
            try:
                specs.append(build_spec(model, index))
            except ModelctlError as exc:
                pending.append(ReplicaStatus(model.name, index, "Pending", reason=str(exc)))
    return Desired(specs, pending)


def endpoint_table(
    models: list[LoadedModel], ready: dict[tuple[str, int], Kept]
) -> tuple[ModelEndpoints, ...]:
    """Every model, with only its ready replicas, in replica order."""
    entries = []
    for model in models:
        replicas = tuple(
            Replica(
                id=f"{model.name}-{k.spec.replica}",
                url=str(k.container.url),
                max_concurrency=k.spec.max_concurrency,
            )
            for slot, k in sorted(ready.items())
            if slot[0] == model.name
        )
        entries.append(ModelEndpoints(model.name, tuple(model.manifest.aliases), created_at(model), replicas))
    return tuple(entries)


def created_at(model: LoadedModel) -> int:
    try:
        return int(os.stat(model.file).st_mtime)
    except OSError:
        return 0
