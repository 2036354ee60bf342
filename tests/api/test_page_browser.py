"""The console page in a real browser (Debian's chromium, driven by Playwright) against a real stack:
a controller with two llama.cpp replicas of SmolLM2 and its in-process gateway.

What a person would check by looking: the replicas are there with their state; traffic makes the
charts draw points; a replica killed with ``docker kill`` shows its reason within seconds; a broken
manifest shows file:line while the last good set keeps serving; the page reads in light and dark
and at phone width. Screenshots go to ``$MODELCTL_CONSOLE_SCREENSHOTS`` (the README's comes from
``MODELCTL_CONSOLE_SCREENSHOTS=docs/images``), else to the test's temporary folder.

Each wait has a deadline and fails saying what it waited for; the printed seconds are a record,
never an assertion.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
import pytest_asyncio
from integration import conftest as docker_backed
from integration.support import GGUF, manifest, serving, settings
from playwright.async_api import Browser, Page
from playwright.async_api import Error as PlaywrightError

from api.chromium import launched
from controller.app import RunningController
from controller.gateway.settings import GatewaySettings

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]

images = docker_backed.images  # the Docker-backed tests' fixtures: the llama.cpp image, the weights
model_root = docker_backed.model_root

GATEWAY = GatewaySettings(host="127.0.0.1", port=0)
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 30_000  # "within seconds": every page-side wait gives up after this and says what it missed


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("manifests")
    (folder / "smollm2.yaml").write_text(manifest())
    return folder


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    manifests: Path, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    config = settings(manifests, model_root, f"test-{uuid.uuid4().hex[:8]}")
    async with serving(config, GATEWAY, {"smollm2": 2}, docker_client) as rc:
        yield rc


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launched() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("MODELCTL_CONSOLE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@asynccontextmanager
async def opened(
    browser: Browser, rc: RunningController, *, viewport: dict[str, int] = DESKTOP, scheme: str = "light"
) -> AsyncIterator[Page]:
    """The console of ``rc`` in a fresh browser context; fails if the page's script threw or
    asked anything of another origin (it must work offline)."""
    context = await browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
    page = await context.new_page()
    thrown: list[str] = []
    elsewhere: list[str] = []
    page.on("pageerror", lambda exc: thrown.append(str(exc)))
    page.on("request", lambda r: None if r.url.startswith(f"{rc.api_url}/") else elsewhere.append(r.url))
    try:
        await page.goto(f"{rc.api_url}/")
        await until(page, "the first status", "document.querySelector('#connection').dataset.state === 'up'")
        yield page
    finally:
        await context.close()
    assert thrown == [], f"the page's script threw: {thrown}"
    assert elsewhere == [], f"the page asked another origin: {elsewhere}"


async def until(page: Page, what: str, expression: str, arg: Any = None, timeout_ms: int = WAIT_MS) -> float:
    """Wait until ``expression`` (a JS function body's value, given ``arg``) is truthy in the page;
    returns the seconds it took, or fails naming ``what`` with the page's replicas and errors."""
    started = time.monotonic()
    try:
        await page.wait_for_function(f"(arg) => {expression}", arg=arg, timeout=timeout_ms, polling=200)
    except PlaywrightError:
        seen = await page.evaluate(
            "() => ({rows: [...document.querySelectorAll('#replica-rows tr')].map(r => r.innerText),"
            " errors: document.querySelector('#errors-body').innerText,"
            " charts: document.querySelector('#charts-body').innerText.slice(0, 400)})"
        )
        pytest.fail(f"{what}: not within {timeout_ms / 1000:.0f}s; the page shows {json.dumps(seen)}")
    return time.monotonic() - started


async def api(rc: RunningController, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{rc.api_url}{path}") as resp:
        json_body = resp.status == 200 and resp.content_type == "application/json"
        return {"status": resp.status, "body": await resp.json() if json_body else await resp.text()}


async def chat(rc: RunningController, count: int) -> list[int]:
    body = {"model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> int:
            async with session.post(f"{rc.gateway_url}/v1/chat/completions", json=body) as resp:
                await resp.read()
                return resp.status

        statuses = []
        for _ in range(count // 2):
            statuses.extend(await asyncio.gather(one(), one()))
        return statuses


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


ROWS = "[...document.querySelectorAll('#replica-rows tr[data-model=\"smollm2\"]')]"


async def test_every_replica_is_there_with_its_state_age_and_endpoint(
    stack: RunningController, browser: Browser
) -> None:
    async with opened(browser, stack) as page:
        await until(page, "two Ready rows", f"{ROWS}.filter(r => r.dataset.state === 'Ready').length === 2")
        rows = await page.eval_on_selector_all(
            "#replica-rows tr",
            "rows => rows.map(r => ({state: r.dataset.state, replica: r.dataset.replica,"
            " cells: [...r.cells].map(c => c.innerText.trim())}))",
        )
        status = (await api(stack, "/v1/status"))["body"]
    assert len(rows) == len(status["replicas"]) == 2
    by_replica = {r["replica"]: r for r in status["replicas"]}
    for row in rows:
        model, replica, state, age, restarts, endpoint, _reason, logs = row["cells"]
        truth = by_replica[int(replica)]
        assert (model, state.split()[-1], restarts) == ("smollm2", "Ready", str(truth["restarts"])), row
        assert endpoint == truth["endpoint"] and endpoint.startswith("http://"), row
        assert age.endswith(("s", "m")) and age[:-1].isdigit(), row
        assert logs == "logs", row


async def test_a_replicas_engine_log_opens_on_demand_from_the_keyboard(
    stack: RunningController, browser: Browser
) -> None:
    async with opened(browser, stack) as page:
        await until(page, "a logs button", "document.querySelector('#replica-rows button')")
        for _ in range(40):  # Tab through the links to the first replica's logs button
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.matches('#replica-rows button')"):
                break
        container = await page.evaluate("document.activeElement.closest('tr').dataset.container")
        await page.keyboard.press("Enter")
        await until(page, "the log dialog", "document.querySelector('#logs').open")
        await until(
            page, "the log fetched", "!document.querySelector('#logs-status').innerText.includes('loading')"
        )
        heading = await page.inner_text("#logs-h")
        shown = await page.inner_text("#logs-text")
        said = await page.inner_text("#logs-status")
        route = await api(stack, f"/v1/replicas/{container}/logs?tail=200")
        await page.keyboard.press("Escape")
        await until(page, "the dialog closed by Escape", "!document.querySelector('#logs').open")
        back = await page.evaluate("document.activeElement.closest('tr')?.dataset.container")
    print(f"\nlog dialog of {container}: {said}; route answered {route['status']}")
    assert heading == f"Engine log: {container}"
    assert back == container  # focus returns to the button that opened it
    if route["status"] == 200:
        assert shown.strip() and shown.strip().splitlines()[-1] in route["body"], shown[-500:]
        assert "llama" in shown.lower() or "server" in shown.lower(), shown[-500:]
        assert said.startswith("last 200 lines")
    else:  # the route is not there: the dialog says so instead of showing nothing
        assert said.startswith("not available:") and shown == "", said


async def test_traffic_makes_the_charts_draw_points(stack: RunningController, browser: Browser) -> None:
    async with opened(browser, stack) as page:
        series = await api(stack, "/v1/console/series")
        deadline = time.monotonic() + 20  # the first scrape comes one step (5 s) after the start
        while series["status"] == 200 and not series["body"].get("available") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            series = await api(stack, "/v1/console/series")
        if series["status"] != 200 or not series["body"].get("available"):
            await until(
                page, "the charts panel saying why", "document.querySelector('#charts-body .unavailable')"
            )
            text = await page.inner_text("#charts-body")
            reason = series["body"]["reason"] if series["status"] == 200 else f"HTTP {series['status']}"
            assert text.startswith("not available:") and reason.split(":")[0] in text, (text, series)
            pytest.fail(f"/v1/console/series has no figures here ({series}); the page said: {text}")
        statuses = await chat(stack, 12)
        assert statuses == [200] * 12
        took = await until(
            page,
            "points on the requests/s chart",
            'Number(document.querySelector(\'figure[data-model="smollm2"][data-metric="requests"]\')'
            "?.dataset.points) >= 2",
            timeout_ms=60_000,
        )
        await chat(stack, 8)
        await until(
            page,
            "time to first token drawn",
            'Number(document.querySelector(\'figure[data-model="smollm2"][data-metric="ttft"]\')'
            "?.dataset.points) >= 1",
            timeout_ms=60_000,
        )
        charts = await page.eval_on_selector_all(
            "figure.chart[data-model='smollm2']",
            "fs => fs.map(f => ({metric: f.dataset.metric, points: Number(f.dataset.points),"
            " canvas: !!f.querySelector('canvas'), latest: f.querySelector('.latest').innerText}))",
        )
        requests = await page.inner_text("#requests-body")
    print(f"\ncharts drew points {took:.1f}s after the first requests: {charts}")
    metrics = {c["metric"]: c for c in charts}
    assert {"requests", "ttft", "tokens", "queue", "errors"} <= set(metrics)
    assert all(c["canvas"] for c in charts), charts
    assert metrics["requests"]["latest"] != "no data yet" and metrics["tokens"]["points"] >= 1, charts
    assert "200" in requests and "openai" in requests, requests


# Every (state, reason / progress) replica 0's row shows, in order: a record, not an assertion (a
# Starting llama.cpp replica of SmolLM2 may be Ready before the page's next poll).
RECORD_STATES = """() => {
  window.seenStates = [];
  const note = () => {
    for (const r of document.querySelectorAll('#replica-rows tr[data-replica="0"]')) {
      const seen = `${r.dataset.state}: ${r.cells[6].innerText.trim()}`;
      if (window.seenStates.at(-1) !== seen) window.seenStates.push(seen);
    }
  };
  new MutationObserver(note).observe(document.querySelector('#replica-rows'),
    {subtree: true, childList: true, characterData: true, attributes: true});
}"""


async def test_a_killed_replica_shows_its_reason_within_seconds(
    stack: RunningController, browser: Browser, docker_client: docker.DockerClient
) -> None:
    async with opened(browser, stack) as page:
        await until(page, "two Ready rows", f"{ROWS}.filter(r => r.dataset.state === 'Ready').length === 2")
        victim = await page.eval_on_selector(
            "#replica-rows tr[data-replica='0']",
            "r => ({container: r.dataset.container, restarts: r.cells[4].innerText})",
        )
        await page.evaluate(RECORD_STATES)
        killed_at = time.monotonic()
        docker_client.containers.get(victim["container"]).kill()
        took = await until(
            page,
            "replica 0 showing why it stopped",
            f"{ROWS}.some(r => r.dataset.replica === '0' && r.innerText.includes('exit code 137'))",
        )
        row = await page.eval_on_selector_all(
            "#replica-rows tr[data-replica='0']", "rs => rs.map(r => [r.dataset.state, r.innerText])"
        )
        await until(
            page,
            "the crash in the events",
            "[...document.querySelectorAll('#events-body tr[data-kind=\"crashed\"]')]"
            ".some(r => r.innerText.includes('exit code 137'))",
        )
        events = await page.inner_text("#events-body")
        seqs = await page.eval_on_selector_all(
            "#events-body tr[data-seq]", "rs => rs.map(r => Number(r.dataset.seq))"
        )
        await until(
            page,
            "replica 0 Ready again",
            f"{ROWS}.filter(r => r.dataset.state === 'Ready').length === 2",
            timeout_ms=90_000,
        )
        restarts = await page.eval_on_selector(
            "#replica-rows tr[data-replica='0']", "r => r.cells[4].innerText"
        )
        seen = await page.evaluate("window.seenStates")
    print(f"\nkilled {victim['container']}: the page showed the reason {took:.1f}s later: {row}")
    print(f"kill to Ready again: {time.monotonic() - killed_at:.1f}s; events panel: {events[:300]!r}")
    print(f"replica 0 went through: {seen}")
    assert any("killed" in text for _state, text in row), row
    assert int(restarts) == int(victim["restarts"]) + 1
    assert any("crashed" in line and "smollm2-0" in line for line in events.splitlines()), events
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs), seqs  # newest first, once each


async def test_a_broken_manifest_shows_file_line_while_the_last_good_set_serves(
    stack: RunningController, browser: Browser, manifests: Path
) -> None:
    async with opened(browser, stack) as page:
        await until(page, "no manifest error", "document.querySelector('#errors-body [data-errors=\"0\"]')")
        (manifests / "broken.yaml").write_text("name: broken\nmodel: x.gguf\nreplicas: many\n")
        try:
            took = await until(
                page,
                "the error with file:line",
                "document.querySelector('#errors-body').innerText.includes('broken.yaml:3')",
            )
            where = await page.inner_text("#errors-body .where")
            shown = await page.inner_text("#errors-body")
            plan = await api(stack, "/v1/plan")
            if plan["status"] == 200:
                await until(
                    page,
                    "the plan naming the error",
                    "document.querySelector('#plan-body').innerText.includes('broken.yaml')",
                )
            plan_text = await page.inner_text("#plan-body")
        finally:
            (manifests / "broken.yaml").unlink()
        await until(
            page,
            "the error gone once the file is",
            "document.querySelector('#errors-body [data-errors=\"0\"]')",
        )
    print(f"\nbroken manifest on the page {took:.1f}s after writing it: {shown!r}")
    assert where.endswith("broken.yaml:3"), where
    assert "field 'replicas'" in shown and "valid integer" in shown
    assert "still serving: 2 ready replicas (smollm2)" in shown, shown
    assert plan["status"] == 200 or plan_text.startswith("not available:"), plan_text


async def test_panels_without_figures_say_why_instead_of_inventing_them(
    stack: RunningController, browser: Browser
) -> None:
    gpus = await api(stack, "/v1/gpus")
    energy = (await api(stack, "/v1/status"))["body"]["energy"]
    async with opened(browser, stack) as page:
        await until(
            page,
            "the GPU panel filled",
            "!document.querySelector('#gpus-body').innerText.includes('loading')",
        )
        gpu_text = await page.inner_text("#gpus-body")
        energy_text = await page.inner_text("#energy-body")
        await page.route(
            "**/v1/console/series", lambda route: route.fulfill(status=503, json={"error": "scraper down"})
        )
        await until(
            page,
            "the charts saying the route failed",
            "document.querySelector('#charts-body').innerText.includes('HTTP 503')",
        )
        charts_text = await page.inner_text("#charts-body")
        await page.route("**/v1/status", lambda route: route.abort("connectionrefused"))
        await until(
            page, "the page noticing", "document.querySelector('#connection').dataset.state === 'down'"
        )
        down = await page.inner_text("#connection")
        note = await page.inner_text("#replicas [data-role=note]")
        kept = await page.eval_on_selector_all("#replica-rows tr", "rs => rs.length")
    if gpus["status"] == 200 and not gpus["body"]["available"]:  # this machine has no NVIDIA GPU
        assert gpu_text == f"not available: {gpus['body']['reason']}", gpu_text
    elif gpus["status"] != 200:
        assert gpu_text.startswith("not available: /v1/gpus: HTTP"), gpu_text
    if not energy["available"]:  # no GPU: no joules, and the reason NVML gave
        assert energy_text == f"not available: {energy['reason']}", energy_text
    else:
        assert "J / output token" in energy_text and energy["models"][0]["model"] in energy_text
    assert charts_text == "not available: /v1/console/series: HTTP 503: scraper down", charts_text
    assert down.startswith("controller not answering: the controller does not answer"), down
    assert kept == 2 and "the rows below are as of" in note, note  # the last answer, said to be old


CONTRAST = """() => {
  const rgb = (s) => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => { const [r, g, b] = c.map(lin); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const bg = lum(rgb(getComputedStyle(document.body).backgroundColor));
  const ratio = (el) => {
    const l = lum(rgb(getComputedStyle(el).color));
    return (Math.max(l, bg) + 0.05) / (Math.min(l, bg) + 0.05);
  };
  const els = [...document.querySelectorAll(
    '.badge, .muted, nav a, h2, h3, td, .unavailable, .latest, figcaption, .plan-lines li, .legend li,'
    + ' .errors li')];
  return {bg, worst: Math.min(...els.map(ratio)), count: els.length,
          badges: [...document.querySelectorAll('#replica-rows .badge')].map(b => b.innerText)};
}"""


async def test_the_page_reads_in_light_and_dark(stack: RunningController, browser: Browser) -> None:
    """Light first, then the system switches to dark (emulated): colours follow, charts redraw."""
    await chat(stack, 4)
    async with opened(browser, stack, scheme="light") as page:
        await until(
            page, "the replica rows and a chart", f"{ROWS}.length === 2 && document.querySelector('canvas')"
        )
        light = await page.evaluate(CONTRAST)
        await page.evaluate("window.lightCanvas = document.querySelector('figure.chart canvas')")
        await page.emulate_media(color_scheme="dark")
        await until(
            page,
            "the charts redrawn in dark",
            "document.querySelector('figure.chart canvas') && "
            "document.querySelector('figure.chart canvas') !== window.lightCanvas",
        )
        dark = await page.evaluate(CONTRAST)
    for scheme, seen in (("light", light), ("dark", dark)):
        print(
            f"\n{scheme}: background luminance {seen['bg']:.3f},"
            f" worst of {seen['count']} texts {seen['worst']:.2f}:1"
        )
        assert seen["worst"] >= 4.5, seen  # WCAG AA for body text, every text checked
        assert seen["badges"] and all(
            b.split()[-1] in {"Ready", "Starting", "BackingOff"} for b in seen["badges"]
        )
    assert light["bg"] > 0.9 and dark["bg"] < 0.05, (light, dark)


async def test_screenshots_at_laptop_and_phone_width(
    stack: RunningController, browser: Browser, shots: Path
) -> None:
    await chat(stack, 6)
    async with opened(browser, stack) as page:
        await until(page, "two Ready rows", f"{ROWS}.filter(r => r.dataset.state === 'Ready').length === 2")
        await until(
            page, "the charts drawn", "document.querySelector('figure.chart canvas')", timeout_ms=60_000
        )
        await page.wait_for_timeout(500)  # let the charts paint their last frame
        await page.screenshot(path=shots / "console.png")
    async with opened(browser, stack, viewport=PHONE) as page:
        await until(page, "two Ready rows", f"{ROWS}.filter(r => r.dataset.state === 'Ready').length === 2")
        layout = await page.evaluate(
            "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
            " row: getComputedStyle(document.querySelector('#replica-rows tr')).display})"
        )
        await page.screenshot(path=shots / "console-phone.png", full_page=True)
    print(f"\nscreenshots in {shots}; phone layout {layout}")
    assert png_size(shots / "console.png") == (1280, 900)
    width, height = png_size(shots / "console-phone.png")
    assert width == PHONE["width"] and height > PHONE["height"]
    assert layout["scroll"] <= layout["inner"], layout  # nothing wider than the phone
    assert layout["row"] == "block", layout  # replica rows stack as cards


async def test_an_on_demand_model_shows_scaled_to_zero_then_started_by_a_request(
    stack: RunningController, browser: Browser, manifests: Path
) -> None:
    coder = (
        f"name: coder\nmodel: {GGUF}\nmin_replicas: 0\nmax_replicas: 1\nidle_timeout: 10m\n"
        "max_batch_size: 1\ncontext_length: 512\n"
    )
    on_demand_row = (
        "[...document.querySelectorAll('#scaling tbody tr')].find(r => r.cells[0].innerText === 'coder')"
    )
    async with opened(browser, stack) as page:
        (manifests / "coder.yaml").write_text(coder)
        try:
            await until(
                page, "coder scaled to zero", f"{on_demand_row}?.innerText.includes('scaled to zero')"
            )
            idle = await page.evaluate(f"() => {on_demand_row}.innerText")
            body = {"model": "coder", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
                session.post(f"{stack.gateway_url}/v1/chat/completions", json=body) as resp,
            ):
                assert resp.status == 200, await resp.text()
            took = await until(
                page, "coder ready after the request", f"{on_demand_row}?.cells[1].innerText === '1 / 1'"
            )
            busy = await page.evaluate(f"() => {on_demand_row}.innerText")
            state = await page.get_attribute("#replica-rows tr[data-key^='coder/']", "data-state")
        finally:
            (manifests / "coder.yaml").unlink()
        await until(page, "coder gone with its manifest", f"!{on_demand_row}")
    print(f"\non demand: {idle!r} -> {busy!r} ({took:.1f}s after the answer)")
    cells = idle.split("\t")
    assert cells[:3] == ["coder", "0 / 0", "0\u20131"], cells  # the range with an en dash
    assert "never" in idle and "ago" in busy and state == "Ready"
