"""Publish, don't expose: the API answers from the report the loop published, and a published
report never changes afterwards."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.api import create_api
from controller.endpoints.demand import DemandReport
from controller.endpoints.store import EndpointStore
from controller.reconcile.controls import Controls
from controller.reconcile.events import Event
from controller.reconcile.report import Report, ReportStore
from controller.reconcile.states import ReplicaState
from controller.reconcile.status import ModelScaling, ReplicaStatus
from tests.reconcile.test_events import model, stack

ROW = ReplicaStatus("smol", 0, ReplicaState.READY, "c-smol-0", "http://10.0.0.2:8080")
EVENTS = tuple(Event(n, "2026-12-02T00:00:00.000+00:00", "created", "smol", 0, "c", "") for n in (1, 2, 3))


async def test_status_events_and_demand_names_come_from_the_report() -> None:
    reports, taken = ReportStore(), []
    controls = dataclasses.replace(Controls.idle(), report_demand=taken.append)
    reports.publish(
        Report(
            passes=1,
            models=(model("smol", aliases=["tiny"]),),
            replicas=(ROW,),
            scaling=(ModelScaling("smol", 1, 1, 1, "fixed"),),
            notes=("3 CPU replicas share 2 cores",),
            events=EVENTS,
            events_last=3,
        )
    )
    async with TestClient(TestServer(create_api(EndpointStore(), reports, controls))) as client:
        status: dict[str, Any] = await (await client.get("/v1/status")).json()
        assert (
            status["replicas"] == [{**dataclasses.asdict(ROW), "state": "Ready"}]
            and status["models"][0]["reason"] == "fixed"
        )
        assert status["notes"] == ["3 CPU replicas share 2 cores"] and status["manifest_errors"] == []
        events = await (await client.get("/v1/events?after=1")).json()
        assert events["last"] == 3 and [e["seq"] for e in events["events"]] == [2, 3]
        body = {"reporter": "gw", "models": {"tiny": {"waiting": 1}, "nope": {"waiting": 1}}}
        assert (await client.post("/v1/demand", json=body)).status == 204
    (report,) = taken
    assert isinstance(report, DemandReport) and set(report.models) == {"smol"}  # by its alias


async def test_each_pass_publishes_a_new_report_and_the_old_one_stays_as_it_was() -> None:
    s = stack([model("smol")])
    await s.passes(1)
    first = s.reconciler.reports.current()
    (row,) = first.replicas
    assert first.passes == 1 and row.state == ReplicaState.STARTING
    s.prober.mark(s.runtime.containers[0])
    await s.passes(1)
    second = s.reconciler.reports.current()
    assert second is not first and second.passes == 2 and second.replicas[0].state == ReplicaState.READY
    assert first.replicas == (row,) and first.passes == 1  # what a reader held is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        second.passes = 3  # type: ignore[misc]


def test_a_reports_counters_are_its_own_and_read_only() -> None:
    """The loop's counters go on counting after it published: the report keeps what they were."""
    counts = {("pass", "probe"): 1}
    report = Report(failures=counts)
    counts[("pass", "probe")] = 2
    assert report.failures == {("pass", "probe"): 1}
    for counters in (report.failures, Report().from_zero):
        with pytest.raises(TypeError):
            counters[("pass", "probe")] = 3  # type: ignore[index]


async def test_a_pass_over_broken_manifests_publishes_their_errors_at_once() -> None:
    s = stack([model("smol")])
    await s.passes(1)

    def broken() -> list[Any]:
        from controller.errors import InvalidManifests, ManifestError

        raise InvalidManifests([ManifestError("bad field", file="m.yaml", document=1, field="x")])

    s.reconciler.load_models = broken
    await s.reconciler.turn()
    report = s.reconciler.reports.current()
    assert len(report.manifest_errors) == 1 and "bad field" in report.manifest_errors[0]
    assert [m.name for m in report.models] == ["smol"]  # the last good set still runs
