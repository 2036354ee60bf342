"""Serving the gateway in a process of its own: follow the controller, bind the port, run.

``run_gateway`` is what ``modelctl gateway`` calls. With ``workers`` > 1 it hands ``serve`` to
``workers.run_workers``, which runs it in that many processes on one port. ``listen`` binds an app
the way it is served: handlers cancelled when their client leaves, a connection without a request
in progress closed after ``idle_timeout_s`` (idle keep-alive, or a head trickling in: slowloris;
aiohttp's keep-alive timer runs from the connection's start and from each answer's end, and only
a complete request head stops it), and at most ``max_connections`` connections (aiohttp has no
bound of its own).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from aiohttp import web

from controller.errors import CannotListen
from controller.gateway import errors
from controller.gateway.admission.demand import ControllerSink, DemandSink
from controller.gateway.app import create_app
from controller.gateway.auth import access_line
from controller.gateway.serving.httplog import server_logger
from controller.gateway.serving.process import tune_gc
from controller.gateway.serving.workers import run_workers
from controller.gateway.settings import GatewaySettings, SettingsError
from controller.gateway.tables.dns import DnsTable
from controller.gateway.tables.source import ControllerTable

# What a connection over ``max_connections`` gets before it is closed (it has sent nothing yet).
_TOO_MANY_BODY = json.dumps(
    errors.error_body("The gateway serves too many connections. Retry later.", type_=errors.SERVER_ERROR)
).encode()
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TOO_MANY_BODY), _TOO_MANY_BODY)
)


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
        runner = app_runner(app, settings)
        try:
            await listen(runner, settings, settings.host, settings.port, reuse_port=reuse_port)
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


def app_runner(app: web.Application, settings: GatewaySettings) -> web.AppRunner:
    """The runner the gateway is served by: handlers cancelled when their client leaves, idle
        connections (and heads trickling in) closed after ``idle_timeout_s``, unparseable requests
    logged as a count (``httplog``)."""
    return web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=settings.idle_timeout_s,
        logger=server_logger(),  # parse errors: a line a minute, not a traceback each
    )


async def listen(
    runner: web.AppRunner, settings: GatewaySettings, host: str, port: int, *, reuse_port: bool = False
) -> web.TCPSite:
    """Set ``runner`` up and serve it on ``host``:``port``, at most ``max_connections`` at once;
    return the site. Raises CannotListen."""
    await runner.setup()
    assert runner.server is not None
    limit_connections(runner.server, settings.max_connections)
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        raise CannotListen("the gateway", host, port, exc) from exc
    return site


def limit_connections(server: web.Server, most: int) -> None:
    """Answer 503 to connections beyond ``most`` and close them as they come."""
    made = server.connection_made

    def connection_made(handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        made(handler, transport)
        if len(server.connections) > most:
            transport.write(_TOO_MANY)
            transport.close()

    server.connection_made = connection_made  # type: ignore[method-assign]


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
