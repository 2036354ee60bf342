"""Publish, don't expose: the immutable report of the control loop, and the store it is published in.

The loop publishes one ``Report`` at the end of each pass (and of each pass that failed: the facts it
still knows, such as the manifest errors and the error counts; and when it loaded its manifests, so
readers know the models at once), the way it publishes the endpoint table for the gateway
(``endpoints.store``). Every reader, the controller API (``/v1/status``, ``/v1/events``, the
demand's model names), the console (``/v1/plan``, the energy meter's replica owners), the
controller's ``/metrics`` and through ``/v1/status`` the CLI, reads the current report and nothing
of the loop. A report never changes once published; a reader holding one sees one pass whole.

Liveness is the exception that proves the rule: a pass that hangs publishes nothing, so
``/healthz`` reads the loop's ``Heartbeat`` (through ``ReportStore.liveness``), which the loop beats
as it goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from controller.manifests.model import LoadedModel
from controller.reconcile.decide import Snapshot
from controller.reconcile.events import Event
from controller.reconcile.states import ReplicaState
from controller.reconcile.status import ModelScaling, ReplicaStatus
from controller.reconcile.supervise import Heartbeat, Liveness, default_liveness_s


@dataclass(frozen=True, slots=True)
class Report:
    """What the control loop knows after a pass, for every reader."""

    passes: int = 0  # passes that published (0: none yet)
    models: tuple[LoadedModel, ...] = ()  # the manifests it runs (the last good set)
    manifest_errors: tuple[str, ...] = ()  # why the manifests on disk are not applied, if they are not
    replicas: tuple[ReplicaStatus, ...] = ()  # one row per replica and container
    scaling: tuple[ModelScaling, ...] = ()  # each model's count now and why
    notes: tuple[str, ...] = ()  # about the whole host (oversubscribed cores)
    snapshot: Snapshot | None = None  # what the pass decided from (the plan preview and energy reuse it)
    evictions: int = 0  # models stopped to make room, since start
    from_zero: Mapping[str, int] = field(default_factory=dict)  # scale-ups from zero per model
    failures: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (task, stage) -> errors
    events: tuple[Event, ...] = ()  # the last events, oldest first
    events_last: int = 0  # the seq of the newest event (the cursor ``/v1/events?after=`` takes)

    def __post_init__(self) -> None:
        """The counters become read-only copies: the loop's own dicts go on counting."""
        object.__setattr__(self, "from_zero", MappingProxyType(dict(self.from_zero)))
        object.__setattr__(self, "failures", MappingProxyType(dict(self.failures)))

    def status_json(self) -> dict[str, Any]:
        """``/v1/status``'s rows, scaling, manifest errors and notes (what ``modelctl status`` shows)."""
        return {
            "replicas": [asdict(r) for r in self.replicas],
            "models": [asdict(m) for m in self.scaling],
            "manifest_errors": list(self.manifest_errors),
            "notes": list(self.notes),
        }

    def events_json(self, after: int = 0) -> dict[str, Any]:
        """The body of ``GET /v1/events?after=N``: the kept events newer than ``after``."""
        return {"last": self.events_last, "events": [asdict(e) for e in self.events if e.seq > after]}

    def ready(self) -> dict[str, int]:
        """Ready replicas per model."""
        counts: dict[str, int] = {}
        for row in self.replicas:
            if row.state == ReplicaState.READY:
                counts[row.model] = counts.get(row.model, 0) + 1
        return counts

    def model_names(self) -> dict[str, str]:
        """Each name and alias of the models -> the model's name."""
        return {name: model.name for model in self.models for name in model.manifest.names}


class ReportStore:
    """Holds the current Report; the loop publishes, readers take ``current()``."""

    def __init__(self, heartbeat: Heartbeat | None = None) -> None:
        """``heartbeat``: the loop's (None: one no loop beats, for an API without a loop)."""
        self._report = Report()
        self._heartbeat = heartbeat or Heartbeat(default_liveness_s(0.0))

    def current(self) -> Report:
        return self._report

    def publish(self, report: Report) -> None:
        self._report = report

    def liveness(self) -> Liveness:
        """Whether passes complete (``/healthz``; the watchdog exits the process when not)."""
        return self._heartbeat.status()
