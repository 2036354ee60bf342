"""The console's GPU panel in a real browser (Debian's chromium, Playwright), fed by the real
``/v1/gpus`` route and energy meter reading the recorded H200 through the NVML adapter
(tests/gpus/nvml_replay.py): this machine has no GPU, so the replay is the one fake, and
everything from the adapter to the pixels is the real code.

GPU 0 holds 100 GiB of smollm2's replica 0 and 2 GiB of a process that is not ours; GPU 1 is idle.
With controller keys (``controller.api``), the page asks for one and sends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from gpus.nvml_replay import EnergyCounter, GiB, NvmlReplay, device, load_snapshot, machine, proc
from playwright.async_api import Browser

from api.chromium import launched
from controller.api import key_middleware, page
from controller.api.gpus import add_routes
from controller.gpus.nvml import read_inventory
from controller.telemetry.energy import EnergyMeter, Owner

WATTS = 129.254  # the recorded H200's power reading
SMOL = Owner("c-smollm2-0", "smollm2", 0, (4242,))


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched() as chromium:
        yield chromium


def sampled_meter() -> EnergyMeter:
    base = load_snapshot()
    gpu0 = device(base["devices"][0], 0, used=102 * GiB, procs=[proc(4242, 100), proc(777, 2)])
    gpu0["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(7_000_000, watts=WATTS, seconds=5.0)
    nvml = NvmlReplay(machine(base, [gpu0, device(base["devices"][0], 1)]))
    meter = EnergyMeter()
    for t in (0.0, 5.0):
        meter.sample(t, read_inventory(nvml), {"0": [SMOL]})
    return meter


async def test_the_gpu_panel_draws_ours_foreign_and_free_and_writes_every_figure(
    aiohttp_server: Any, browser: Browser
) -> None:
    app = web.Application()
    page.add_routes(app)
    add_routes(app, sampled_meter())
    server = await aiohttp_server(app)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab = await context.new_page()
    thrown: list[str] = []
    tab.on("pageerror", lambda exc: thrown.append(str(exc)))
    await tab.goto(str(server.make_url("/")))
    await tab.wait_for_function(
        "() => document.querySelectorAll('#gpus-body .gpu').length === 2", timeout=15_000
    )
    gpus = await tab.eval_on_selector_all(
        "#gpus-body .gpu",
        """gs => gs.map(g => {
            const bar = g.querySelector('.bar');
            const width = (s) => s ? s.getBoundingClientRect().width / bar.clientWidth : 0;
            return {title: g.querySelector('h3').innerText, facts: g.querySelector('.gpu-facts').innerText,
                    label: bar.getAttribute('aria-label'),
                    legend: [...g.querySelectorAll('.legend li')].map(li => li.innerText.trim()),
                    ours: [...bar.querySelectorAll('.ours')].map(width),
                    foreign: width(bar.querySelector('.foreign'))};
        })""",
    )
    status_line = await tab.inner_text("#connection")
    await context.close()
    assert thrown == []
    first, second = gpus
    assert first["title"] == "GPU 0: NVIDIA H200" and second["title"] == "GPU 1: NVIDIA H200"
    assert "power 129 W" in first["facts"] and "utilisation 0 %" in first["facts"], first
    assert "energy 7.6 kJ" in first["facts"], first  # the counter: 7,000,000 mJ + 129.254 W x 5 s
    assert "used 103 GiB of 140 GiB" in first["facts"], first  # 0.6 GiB the recording had, plus 102
    assert first["legend"] == ["smollm2-0 100 GiB", "foreign (not ours) 2.0 GiB", "free 38 GiB"], first
    assert first["label"] == "memory of GPU 0: ours 100 GiB, foreign 2.0 GiB, free 38 GiB of 140 GiB"
    (ours,) = first["ours"]
    assert ours == pytest.approx(100 / 140.4, abs=0.01) and first["foreign"] == pytest.approx(
        2 / 140.4, abs=0.005
    )
    assert second["ours"] == [] and second["legend"][0] == "foreign (not ours) 0 MiB", second
    # This app serves no /v1/status: the page says so instead of showing replicas it does not have.
    assert status_line.startswith("controller not answering: /v1/status: HTTP 404"), status_line


async def test_with_controller_keys_the_page_asks_for_one_and_sends_it(
    aiohttp_server: Any, browser: Browser, tmp_path: Path
) -> None:
    (tmp_path / "keys").write_text("console: sk-console-1\n")
    app = web.Application(middlewares=[key_middleware(tmp_path / "keys")])
    page.add_routes(app)
    add_routes(app, sampled_meter())
    server = await aiohttp_server(app)
    context = await browser.new_context()
    tab = await context.new_page()
    await tab.goto(str(server.make_url("/")))
    await tab.wait_for_selector("#key-form:not([hidden])", timeout=15_000)
    refused = await tab.inner_text("#gpus-body")
    focused = await tab.evaluate("document.activeElement.id")
    await tab.keyboard.type("sk-console-1")
    await tab.keyboard.press("Enter")
    await tab.wait_for_function(
        "() => document.querySelectorAll('#gpus-body .gpu').length === 2", timeout=15_000
    )
    hidden = await tab.evaluate("document.querySelector('#key-form').hidden")
    kept = await tab.evaluate("sessionStorage.getItem('modelctl-console-key')")
    await context.close()
    assert refused.startswith("not available: /v1/gpus: HTTP 401: no API key"), refused
    assert focused == "key-input" and hidden is True and kept == "sk-console-1"
