"""The controller's small internal HTTP API: the endpoint table for the gateway, and status.

It is the only channel between control plane and data plane, so the gateway needs no Docker socket:
the gateway reads the endpoint table here and reports its demand (``POST /v1/demand``, see
``controller.endpoints.demand``), which is how a request for a scaled-to-zero model starts it.
``GET /v1/endpoints?after=N&wait=S`` long-polls: it answers when the table's version differs from N,
or after S seconds with the unchanged table. ``GET /v1/status`` is what ``modelctl status`` shows;
``GET /metrics`` the control plane's Prometheus metrics (``reconcile.metrics``). ``GET /v1/events``
(``reconcile.events``) and ``GET /v1/replicas/{container}/logs`` serve the console (docs/console.md).

Keys, for when someone publishes the API beyond the host's loopback: by default it answers anyone
who can reach it (compose publishes it on 127.0.0.1 only; on the compose network only the gateway
calls it). With ``MODELCTL_CONTROLLER_KEYS_FILE`` (the gateway's keys file format) every ``/v1/*``
route wants ``Authorization: Bearer <key>``, the gateway's own calls included
(``MODELCTL_CONTROLLER_KEY`` on the gateway). What carries no data stays open: ``/healthz``,
``/metrics`` (as on the gateway), and the console's page and files (``/``, ``/console/...``), which
ask for a key in the browser. Keys are compared in constant time by the gateway's ``KeyCheck`` and
never logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from controller.console import energy as console_energy
from controller.console import page as console_page
from controller.console import plan as plan_preview
from controller.console import series as console_series
from controller.endpoints.demand import DemandReport
from controller.endpoints.store import EndpointStore
from controller.errors import BackendRuntimeError, ModelctlError
from controller.gateway.auth import KeyCheck, bearer_token
from controller.reconcile import metrics
from controller.reconcile.loop import Reconciler
from controller.runtime.observed import ObservedContainer

MAX_WAIT_S = 60.0  # a long poll never holds a connection longer than this
LOG_TAIL, MAX_LOG_TAIL = 200, 2000  # lines of /v1/replicas/{container}/logs: default, most


def create_api(
    store: EndpointStore,
    reconciler: Reconciler,
    *,
    keys_file: Path | None = None,
    series: console_series.GatewayScraper | None = None,
    model_roots: tuple[Path, ...] = (),
    energy: console_energy.EnergyMeter | None = None,
) -> web.Application:
    """The aiohttp application serving /v1/endpoints, /v1/status, /v1/demand and /healthz; with
    ``keys_file``, /v1/* wants one of its keys (``key_middleware``)."""
    if keys_file is not None and not keys_file.is_file():
        raise ModelctlError(f"MODELCTL_CONTROLLER_KEYS_FILE={keys_file}: no such file")
    app = web.Application(middlewares=[key_middleware(keys_file)] if keys_file is not None else [])
    meter = energy or console_energy.EnergyMeter()  # never sampled: says so

    async def endpoints(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "-1"))
            wait = min(float(request.query.get("wait", "0")), MAX_WAIT_S)
        except ValueError:
            return web.json_response({"error": "after and wait must be numbers"}, status=400)
        if not store.published:
            return web.json_response(
                {"error": "no endpoint table yet: first reconcile pass running"}, status=503
            )
        table = await store.wait_newer(after, wait) if wait > 0 else store.current()
        return web.json_response(table.to_json())

    async def status(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "replicas": [asdict(r) for r in reconciler.replicas],
                "models": [asdict(m) for m in reconciler.on_demand.scaling.values()],
                "manifest_errors": reconciler.manifest_errors,
                "notes": reconciler.notes,
                "energy": meter.status(),
                "endpoints_version": store.current().version,
            }
        )

    async def events(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return web.json_response({"error": "after must be a whole number (an event's seq)"}, status=400)
        return web.json_response(reconciler.events.to_json(after))

    async def replica_logs(request: web.Request) -> web.Response:
        """A replica's engine log tail, for this controller's containers only (by name or ID)."""
        key = request.match_info["container"]
        tail = request.query.get("tail", str(LOG_TAIL))
        if not tail.isdigit() or int(tail) < 1:
            return web.json_response({"error": "tail must be a whole number of lines, 1 or more"}, status=400)
        try:
            found = replica_named(await asyncio.to_thread(reconciler.runtime.list), key)
            if found is None:
                return web.json_response({"error": f"{key!r}: not a replica of this controller"}, status=404)
            lines = min(int(tail), MAX_LOG_TAIL)
            text = await asyncio.to_thread(reconciler.runtime.logs, found.id, lines)
        except BackendRuntimeError as exc:
            return web.json_response({"error": f"reading the logs of {key}: {exc}"}, status=503)
        return web.Response(text=text, content_type="text/plain")

    async def demand(request: web.Request) -> web.Response:
        try:
            report = DemandReport.from_json(await request.json())
        except ValueError as exc:  # JSONDecodeError is one
            return web.json_response({"error": f"bad demand report: {exc}"}, status=400)
        reconciler.report_demand(report)
        return web.Response(status=204)

    metrics_registry = metrics.registry(reconciler)
    metrics_registry.register(console_energy.EnergyCollector(meter))

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(metrics_registry), headers={"Content-Type": metrics.CONTENT_TYPE}
        )

    async def healthz(request: web.Request) -> web.Response:
        """200 while reconcile passes complete; 503 saying since when when they stopped."""
        live = reconciler.liveness()
        return web.json_response(live.to_json(), status=200 if live.ok else 503)

    app.router.add_get("/v1/endpoints", endpoints)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/demand", demand)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/replicas/{container}/logs", replica_logs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    console_page.add_routes(app)  # /, /console/{file}: the console's page
    console_series.add_routes(app, series or console_series.GatewayScraper(None))  # /v1/console/*
    console_energy.add_routes(app, meter)  # /v1/gpus
    plan_preview.add_routes(app, reconciler, model_roots=model_roots)  # /v1/plan
    return app


def replica_named(containers: list[ObservedContainer], key: str) -> ObservedContainer | None:
    """The container whose name or ID is ``key`` (an ID may be shortened to 12 characters or more)."""
    for container in containers:
        if key in (container.name, container.id) or (len(key) >= 12 and container.id.startswith(key)):
            return container
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/", "/healthz", "/metrics"})
OPEN_PREFIXES = ("/console/",)


def is_open(path: str) -> bool:
    """True for the routes that answer without a key (no data in them)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def key_middleware(keys_file: Path) -> Middleware:
    """An aiohttp middleware refusing keyless calls to the API with 401 and a JSON error saying why."""
    check = KeyCheck(keys_file=keys_file)

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open(request.path):
            return await handler(request)
        check.refresh(time.monotonic())
        token = bearer_token(request.headers.get("Authorization"))
        if check.match(token) is None:
            reason = "no API key" if token is None else "this API key is not one of the controller's"
            return web.json_response(
                {"error": f"{reason}: send Authorization: Bearer <key> (MODELCTL_CONTROLLER_KEYS_FILE)"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return require_key
