"""``GET /v1/gpus``: each GPU's memory, utilisation, power and energy as the energy meter
(``controller.telemetry.energy``) last sampled them (docs/console.md)."""

from __future__ import annotations

from aiohttp import web

from controller.telemetry.energy import EnergyMeter


def add_routes(app: web.Application, meter: EnergyMeter) -> None:
    """GET /v1/gpus."""

    async def gpus(request: web.Request) -> web.Response:
        return web.json_response(meter.gpus())

    app.router.add_get("/v1/gpus", gpus)
