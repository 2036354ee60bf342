"""The controller's endpoint store: versions bump only on change; long polls wake on change, and at
once for a client holding another epoch (a previous run of the controller)."""

from __future__ import annotations

import asyncio

from controller.endpoints.store import EndpointStore
from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica

SMOL = (ModelEndpoints("smol", ("s",), 1, (Replica("smol-0", "http://10.0.0.2:8080", 2),)),)


async def test_version_bumps_only_when_the_table_changes() -> None:
    store = EndpointStore()
    assert await store.publish(SMOL)
    assert not await store.publish(SMOL)
    assert store.current().version == 1
    assert await store.publish(())
    assert store.current().version == 2


async def test_long_poll_wakes_on_publish_and_times_out_otherwise() -> None:
    store = EndpointStore()
    waiter = asyncio.create_task(store.wait_newer(0, timeout=30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.publish(SMOL)
    table = await asyncio.wait_for(waiter, 5)
    assert table.version == 1 and table.models == SMOL
    unchanged = await store.wait_newer(1, timeout=0.05)
    assert unchanged.version == 1


def test_wire_format_round_trips() -> None:
    table = EndpointTable(version=3, models=SMOL, epoch="e1")
    assert EndpointTable.from_json(table.to_json()) == table
    assert table.lookup("s") == SMOL[0] and table.lookup("nope") is None
    older = {k: v for k, v in table.to_json().items() if k != "epoch"}  # an older controller's
    assert EndpointTable.from_json(older).epoch == ""


async def test_each_store_has_its_own_epoch_and_every_table_carries_it() -> None:
    first, second = EndpointStore(), EndpointStore()
    assert first.epoch != second.epoch and len(first.epoch) == 16
    await first.publish(SMOL)
    assert first.current().epoch == first.epoch
    assert EndpointStore(epoch="fixed").current().epoch == "fixed"


async def test_a_client_of_another_epoch_gets_the_table_at_once_at_an_equal_version() -> None:
    store = EndpointStore(epoch="new")
    await store.publish(SMOL)  # version 1, as the previous run's table the client holds
    table = await asyncio.wait_for(store.wait_newer(1, timeout=30, epoch="old"), 1)
    assert (table.epoch, table.version, table.models) == ("new", 1, SMOL)
    held = asyncio.create_task(store.wait_newer(1, timeout=30, epoch="new"))
    await asyncio.sleep(0.05)
    assert not held.done()  # its own epoch and version: nothing new, the poll is held
    await store.publish(())
    assert (await asyncio.wait_for(held, 5)).version == 2


async def test_api_answers_503_until_the_first_pass_then_long_polls(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    from controller.api import create_api

    store = EndpointStore()
    client = await aiohttp_client(create_api(store))
    assert (await client.get("/v1/endpoints")).status == 503
    await store.publish(SMOL)
    first = await (await client.get("/v1/endpoints?after=-1&wait=5")).json()
    assert EndpointTable.from_json(first) == EndpointTable(version=1, models=SMOL, epoch=store.epoch)
    waiting = asyncio.create_task(client.get("/v1/endpoints?after=1&wait=30"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await store.publish(())
    assert (await (await waiting).json())["version"] == 2
    other = await client.get("/v1/endpoints?after=2&epoch=previous-run&wait=30")  # answered at once
    assert (await other.json())["epoch"] == store.epoch
    assert (await client.get("/v1/endpoints?after=x")).status == 400
    for query in ("wait=nan", "wait=inf", "epoch=" + "e" * 65):
        assert (await client.get(f"/v1/endpoints?after=2&{query}")).status == 400, query


async def test_close_answers_waiting_long_polls_at_once() -> None:
    store = EndpointStore()
    await store.publish(SMOL)
    waiter = asyncio.create_task(store.wait_newer(1, timeout=30))
    await asyncio.sleep(0)
    await store.close()
    assert (await asyncio.wait_for(waiter, 1)).version == 1
