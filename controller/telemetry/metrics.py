"""Prometheus metrics of the control plane, on the controller's internal API (``GET /metrics``).

Rendered at scrape time from the report the loop last published (``reconcile.report.Report``), so a pass
costs nothing extra: ``modelctl_controller_replicas{model,kind}`` (kind "desired": the count scaling
chose, "ready": serving now), ``modelctl_controller_evictions_total`` (idle models stopped to make
room for others), ``modelctl_controller_scale_from_zero_total{model}`` (a request started a
scaled-to-zero model), ``modelctl_controller_manifest_errors`` and
``modelctl_reconcile_errors_total{task,stage}`` (unexpected errors the loop and its background
tasks met and lived through, ``reconcile.supervise.Failures``, as of the last pass; ``stage`` is where in a
pass, empty for other tasks). The data plane's figures (cold starts seen by clients, time held,
requests, tokens) are the gateway's own ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.reconcile.report import ReportStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ControllerCollector(Collector):
    def __init__(self, reports: ReportStore) -> None:
        self.reports = reports

    def collect(self) -> Iterator[Metric]:
        report = self.reports.current()
        replicas = GaugeMetricFamily(
            "modelctl_controller_replicas",
            "Replicas per model: desired now, and ready.",
            labels=["model", "kind"],
        )
        ready = report.ready()
        for scaling in report.scaling:
            replicas.add_metric([scaling.model, "desired"], scaling.desired)
            replicas.add_metric([scaling.model, "ready"], ready.get(scaling.model, 0))
        yield replicas
        yield CounterMetricFamily(
            "modelctl_controller_evictions",
            "Idle on-demand models stopped to make room for a wanted one.",
            value=report.evictions,
        )
        from_zero = CounterMetricFamily(
            "modelctl_controller_scale_from_zero",
            "Times a waiting request started a scaled-to-zero model.",
            labels=["model"],
        )
        for name, count in sorted(report.from_zero.items()):
            from_zero.add_metric([name], count)
        yield from_zero
        yield GaugeMetricFamily(
            "modelctl_controller_manifest_errors",
            "Errors in the manifests (the last good set keeps serving).",
            value=len(report.manifest_errors),
        )
        errors = CounterMetricFamily(
            "modelctl_reconcile_errors",
            "Unexpected errors met by the reconcile loop (by stage of a pass) and its background tasks.",
            labels=["task", "stage"],
        )
        for (task, stage), count in sorted(report.failures.items()):
            errors.add_metric([task, stage], count)
        yield errors


def registry(reports: ReportStore) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(ControllerCollector(reports))
    return found


def render(found: CollectorRegistry) -> bytes:
    return generate_latest(found)
