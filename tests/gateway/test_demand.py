"""Demand tracking and reporting: counts per model, when reports go out, sinks that fail.

What reaches the sink through the whole gateway (a cold request at once, then in flight) is in
test_on_demand.py; here the pieces: ``Demand``, ``DemandReporter`` and ``ControllerSink``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gateway_fakes import eventually, table_of

from controller.endpoints.demand import DemandReport, ModelDemand
from controller.gateway import GatewaySettings, StaticTable
from controller.gateway.admission import demand
from controller.gateway.admission.balancer import Balancer
from controller.gateway.admission.demand import ControllerSink, Demand, DemandNotDelivered, DemandReporter
from controller.gateway.admission.queues import Admission


def test_demand_counts_in_flight_and_last_activity_per_model() -> None:
    counts = Demand()
    before = time.time()
    counts.started("a")
    counts.started("a")
    counts.started("b")
    counts.ended("a")
    figures = counts.figures({"c": 2})
    assert figures["a"].in_flight == 1 and figures["b"].in_flight == 1
    assert figures["c"] == ModelDemand(0, 2, 0.0)  # waiting, never started: no activity yet
    assert before <= figures["a"].last_active <= time.time()
    counts.ended("a")
    counts.ended("b")
    assert {name: d.in_flight for name, d in counts.figures({}).items()} == {"a": 0, "b": 0}
    assert not counts.urgent.is_set()
    counts.cold("d")
    assert counts.urgent.is_set() and counts.figures({})["d"].last_active >= before


async def test_a_slot_counts_once_in_flight_however_often_done_is_called() -> None:
    source = StaticTable(table_of(("m", (), ["http://a"])))
    admission = Admission(source, Balancer(), GatewaySettings())
    slot = await admission.acquire(source.current().models[0])
    assert slot is not None
    assert admission.demand.in_flight("m") == 1
    slot[1]()
    slot[1]()
    assert admission.demand.in_flight("m") == 0


class Sink:
    """Records reports; raises ``errors`` in turn first, if any."""

    def __init__(self, *errors: Exception) -> None:
        self.reports: list[DemandReport] = []
        self.errors = list(errors)

    async def __call__(self, report: DemandReport) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.reports.append(report)


@contextlib.asynccontextmanager
async def reporting(reporter: DemandReporter) -> AsyncIterator[None]:
    task = asyncio.create_task(reporter.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()  # ended by the cancel, never by the sink


async def test_idle_figures_are_sent_once_then_as_a_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demand, "HEARTBEAT_S", 0.25)
    counts = Demand()
    counts.started("m")
    counts.ended("m")
    sink = Sink()
    async with reporting(DemandReporter(counts, dict, sink, interval_s=0.01, reporter="r1")):
        await asyncio.sleep(0.6)
    assert 2 <= len(sink.reports) <= 4  # the first, then one per heartbeat: not one per interval
    assert {r.reporter for r in sink.reports} == {"r1"}
    assert sink.reports[0].models["m"].in_flight == 0


async def test_load_is_sent_every_interval_and_a_change_at_once() -> None:
    counts = Demand()
    sink = Sink()
    waiting: dict[str, int] = {}
    async with reporting(DemandReporter(counts, lambda: waiting, sink, interval_s=0.02)):
        await eventually(lambda: len(sink.reports) == 1)  # the first report (nothing seen yet)
        assert sink.reports[0].models == {}
        counts.started("m")
        await asyncio.sleep(0.3)
        assert len(sink.reports) >= 5  # in flight: every interval
        assert sink.reports[-1].models["m"].in_flight == 1
        counts.ended("m")
        await eventually(lambda: sink.reports[-1].models["m"].in_flight == 0)
        settled = len(sink.reports)
        await asyncio.sleep(0.2)
        assert len(sink.reports) == settled  # idle and unchanged: quiet until the heartbeat


async def test_a_cold_request_is_reported_without_waiting_for_the_interval() -> None:
    counts = Demand()
    sink = Sink()
    waiting: dict[str, int] = {}
    async with reporting(DemandReporter(counts, lambda: waiting, sink, interval_s=30)):
        await asyncio.sleep(0.05)
        waiting["m"] = 1
        counts.cold("m")
        await eventually(
            lambda: any(r.models.get("m", ModelDemand()).waiting == 1 for r in sink.reports), within_s=0.5
        )


async def test_a_model_going_idle_while_another_waits_is_reported_at_once() -> None:
    """A held request may wait for memory an idle model holds (a swap): the controller may evict
    that model only once it is reported idle, so its last request ending is reported at once."""
    counts = Demand()
    sink = Sink()
    waiting: dict[str, int] = {}
    async with reporting(DemandReporter(counts, lambda: waiting, sink, interval_s=30)):
        counts.started("a")
        waiting["b"] = 1
        counts.cold("b")
        await eventually(
            lambda: any(r.models.get("b", ModelDemand()).waiting for r in sink.reports), within_s=0.5
        )
        sent = len(sink.reports)
        counts.ended("a")
        await eventually(lambda: len(sink.reports) > sent, within_s=0.5)
        assert sink.reports[-1].models["a"].in_flight == 0


async def test_a_model_going_idle_with_nobody_waiting_waits_for_the_interval() -> None:
    counts = Demand()
    sink = Sink()
    async with reporting(DemandReporter(counts, dict, sink, interval_s=30)):
        counts.started("a")
        counts.ended("a")
        await asyncio.sleep(0.2)
        assert sink.reports == []


async def test_a_failing_sink_is_logged_once_per_distinct_error(caplog: pytest.LogCaptureFixture) -> None:
    counts = Demand()
    counts.started("m")  # load: a report every interval
    errors = [ConnectionRefusedError("refused")] * 5 + [TimeoutError()] * 3
    sink = Sink(*errors)
    with caplog.at_level(logging.INFO, logger="controller.gateway.admission.demand"):
        async with reporting(DemandReporter(counts, dict, sink, interval_s=0.01)):
            await eventually(lambda: len(sink.reports) >= 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "ConnectionRefusedError: refused" in warnings[0] and "TimeoutError" in warnings[1]
    assert any("delivered again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


async def test_figures_that_did_not_get_through_go_again_next_interval() -> None:
    counts = Demand()
    counts.cold("m")  # a change, then idle: sent once when the sink takes it
    sink = Sink(ConnectionRefusedError("refused"), ConnectionRefusedError("refused"))
    async with reporting(DemandReporter(counts, dict, sink, interval_s=0.01)):
        await eventually(lambda: len(sink.reports) == 1)
        await asyncio.sleep(0.1)
    assert len(sink.reports) == 1 and "m" in sink.reports[0].models


async def test_a_sink_that_hangs_does_not_stop_the_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demand, "SEND_TIMEOUT_S", 0.05)
    calls = 0

    async def hangs_once(report: DemandReport) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()

    counts = Demand()
    counts.started("m")
    async with reporting(DemandReporter(counts, dict, hangs_once, interval_s=0.01)):
        await eventually(lambda: calls >= 3)


def test_reporter_ids_differ_per_reporter() -> None:
    first, second = demand.reporter_id(), demand.reporter_id()
    assert first != second and str(os.getpid()) in first


class DemandApi:
    """``POST /v1/demand`` answering ``status``; keeps what it was posted."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.posted: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.posted.append(await request.json())
        return web.Response(status=self.status)


