"""``GET /v1/console/series`` and ``GET /v1/console/requests``: the console's charts and last
requests, as the gateway scraper (``controller.telemetry.series``) keeps them (docs/console.md)."""

from __future__ import annotations

from aiohttp import web

from controller.telemetry.series import GatewayScraper


def add_routes(app: web.Application, scraper: GatewayScraper) -> None:
    """Serve ``/v1/console/series`` and ``/v1/console/requests`` from ``scraper`` on ``app``."""

    async def series(request: web.Request) -> web.Response:
        return web.json_response(scraper.series())

    async def requests(request: web.Request) -> web.Response:
        return web.json_response(scraper.requests())

    app.router.add_get("/v1/console/series", series)
    app.router.add_get("/v1/console/requests", requests)
