"""The queue of a model with LoRA adapters: a freed slot goes to a waiter of the adapter the replica
runs (llama.cpp runs two adapters in separate passes), within a bound on how often one waiter is
overtaken. Admission and the balancer only, no HTTP: the futures say who got which replica."""

from __future__ import annotations

import asyncio

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway.admission.balancer import Balancer
from controller.gateway.admission.queues import GROUP_PASSES, Admission, Slot
from controller.gateway.settings import GatewaySettings
from controller.gateway.tables.source import StaticTable

MODEL = ModelEndpoints(
    name="m",
    replicas=(Replica("r0", "http://r0", 2), Replica("r1", "http://r1", 2)),
    adapters=("sea", "sky"),
)


def admission() -> Admission:
    return Admission(StaticTable(EndpointTable(version=1, models=(MODEL,))), Balancer(), GatewaySettings())


async def fill(adm: Admission, groups: list[str]) -> list[Slot]:
    """Requests that find a free slot at once, in order: least-outstanding by group puts the first
    two groups on their own replica."""
    slots = []
    for group in groups:
        slot = await adm.acquire(MODEL, group=group)
        assert slot is not None
        slots.append(slot)
    return slots


def wait(adm: Admission, group: str) -> asyncio.Task[Slot | None]:
    return asyncio.create_task(adm.acquire(MODEL, group=group))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_freed_slot_goes_to_a_waiter_of_the_adapter_running_there() -> None:
    adm = admission()
    running = await fill(adm, ["sea", "sky", "sea", "sky"])
    assert [r.id for r, _ in running] == ["r0", "r1", "r0", "r1"]  # each adapter on its replica
    sky, sea = wait(adm, "sky"), wait(adm, "sea")  # sky waits first
    await settle()
    assert adm.queue_depth("m") == 2
    running[0][1]()  # a sea request on r0 ends: r0 still runs sea
    await settle()
    assert sea.done() and not sky.done()  # FIFO would have mixed sky into r0
    got = sea.result()
    assert got is not None and got[0].id == "r0"
    running[1][1]()  # a sky request on r1 ends: the sky waiter takes r1
    await settle()
    got = sky.result()
    assert got is not None and got[0].id == "r1"


async def test_the_head_is_served_first_when_it_fits() -> None:
    adm = admission()
    running = await fill(adm, ["sea", "sky", "sea", "sky"])
    sea, sky = wait(adm, "sea"), wait(adm, "sky")
    await settle()
    running[0][1]()
    await settle()
    assert sea.done() and not sky.done()


async def test_without_a_fitting_waiter_the_head_mixes_rather_than_wait() -> None:
    adm = admission()
    running = await fill(adm, ["sea", "sky", "sea", "sky"])
    sky = wait(adm, "sky")
    await settle()
    running[0][1]()  # only r0 has room, and it runs sea
    await settle()
    got = sky.result()
    assert got is not None and got[0].id == "r0"


async def test_a_waiter_is_overtaken_at_most_group_passes_times() -> None:
    adm = admission()
    running = await fill(adm, ["sea", "sky", "sea", "sky"])
    sky = wait(adm, "sky")
    seas = [wait(adm, "sea") for _ in range(GROUP_PASSES + 2)]
    await settle()
    slot = running[0]
    for i in range(GROUP_PASSES):  # each sea ending on r0 hands r0 to the next sea waiter
        slot[1]()
        await settle()
        assert seas[i].done() and not sky.done()
        got = seas[i].result()
        assert got is not None
        slot = got
    slot[1]()  # sky has been passed over GROUP_PASSES times: it goes now, onto r0
    await settle()
    got = sky.result()
    assert got is not None and got[0].id == "r0"
    assert not seas[GROUP_PASSES].done()
    for task in seas[GROUP_PASSES:]:
        task.cancel()


async def test_a_model_without_adapters_keeps_first_come_first_served() -> None:
    plain = ModelEndpoints(name="p", replicas=(Replica("p0", "http://p0", 1),))
    adm = Admission(StaticTable(EndpointTable(version=1, models=(plain,))), Balancer(), GatewaySettings())
    first = await adm.acquire(plain)
    assert first is not None
    waiters = [asyncio.create_task(adm.acquire(plain)) for _ in range(3)]
    await settle()
    first[1]()
    await settle()
    assert [w.done() for w in waiters] == [True, False, False]
    for w in waiters[1:]:
        w.cancel()
