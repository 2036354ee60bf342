"""Prometheus metrics of the control plane, on the controller's internal API (``GET /metrics``).

Rendered at scrape time from what the reconciler already holds, so a pass costs nothing extra:
``modelctl_controller_replicas{model,kind}`` (kind "desired": the count scaling chose, "ready":
serving now), ``modelctl_controller_evictions_total`` (idle models stopped to make room for
others), ``modelctl_controller_scale_from_zero_total{model}`` (a request started a scaled-to-zero
model), ``modelctl_controller_manifest_errors`` and ``modelctl_reconcile_errors_total{task,stage}``
(unexpected errors the loop and its background tasks met and lived through, ``supervise.Failures``;
``stage`` is where in a pass, empty for other tasks). The data plane's figures (cold starts seen by
clients, time held, requests, tokens) are the gateway's own ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from controller.reconcile.loop import Reconciler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ControllerCollector(Collector):
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def collect(self) -> Iterator[Metric]:
        reconciler = self.reconciler
        replicas = GaugeMetricFamily(
            "modelctl_controller_replicas",
            "Replicas per model: desired now, and ready.",
            labels=["model", "kind"],
        )
        ready: dict[str, int] = {}
        for row in reconciler.replicas:
            if row.state == "Ready":
                ready[row.model] = ready.get(row.model, 0) + 1
        for name, scaling in reconciler.on_demand.scaling.items():
            replicas.add_metric([name, "desired"], scaling.desired)
            replicas.add_metric([name, "ready"], ready.get(name, 0))
        yield replicas
        yield CounterMetricFamily(
            "modelctl_controller_evictions",
            "Idle on-demand models stopped to make room for a wanted one.",
            value=reconciler.on_demand.evictions,
        )
        from_zero = CounterMetricFamily(
            "modelctl_controller_scale_from_zero",
            "Times a waiting request started a scaled-to-zero model.",
            labels=["model"],
        )
        for name, count in sorted(reconciler.on_demand.from_zero.items()):
            from_zero.add_metric([name], count)
        yield from_zero
        yield GaugeMetricFamily(
            "modelctl_controller_manifest_errors",
            "Errors in the manifests (the last good set keeps serving).",
            value=len(reconciler.manifest_errors),
        )
        errors = CounterMetricFamily(
            "modelctl_reconcile_errors",
            "Unexpected errors met by the reconcile loop (by stage of a pass) and its background tasks.",
            labels=["task", "stage"],
        )
        for (task, stage), count in sorted(reconciler.failures.counts.items()):
            errors.add_metric([task, stage], count)
        yield errors


def registry(reconciler: Reconciler) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(ControllerCollector(reconciler))
    return found


def render(found: CollectorRegistry) -> bytes:
    return generate_latest(found)
