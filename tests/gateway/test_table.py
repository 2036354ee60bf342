"""Table sources: StaticTable, and ControllerTable following a real (fake) controller over HTTP, and
the real controller API across a restart (a new epoch at an equal version)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gateway_fakes import FakeController, eventually, table_of

from controller.endpoints.store import EndpointStore
from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import ControllerTable, StaticTable

V1 = table_of(("m", (), ["http://10.0.0.1:8080"]), version=1)
V2 = table_of(("m", ("alias",), ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]), version=2)
TABLE_LOG = "controller.gateway.tables.source"


def test_static_table_serves_what_was_set() -> None:
    source = StaticTable()
    assert source.current() == EndpointTable()
    source.set(V1)
    assert source.current() is V1


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def serve(controller: FakeController, port: int | None = None) -> TestServer:
    server = TestServer(controller.app(), port=port)
    await server.start_server()
    return server


@contextlib.asynccontextmanager
async def following(table: ControllerTable) -> AsyncIterator[None]:
    """Run ``table.run()`` for the block; check that it stops only when cancelled."""
    task = asyncio.create_task(table.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_first_table_then_a_new_version_through_the_long_poll(
    session: aiohttp.ClientSession,
) -> None:
    controller = FakeController(V1)
    server = await serve(controller)
    table = ControllerTable(str(server.make_url("")), session, wait_s=30)
    try:
        async with following(table):
            assert await table.wait_first(5)
            assert table.current() == V1
            await eventually(lambda: controller.polls == 2)  # the second poll is being held
            controller.publish(V2)
            await eventually(lambda: table.current().version == 2, within_s=5)
            assert table.current() == V2
            # V2 was the answer to the held poll, not to a new one.
            assert controller.answered[:2] == [1, 2]
    finally:
        await server.close()


async def test_wait_first_gives_up_at_the_deadline(session: aiohttp.ClientSession) -> None:
    table = ControllerTable("http://127.0.0.1:9", session, backoff_initial_s=0.01)
    async with following(table):
        assert not await table.wait_first(0.2)
        assert table.current() == EndpointTable()


async def test_controller_going_away_keeps_the_last_table_and_warns_once(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TABLE_LOG)
    controller = FakeController(V1)
    server = await serve(controller)
    port = server.port
    table = ControllerTable(
        str(server.make_url("")), session, wait_s=30, backoff_initial_s=0.01, backoff_max_s=0.05
    )
    async with following(table):
        assert await table.wait_first(5)
        await server.close()
        await eventually(lambda: table.consecutive_failures >= 5)
        assert table.current() == V1
        outage = [r for r in caplog.records if r.name == TABLE_LOG and r.levelname == "WARNING"]
        assert len(outage) == 1, [r.getMessage() for r in outage]
        assert "serving the last table (version 1)" in outage[0].getMessage()

        back = await serve(FakeController(V2), port=port)
        try:
            await eventually(lambda: table.current().version == 2)
            assert table.consecutive_failures == 0
            assert any("answers again" in r.getMessage() for r in caplog.records)
        finally:
            await back.close()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(None, id="HTML"),
        pytest.param({"version": 3}, id="no models"),
        pytest.param({"version": "x", "models": []}, id="bad version"),
        pytest.param([1, 2], id="not an object"),
        pytest.param({"version": 3, "models": [{"replicas": []}]}, id="model without name"),
    ],
)
async def test_garbage_from_the_controller_keeps_the_last_table(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, answer: Any
) -> None:
    controller = FakeController(V1)
    server = await serve(controller)
    table = ControllerTable(
        str(server.make_url("")), session, wait_s=0.05, backoff_initial_s=0.01, backoff_max_s=0.02
    )
    try:
        async with following(table):
            assert await table.wait_first(5)
            if answer is None:
                controller.garbage = True
            else:
                controller.table = _Raw(answer)  # type: ignore[assignment]
            await eventually(lambda: table.consecutive_failures >= 3)
            assert table.current() == V1
            warnings = [r for r in caplog.records if r.name == TABLE_LOG]
            assert len([r for r in warnings if r.levelname == "WARNING"]) == 1
    finally:
        await server.close()


class _Raw:
    """Stands in for a table whose JSON form is malformed."""

    version = -1

    def __init__(self, document: Any) -> None:
        self._document = document

    def to_json(self) -> Any:
        return self._document


@contextlib.asynccontextmanager
async def controller_api(models: tuple[ModelEndpoints, ...], port: int | None = None) -> AsyncIterator[int]:
    """A real controller API (``create_api`` over a fresh EndpointStore: a new epoch, as a controller
    start draws), its table published once (version 1), on ``port``; yields the port. Stops as the
    controller does: held long polls answered, then the server closed."""
    from controller.api import create_api

    store = EndpointStore()
    await store.publish(models)
    reconciler = SimpleNamespace(replicas=[], manifest_errors=[])
    server = TestServer(create_api(store, reconciler), port=port)  # type: ignore[arg-type]
    await server.start_server()
    try:
        yield server.port
    finally:
        await store.close()
        await server.close()


async def test_a_restarted_controller_with_a_changed_set_at_an_equal_version_is_followed(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's measurement: stop the controller, add a model, start it. The new one serves the
    new set at version 1, the version the gateway holds; the gateway must take it at once, not
    after its long poll (30 s here) or never."""
    caplog.set_level(logging.INFO, logger=TABLE_LOG)
    before = (ModelEndpoints("m", (), 1, (Replica("m-0", "http://10.0.0.1:8080"),)),)
    after = (*before, ModelEndpoints("added", (), 1))
    async with controller_api(before) as port:
        table = ControllerTable(
            f"http://127.0.0.1:{port}", session, wait_s=30, backoff_initial_s=0.01, backoff_max_s=0.05
        )
        task = asyncio.create_task(table.run())
        assert await table.wait_first(5)
        first = table.current()
        assert (first.version, [m.name for m in first.models]) == (1, ["m"])
    try:
        async with controller_api(after, port=port):  # started again: a new epoch, version 1
            await eventually(lambda: table.current().lookup("added") is not None, within_s=10)
            now = table.current()
            assert now.version == 1 and now.epoch != first.epoch
            assert any("new controller epoch" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
