"""The console's series from the gateway's own exposition: documents rendered by the real
GatewayMetrics, read the way the scraper reads them, and the scraper over HTTP against a real
gateway app (rates, quantiles of each step, resets, gaps, the bounded window, the last requests)."""

from __future__ import annotations

import math
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller.api.series import add_routes
from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.errors import ModelctlError
from controller.gateway.app import create_app
from controller.gateway.settings import GatewaySettings
from controller.gateway.tables.source import StaticTable
from controller.gateway.telemetry.metrics import GatewayMetrics
from controller.settings import ControllerSettings
from controller.telemetry.series import GatewayScraper, Scrape, SeriesBook, quantile

TABLE = EndpointTable(
    version=1,
    models=(
        ModelEndpoints(
            name="m",
            aliases=(),
            created=1764120000,
            replicas=(Replica("m-0", "http://m-0", 4), Replica("m-1", "http://m-1", 4)),
        ),
    ),
)


class Gateway:
    """The real GatewayMetrics over a fixed table, with in-flight and queue figures the test sets."""

    def __init__(self) -> None:
        self.in_flight = {"m-0": 0, "m-1": 0}
        self.queued = {"m": 0}
        self.metrics = GatewayMetrics(StaticTable(TABLE), self.in_flight.__getitem__, self.queued.__getitem__)

    def serve(self, count: int, *, status: int = 200, ttfb_s: float | None = None, tokens: int = 0) -> None:
        for _ in range(count):
            self.metrics.request("m", "m-0", status, 0.5)
            if ttfb_s is not None:
                self.metrics.first_byte("m", ttfb_s)
            self.metrics.tokens("m", "openai", 3, tokens)

    def at(self, t: float) -> Scrape:
        return Scrape.parse(t, self.metrics.render().decode())


def column(book: SeriesBook, field: str, model: str = "m") -> list[float | None]:
    return book.to_json()[model][field]


def test_rates_are_the_counters_deltas_over_the_step() -> None:
    gateway, book = Gateway(), SeriesBook(step_s=5)
    gateway.serve(4, tokens=10)  # before the first scrape: no rate can be told
    gateway.in_flight["m-0"], gateway.in_flight["m-1"], gateway.queued["m"] = 2, 1, 3
    book.add(gateway.at(100.0))
    gateway.serve(6, tokens=5)
    gateway.serve(2, status=500)
    gateway.serve(1, status=429)  # refused: an error
    gateway.serve(1, status=499)  # the client left: not an error
    book.add(gateway.at(105.0))
    assert column(book, "t") == [100.0, 105.0]
    assert column(book, "requests_per_s") == [None, 2.0]
    assert column(book, "errors_per_s") == [None, 0.6]
    assert column(book, "output_tokens_per_s") == [None, 6.0]
    assert column(book, "in_flight") == [3.0, 3.0]
    assert column(book, "queue_depth") == [3.0, 3.0]
    assert column(book, "joules_per_token") == [None, None]  # no meter given


