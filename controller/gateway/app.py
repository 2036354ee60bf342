"""The gateway's composition root: settings, the aiohttp application, and the serving loop.

``create_app`` wires a table source, a balancer and a proxy into an aiohttp app; tests and an
in-process controller call it with a ``StaticTable``. ``run_gateway`` is what ``modelctl gateway``
calls: it follows the controller's table over HTTP and serves until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from controller.errors import CannotListen
from controller.gateway import errors
from controller.gateway.admission import Admission
from controller.gateway.auth import KeyCheck, refusal
from controller.gateway.balancer import Balancer
from controller.gateway.metrics import GatewayMetrics
from controller.gateway.peers import Peers
from controller.gateway.proxy import Proxy
from controller.gateway.routes import Routes
from controller.gateway.settings import GatewaySettings, SettingsError
from controller.gateway.table import ControllerTable, TableSource
from controller.gateway.upstream import Pool
from controller.gateway.workers import tune_gc

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The app's balancer, for whoever needs its in-flight counts (tests); its metrics and queues.
BALANCER = web.AppKey("modelctl.balancer", Balancer)
METRICS = web.AppKey("modelctl.metrics", GatewayMetrics)
ADMISSION = web.AppKey("modelctl.admission", Admission)

__all__ = [
    "ADMISSION",
    "BALANCER",
    "METRICS",
    "GatewaySettings",
    "SettingsError",
    "create_app",
    "run_gateway",
]


def gateway_middleware(keys: KeyCheck) -> Middleware:
    """The app's one middleware (one coroutine frame on the request path, not one per concern).

    With API keys configured it answers 401 to requests outside ``auth.OPEN_PATHS`` without a valid
    key, before any handler (unknown routes included). It turns aiohttp's own errors (unknown route,
    wrong method) and bugs into OpenAI error JSON.
    """
    check = keys if keys else None

    @web.middleware
    async def gateway(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if check is not None:
            denied = refusal(check, request)
            if denied is not None:
                return denied
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            type_ = errors.INVALID_REQUEST if exc.status < 500 else errors.SERVER_ERROR
            message = f"{request.method} {request.path}: {exc.reason}"
            return errors.error_response(exc.status, message, type_=type_)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return errors.error_response(500, "Internal gateway error.", type_=errors.SERVER_ERROR)

    return gateway


def create_app(source: TableSource, settings: GatewaySettings | None = None) -> web.Application:
    """Return the gateway application serving ``source``'s table; it owns its upstream connections.

    Serve it with ``handler_cancellation=True`` so a client that disconnects cancels its upstream
    request at once (``run_gateway`` does; aiohttp's test servers do by default).
    """
    settings = settings or GatewaySettings()
    balancer = Balancer(load_factor=settings.affinity_load_factor)
    admission = Admission(source, balancer, settings)
    metrics = GatewayMetrics(source, balancer.in_flight, admission.queue_depth)
    # Several worker processes: /metrics answers for all of them (peers.py).
    peers = Peers(settings.workers_dir, metrics.snapshot) if settings.workers_dir else None
    proxy = Proxy(settings, admission, metrics)
    middlewares = [gateway_middleware(KeyCheck(settings.api_keys))]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[BALANCER] = balancer
    app[ADMISSION] = admission
    app[METRICS] = metrics
    Routes(source, settings, proxy=proxy, admission=admission, metrics=metrics, peers=peers).add_to(app)

    async def upstream_pool(_: web.Application) -> AsyncIterator[None]:
        proxy.pool = Pool(
            connect_timeout_s=settings.connect_timeout_s,
            keepalive_s=settings.upstream_keepalive_s,
            max_idle=settings.max_upstream_connections,
        )
        yield
        proxy.pool.close()
        proxy.pool = None

    async def follow_table(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(admission.follow(), name="gateway-admission-table")
        yield
        task.cancel()
        await asyncio.wait([task])

    app.cleanup_ctx.append(upstream_pool)
    app.cleanup_ctx.append(follow_table)
    if peers is not None:
        app.cleanup_ctx.append(peers.serving)
    return app


def access_line(settings: GatewaySettings) -> str:
    """Return the start-up line about API keys (never the keys themselves)."""
    if settings.api_keys:
        return f"API keys: {len(settings.api_keys)} configured; /v1/* needs 'Authorization: Bearer <key>'"
    return "API keys: none configured, the gateway is open to anyone who can reach it"


async def run_gateway(settings: GatewaySettings) -> None:
    """Serve the gateway, following the controller at ``settings.controller_url``, until cancelled.

    Returns only by cancellation (or raises CannotListen if the port cannot be bound,
    GatewayWorkersFailed if a worker process dies). The controller being down is not an error: the
    gateway serves its last table and keeps polling. With ``workers`` > 1, that many processes share
    the port (SO_REUSEPORT).
    """
    print(access_line(settings), flush=True)
    if settings.workers > 1:
        from controller.gateway.workers import run_workers

        await run_workers(settings, serve)
    else:
        await serve(settings, reuse_port=False)


async def serve(settings: GatewaySettings, *, reuse_port: bool, announce: bool = True) -> None:
    """One serving process: follow the controller, serve the app on the port, until cancelled."""
    async with aiohttp.ClientSession() as controller_session:
        table = ControllerTable(settings.controller_url, controller_session)
        follower = asyncio.create_task(table.run(), name="gateway-endpoint-table")
        runner = web.AppRunner(create_app(table, settings), handler_cancellation=True, access_log=None)
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
                    f"following the controller at {settings.controller_url}",
                    flush=True,
                )
            await asyncio.Event().wait()
        finally:
            follower.cancel()
            await asyncio.wait([follower])
            await runner.cleanup()
