"""What the controller's API and console may ask of the control plane besides reading its report.

Readers read the published ``report.Report``; these are the commands: record a gateway's demand
(which may wake the loop), load the watched manifests (for a preview of the folder), read a snapshot
of what runs when no pass has published one yet, and a running replica's log through a narrow
runtime protocol. The composition root builds them from the loop (``Reconciler.controls``); an API
serving only an endpoint table (tests, benchmarks) takes ``Controls.idle()``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from controller.endpoints.demand import DemandReport
from controller.manifests.model import LoadedModel
from controller.reconcile.decide import Snapshot
from controller.runtime.observed import ObservedContainer


class ReplicaLogs(Protocol):
    """The runtime as ``/v1/replicas/{container}/logs`` needs it (``DockerRuntime`` is one)."""

    def list(self) -> list[ObservedContainer]: ...

    def logs(self, container_id: str, tail: int = ...) -> str: ...


@dataclass(frozen=True, slots=True)
class Controls:
    report_demand: Callable[[DemandReport], None]  # raises reconcile.demand.TooManyReporters
    demand_clock: Callable[[], float]  # the demand board's clock (reports' times are checked on it)
    demand_stale_after_s: float  # a silent reporter is forgotten after this (a 429's Retry-After)
    load_models: Callable[[], list[LoadedModel]]  # the watched folder (raises InvalidManifests)
    read_snapshot: Callable[[], Awaitable[Snapshot]]  # Docker, NVML: before the first pass only
    replicas: ReplicaLogs

    @classmethod
    def idle(cls) -> Controls:
        """Commands for an API with no control loop behind it: no models, no replicas, demand dropped."""

        def drop(report: DemandReport) -> None:
            return None

        async def nothing() -> Snapshot:
            return Snapshot(models=())

        return cls(drop, time.time, 10.0, list, nothing, NoReplicas())


class NoReplicas:
    """A runtime that runs nothing."""

    def list(self) -> list[ObservedContainer]:
        return []

    def logs(self, container_id: str, tail: int = 50) -> str:
        return ""