def test_time_to_first_token_quantiles_are_of_each_step_alone() -> None:
    gateway, book = Gateway(), SeriesBook(step_s=5)
    book.add(gateway.at(0.0))
    gateway.serve(10, ttfb_s=0.03)  # all in the bucket (0.025, 0.05]
    book.add(gateway.at(5.0))
    gateway.serve(4, ttfb_s=0.7)  # all in (0.5, 0.75]: the earlier ones must not count
    book.add(gateway.at(10.0))
    gateway.serve(3)  # answered without a first byte (the gateway's own errors)
    book.add(gateway.at(15.0))
    p50, p95 = column(book, "ttft_p50_s"), column(book, "ttft_p95_s")
    assert p50[1] == pytest.approx(0.025 + 0.025 * 5 / 10)
    assert p95[1] == pytest.approx(0.025 + 0.025 * 9.5 / 10)
    assert p50[2] == pytest.approx(0.5 + 0.25 * 2 / 4)
    assert p50[0] is None and p50[3] is None and p95[3] is None


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 0.0), (1.0, 4.0), (math.inf, 4.0)], 0.1 + 0.9 * 2 / 4),
        (0.5, [(0.1, 2.0), (1.0, 2.0), (math.inf, 2.0)], 0.05),  # the first bucket starts at 0
        (0.99, [(0.1, 1.0), (1.0, 1.0), (math.inf, 5.0)], 1.0),  # beyond the last bound: that bound
        (0.5, [(0.1, 0.0), (math.inf, 0.0)], None),
        (0.5, [], None),
    ],
)
def test_quantile_interpolates_as_prometheus_does(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    assert quantile(q, buckets) == (pytest.approx(expected) if expected is not None else None)


def test_a_restarted_gateway_gives_its_new_counts_never_a_negative_rate() -> None:
    book = SeriesBook(step_s=5)
    before = Gateway()
    before.serve(20, ttfb_s=0.2, tokens=2)
    book.add(before.at(0.0))
    fewer = Gateway()  # restarted, with fewer requests than before: the counter went down
    fewer.serve(5, ttfb_s=0.2, tokens=2)
    book.add(fewer.at(5.0))
    more = Gateway()  # restarted again, with more than before: told by its new _created times
    more.serve(30, ttfb_s=0.2, tokens=2)
    book.add(more.at(10.0))
    assert column(book, "requests_per_s") == [None, 1.0, 6.0]
    assert column(book, "output_tokens_per_s") == [None, 2.0, 12.0]
    assert column(book, "ttft_p50_s")[1:] == [pytest.approx(0.1 + 0.15 * 0.5)] * 2


def test_a_failed_scrape_is_a_gap_and_the_next_one_measures_since_the_last_good_one() -> None:
    gateway, book = Gateway(), SeriesBook(step_s=5)
    book.add(gateway.at(0.0))
    gateway.serve(10)
    book.missed(5.0)
    gateway.serve(10)
    book.add(gateway.at(10.0))
    assert column(book, "t") == [0.0, 5.0, 10.0]
    assert column(book, "requests_per_s") == [None, None, 2.0]
    assert column(book, "queue_depth") == [0.0, None, 0.0]


def test_the_window_holds_its_points_and_a_model_without_figures_leaves() -> None:
    gateway, book = Gateway(), SeriesBook(step_s=5, window_s=30)
    for step in range(10):
        gateway.serve(step)
        book.add(gateway.at(step * 5.0))
    assert column(book, "t") == [20.0, 25.0, 30.0, 35.0, 40.0, 45.0]
    assert column(book, "requests_per_s") == [0.8, 1.0, 1.2, 1.4, 1.6, 1.8]
    for step in range(10, 15):
        book.missed(step * 5.0)
    assert column(book, "t")[-1] == 70.0  # one point with figures is left in the window
    book.missed(75.0)
    assert book.to_json() == {}


def test_output_tokens_reach_the_meter_counted_across_restarts_and_joules_come_back() -> None:
    seen: list[tuple[float, str, float]] = []
    book = SeriesBook(
        step_s=5,
        on_tokens=lambda t, model, total: seen.append((t, model, total)),
        joules_per_token=lambda m: 1.5,
    )
    first = Gateway()
    first.serve(2, tokens=10)
    book.add(first.at(0.0))
    first.serve(1, tokens=10)
    book.add(first.at(5.0))
    restarted = Gateway()
    restarted.serve(1, tokens=4)
    book.add(restarted.at(10.0))
    assert seen == [(0.0, "m", 20.0), (5.0, "m", 30.0), (10.0, "m", 34.0)]
    assert column(book, "joules_per_token") == [1.5, 1.5, 1.5]


def test_a_bad_step_is_refused() -> None:
    with pytest.raises(ValueError, match="step_s"):
        SeriesBook(step_s=0)


async def replica(request: web.Request) -> web.Response:
    """A replica's chat answer, as llama-server gives it (with usage)."""
    return web.json_response(
        {
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    )


async def test_the_scraper_reads_a_real_gateway_and_the_console_serves_it(aiohttp_server: Any) -> None:
    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", replica)
    served = await aiohttp_server(upstream)
    url = str(served.make_url("")).rstrip("/")
    table = EndpointTable(
        version=1,
        models=(ModelEndpoints(name="m", aliases=(), created=1, replicas=(Replica("m-0", url, 4),)),),
    )
    gateway = await aiohttp_server(create_app(StaticTable(table), GatewaySettings()))
    base = str(gateway.make_url("")).rstrip("/")
    clock = iter([100.0, 105.0])
    scraper = GatewayScraper(base, step_s=5, clock=lambda: next(clock))
    console = web.Application()
    add_routes(console, scraper)
    api = await aiohttp_server(console)
    async with aiohttp.ClientSession() as session:
        waiting = await (await session.get(api.make_url("/v1/console/series"))).json()
        assert waiting["available"] is False and base in waiting["reason"]
        await scraper.scrape(session)
        ask = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
        for _ in range(5):
            async with session.post(f"{base}/v1/chat/completions", json=ask) as resp:
                assert resp.status == 200
        await scraper.scrape(session)
        series = await (await session.get(api.make_url("/v1/console/series"))).json()
        last = await (await session.get(api.make_url("/v1/console/requests"))).json()
    assert (series["available"], series["reason"], series["step_s"], series["window_s"]) == (True, "", 5, 900)
    assert series["models"]["m"]["t"] == [100.0, 105.0]
    assert series["models"]["m"]["requests_per_s"] == [None, 1.0]
    assert series["models"]["m"]["output_tokens_per_s"] == [None, 3.0]
    assert last["available"] is True and len(last["models"]["m"]) == 5
    assert {(r["replica"], r["prompt_tokens"], r["output_tokens"]) for r in last["models"]["m"]} == {
        ("m-0", 7, 3)
    }


async def test_an_unreachable_or_unset_gateway_is_said_plainly() -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{sock.getsockname()[1]}"
    scraper = GatewayScraper(nowhere, step_s=5)
    async with aiohttp.ClientSession() as session:
        await scraper.scrape(session)
    series, last = scraper.series(), scraper.requests()
    assert series["available"] is False and last["available"] is False
    assert series["reason"].startswith(f"scraping {nowhere}/metrics failed: ClientConnectorError")
    assert last["reason"].startswith(f"scraping {nowhere}/metrics/requests failed")
    unset = GatewayScraper(None).series()
    assert unset["available"] is False and "MODELCTL_GATEWAY_URL" in unset["reason"]


def test_where_the_gateway_is_and_how_often_come_from_the_environment() -> None:
    env = {"MODELCTL_GATEWAY_URL": "http://gateway:8080", "MODELCTL_CONSOLE_STEP_S": "0.5"}
    settings = ControllerSettings.from_env(env)
    assert (settings.gateway_url, settings.console_step_s) == ("http://gateway:8080", 0.5)
    assert ControllerSettings.from_env({}).gateway_url is None
    for bad, says in (("fast", "not a valid float"), ("0", "above 0"), ("1000", "at most 900")):
        with pytest.raises(ModelctlError, match=f"MODELCTL_CONSOLE_STEP_S=.*{says}"):
            ControllerSettings.from_env({"MODELCTL_CONSOLE_STEP_S": bad})


async def test_a_gateway_that_wants_a_key_on_metrics_is_scraped_with_modelctl_gateway_key(
    aiohttp_server: Any,
) -> None:
    table = EndpointTable(version=1, models=())
    settings = GatewaySettings(api_keys=("sk-scrape",), metrics_require_key=True)
    gateway = await aiohttp_server(create_app(StaticTable(table), settings))
    base = str(gateway.make_url("")).rstrip("/")
    keyless, keyed = GatewayScraper(base, step_s=5), GatewayScraper(base, step_s=5, key="sk-scrape")
    async with aiohttp.ClientSession() as session:
        await keyless.scrape(session)
        await keyed.scrape(session)
    assert keyless.series()["available"] is False and "MODELCTL_GATEWAY_KEY" in keyless.series()["reason"]
    assert keyed.series()["available"] is True and keyed.requests()["available"] is True
    assert "sk-scrape" not in repr(ControllerSettings.from_env({"MODELCTL_GATEWAY_KEY": "sk-scrape"}))
    assert ControllerSettings.from_env({"MODELCTL_GATEWAY_KEY": "sk-scrape"}).gateway_key == "sk-scrape"
