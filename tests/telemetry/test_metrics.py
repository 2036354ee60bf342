"""The controller's /metrics: replicas desired and ready per model, evictions, scale-ups from zero,
unexpected errors by task and stage."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from controller.reconcile.report import Report, ReportStore
from controller.reconcile.states import ReplicaState
from controller.reconcile.status import ModelScaling, ReplicaStatus
from controller.reconcile.supervise import Failures
from controller.telemetry import metrics


def test_metrics_show_desired_and_ready_replicas_evictions_and_cold_starts() -> None:
    failures = Failures()
    for task, stage in (("reconciler", "desire"), ("reconciler", "desire"), ("docker-events", "")):
        failures.record(task, OverflowError("timestamp out of range"), stage=stage, then="again")
    reports = ReportStore()
    reports.publish(
        Report(
            scaling=(
                ModelScaling("chat", 2, 2, 2, "fixed"),
                ModelScaling("coder", 0, 2, 1, "1 request(s) waiting: starting"),
            ),
            evictions=3,
            from_zero={"coder": 4},
            failures=dict(failures.counts),
            manifest_errors=("models/a.yaml:1 ...",),
            replicas=(
                ReplicaStatus("chat", 0, ReplicaState.READY),
                ReplicaStatus("chat", 1, ReplicaState.STARTING),
            ),
        )
    )
    text = metrics.render(metrics.registry(reports)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("modelctl_controller_replicas", (("kind", "desired"), ("model", "chat")))] == 2
    assert samples[("modelctl_controller_replicas", (("kind", "ready"), ("model", "chat")))] == 1
    assert samples[("modelctl_controller_replicas", (("kind", "ready"), ("model", "coder")))] == 0
    assert samples[("modelctl_controller_evictions_total", ())] == 3
    assert samples[("modelctl_controller_scale_from_zero_total", (("model", "coder"),))] == 4
    assert samples[("modelctl_controller_manifest_errors", ())] == 1
    errors = "modelctl_reconcile_errors_total"
    assert samples[(errors, (("stage", "desire"), ("task", "reconciler")))] == 2
    assert samples[(errors, (("stage", ""), ("task", "docker-events")))] == 1
