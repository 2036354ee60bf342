"""The console shows a model's LoRA adapters under its name: ``/v1/status`` carries them from the
endpoint table, and the page (in a real browser: Debian's chromium, Playwright) writes them in the
replica's Model cell, so a person sees which names clients may use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser

from api.chromium import launched
from controller.api import create_api, page
from controller.endpoints.store import EndpointStore
from controller.endpoints.table import ModelEndpoints

REPLICA = {
    "model": "smollm2",
    "replica": 0,
    "state": "Ready",
    "container": "c-smollm2-0",
    "started_at": "2026-12-06T10:00:00Z",
    "restarts": 0,
    "endpoint": "http://10.0.0.2:8080",
    "reason": None,
    "progress": None,
}


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched() as chromium:
        yield chromium


async def test_status_names_each_models_adapters(aiohttp_client: Any) -> None:
    store = EndpointStore()
    await store.publish(
        (ModelEndpoints("smollm2", adapters=("smollm2-a", "smollm2-b")), ModelEndpoints("qwen"))
    )
    client = await aiohttp_client(create_api(store))
    status = await (await client.get("/v1/status")).json()
    assert status["adapters"] == {"smollm2": ["smollm2-a", "smollm2-b"]}


async def test_the_model_cell_lists_its_adapters(aiohttp_server: Any, browser: Browser) -> None:
    adapters = {"smollm2": ["smollm2-a", "smollm2-b"]}

    async def status(request: web.Request) -> web.Response:
        replicas = [REPLICA, REPLICA | {"model": "qwen", "container": "c-qwen-0"}]
        return web.json_response({"replicas": replicas, "models": [], "adapters": adapters})

    app = web.Application()
    page.add_routes(app)
    app.router.add_get("/v1/status", status)
    server = await aiohttp_server(app)
    tab = await (await browser.new_context()).new_page()
    thrown: list[str] = []
    tab.on("pageerror", lambda exc: thrown.append(str(exc)))
    await tab.goto(str(server.make_url("/")))
    await tab.wait_for_selector("#replica-rows tr[data-model=qwen]", timeout=15_000)
    cells = await tab.eval_on_selector_all(
        "#replica-rows tr", "rows => rows.map(r => [r.dataset.model, r.children[0].innerText])"
    )
    assert sorted(cells) == [["qwen", "qwen"], ["smollm2", "smollm2\nadapters: smollm2-a, smollm2-b"]]
    assert thrown == []
