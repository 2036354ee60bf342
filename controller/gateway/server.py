"""Serving the gateway in a process of its own: follow the controller, bind the port, run.

``run_gateway`` is what ``modelctl gateway`` calls. With ``workers`` > 1 it hands ``serve`` to
``workers.run_workers``, which runs it in that many processes on one port.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from controller.errors import CannotListen
from controller.gateway.app import create_app
from controller.gateway.auth import access_line
from controller.gateway.demand import ControllerSink, DemandSink
from controller.gateway.dns import DnsTable
from controller.gateway.process import tune_gc
from controller.gateway.settings import GatewaySettings, SettingsError
from controller.gateway.table import ControllerTable
from controller.gateway.workers import run_workers


async def run_gateway(settings: GatewaySettings) -> None:
    """Serve the gateway, following the controller at ``settings.controller_url``, until cancelled.

    Returns only by cancellation (or raises CannotListen if the port cannot be bound,
    GatewayWorkersFailed if a worker process dies). The controller being down is not an error: the
    gateway serves its last table and keeps polling. With ``workers`` > 1, that many processes share
    the port (SO_REUSEPORT).
    """
    print(access_line(settings), flush=True)
    if settings.workers > 1:
        await run_workers(settings, serve)
    else:
        await serve(settings, reuse_port=False)


async def serve(settings: GatewaySettings, *, reuse_port: bool, announce: bool = True) -> None:
    """One serving process: follow the controller, report demand to it, serve the port, until cancelled.

    Each worker process reports its own demand (under its own reporter id); the controller adds
    the reports up.
    """
    key = settings.controller_key
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with aiohttp.ClientSession(headers=headers) as controller_session:
        table, sink, following = table_source(settings, controller_session)
        follower = asyncio.create_task(table.run(), name="gateway-endpoint-table")
        app = create_app(table, settings, demand_sink=sink)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        try:
            await runner.setup()
            site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
            try:
                await site.start()
            except OSError as exc:
                raise CannotListen("the gateway", settings.host, settings.port, exc) from exc
            if settings.tune_gc:
                tune_gc()  # this process serves from now on
            if announce:
                workers = f" ({settings.workers} worker processes)" if settings.workers > 1 else ""
                print(
                    f"modelctl gateway listening on http://{settings.host}:{settings.port}/v1{workers}, "
                    f"following {following}",
                    flush=True,
                )
            await asyncio.Event().wait()
        finally:
            follower.cancel()
            await asyncio.wait([follower])
            await runner.cleanup()


def table_source(
    settings: GatewaySettings, session: aiohttp.ClientSession
) -> tuple[ControllerTable | DnsTable, DemandSink | None, str]:
    """The table source ``settings.table`` names, its demand sink, and words for the start-up line.
    DNS (Kubernetes, a Docker network alias) has no controller to report demand to."""
    if settings.table == "controller":
        url = settings.controller_url
        return ControllerTable(url, session), ControllerSink(url, session), f"the controller at {url}"
    if settings.table == "dns":
        if not settings.models_file:
            raise SettingsError("MODELCTL_GATEWAY_TABLE=dns needs MODELCTL_GATEWAY_MODELS (the models file)")
        source = DnsTable(Path(settings.models_file), interval_s=settings.dns_interval_s)
        return source, None, f"DNS for the models in {settings.models_file}"
    raise SettingsError(f"MODELCTL_GATEWAY_TABLE={settings.table!r}: use 'controller' or 'dns'")
