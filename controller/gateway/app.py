"""The gateway application: a table source, a balancer, admission and a proxy wired into aiohttp.

``create_app`` is what tests and an in-process controller serve (with a ``StaticTable``);
``server.serve`` serves it in a process of its own, following the controller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from controller.gateway import errors
from controller.gateway.admission.balancer import Balancer
from controller.gateway.admission.demand import Demand, DemandReporter, DemandSink
from controller.gateway.admission.queues import Admission
from controller.gateway.auth import KeyCheck, refusal, release
from controller.gateway.cors import Cors
from controller.gateway.doors.ollama import OllamaRoutes
from controller.gateway.doors.openai import Routes
from controller.gateway.doors.pipeline import Handler, Pipeline
from controller.gateway.forward.proxy import Proxy
from controller.gateway.forward.upstream import Pool
from controller.gateway.settings import GatewaySettings
from controller.gateway.tables.source import TableSource
from controller.gateway.telemetry.metrics import GatewayMetrics
from controller.gateway.telemetry.peers import Peers

log = logging.getLogger(__name__)


# The app's balancer, for whoever needs its in-flight counts (tests); its metrics and queues.
BALANCER = web.AppKey("modelctl.balancer", Balancer)
METRICS = web.AppKey("modelctl.metrics", GatewayMetrics)
ADMISSION = web.AppKey("modelctl.admission", Admission)
REPORTER = web.AppKey("modelctl.demand_reporter", DemandReporter)  # only with a demand sink


def guard(keys: KeyCheck, cors: Cors | None = None) -> Callable[[Handler], Handler]:
    """What every route's handler is wrapped in (``GuardedRouter``): one coroutine frame on the
    request path. An aiohttp middleware would do the same at the cost of two frames and a context
    manager per request (aiohttp adds its own ``_fix_request_current_app`` beside any middleware):
    about a tenth of the gateway's CPU per proxied request (bench/gateway_vs_bare.py).

    With allowed CORS origins it answers their preflights (``cors.py``) before anything else.
    With API keys configured it answers 401 to requests outside ``auth.OPEN_PATHS`` without a valid
    key, before the handler (unknown routes included: they reach ``unknown_route``). It turns
    aiohttp's own errors and bugs into OpenAI error JSON.
    """
    check = keys if keys else None

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if cors is not None and request.method == "OPTIONS":
                preflight = cors.preflight(request)  # before keys: a preflight never carries one
                if preflight is not None:
                    return preflight
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
            finally:
                if check is not None:
                    release(request)  # the key's request is no longer in flight

        return guarded

    return wrap


class GuardedRouter:
    """The app's router as the doors see it (``doors.pipeline.Router``): every handler added goes
    behind ``guard``; ``close`` adds the route that answers what no other route takes."""

    def __init__(self, router: web.UrlDispatcher, wrap: Callable[[Handler], Handler]) -> None:
        self._router = router
        self._wrap = wrap

    def add_get(self, path: str, handler: Handler) -> object:
        return self._router.add_get(path, self._wrap(handler))

    def add_post(self, path: str, handler: Handler) -> object:
        return self._router.add_post(path, self._wrap(handler))

    def add_route(self, method: str, path: str, handler: Handler) -> object:
        return self._router.add_route(method, path, self._wrap(handler))

    def close(self) -> None:
        """Add the last route: any method, any path (after every other route, so it only gets
        what they do not take)."""
        catch_all = self._router.add_route("*", "/{unknown_path:.*}", self._wrap(self._unknown))
        self._catch_all = catch_all.resource

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        """404, or 405 where another route takes the path with another method (as aiohttp's
        router answers: the guard turns either into an OpenAI error)."""
        allowed: set[str] = set()
        for resource in self._router.resources():
            if resource is not self._catch_all:
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()


def create_app(
    source: TableSource,
    settings: GatewaySettings | None = None,
    demand_sink: DemandSink | None = None,
) -> web.Application:
    """Return the gateway application serving ``source``'s table; it owns its upstream connections.

    Serve it with ``handler_cancellation=True`` so a client that disconnects cancels its upstream
    request at once (``run_gateway`` does; aiohttp's test servers do by default). With a
    ``demand_sink`` the app reports its demand to it while it runs (``demand.DemandReporter``):
    ``server.serve`` posts to the controller, an in-process controller passes its own function.
    """
    settings = settings or GatewaySettings()
    balancer = Balancer(load_factor=settings.affinity_load_factor)
    demand = Demand()
    admission = Admission(source, balancer, settings, demand=demand)
    metrics = GatewayMetrics(source, balancer.in_flight, admission.queue_depth)
    # Several worker processes: /metrics answers for all of them (peers.py).
    peers = Peers(settings.workers_dir, metrics.snapshot) if settings.workers_dir else None
    proxy = Proxy(settings, admission, metrics)
    cors = Cors(settings.cors_origins) or None
    app = web.Application(client_max_size=settings.max_body_bytes)
    if cors is not None:  # no cost on the request path unless origins are allowed
        app.on_response_prepare.append(cors.on_prepare)
    app[BALANCER] = balancer
    app[ADMISSION] = admission
    app[METRICS] = metrics
    pipeline = Pipeline(source, settings, proxy=proxy, admission=admission, metrics=metrics)
    router = GuardedRouter(app.router, guard(KeyCheck.from_settings(settings, metrics), cors))
    Routes(source, settings, pipeline=pipeline, metrics=metrics, proxy=proxy, peers=peers).add_to(router)
    OllamaRoutes(source, settings, pipeline=pipeline, proxy=proxy, admission=admission).add_to(router)
    router.close()

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
    if demand_sink is not None:
        reporter = DemandReporter(
            demand, admission.waiting, demand_sink, interval_s=settings.demand_interval_s
        )
        app[REPORTER] = reporter

        async def report_demand(_: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(reporter.run(), name="gateway-demand-reporter")
            yield
            task.cancel()
            await asyncio.wait([task])

        app.cleanup_ctx.append(report_demand)
    if peers is not None:
        app.cleanup_ctx.append(peers.serving)
    return app