@contextlib.asynccontextmanager
async def demand_api(status: int) -> AsyncIterator[tuple[DemandApi, str]]:
    api = DemandApi(status)
    app = web.Application()
    app.router.add_post("/v1/demand", api.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield api, str(server.make_url(""))
    finally:
        await server.close()


REPORT = DemandReport("gw-1", {"m": ModelDemand(2, 1, 1764120000.5)})


async def test_the_controller_sink_posts_the_wire_format() -> None:
    async with demand_api(204) as (api, url), aiohttp.ClientSession() as session:
        await ControllerSink(url, session)(REPORT)
    assert [DemandReport.from_json(p) for p in api.posted] == [REPORT]


async def test_an_older_controller_without_the_endpoint_is_said_once_and_rested(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with demand_api(404) as (api, url), aiohttp.ClientSession() as session:
        sink = ControllerSink(url, session, pause_s=0.2)
        with caplog.at_level(logging.WARNING, logger="controller.gateway.admission.demand"):
            await sink(REPORT)
            await sink(REPORT)  # paused: not posted
            assert len(api.posted) == 1
            await asyncio.sleep(0.25)
            await sink(REPORT)  # tried again after the pause
            assert len(api.posted) == 2
    assert len([r for r in caplog.records if "no demand endpoint" in r.getMessage()]) == 1


async def test_the_controller_sink_raises_for_other_statuses_and_no_controller() -> None:
    async with demand_api(500) as (_, url), aiohttp.ClientSession() as session:
        with pytest.raises(DemandNotDelivered, match="HTTP 500"):
            await ControllerSink(url, session)(REPORT)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await ControllerSink("http://127.0.0.1:9", session)(REPORT)
