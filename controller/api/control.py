"""The control plane's routes: the endpoint table the gateway long-polls, status, demand, events,
a replica's log tail, /healthz and /metrics (the package docstring says what each answers).

Every route reads the loop's published report (``reconcile.report``) and gives it commands only
through ``reconcile.controls.Controls``.
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web
from pydantic import ValidationError

from controller.api.guard import ApiCollector, ApiCounters
from controller.endpoints.demand import DemandReport
from controller.endpoints.refusal import refusal
from controller.endpoints.store import EndpointStore
from controller.errors import BackendRuntimeError
from controller.reconcile.controls import Controls
from controller.reconcile.demand import TooManyReporters
from controller.reconcile.report import ReportStore
from controller.runtime.observed import ObservedContainer
from controller.telemetry import metrics
from controller.telemetry.energy import EnergyCollector, EnergyMeter

MAX_WAIT_S = 60.0  # a long poll never holds a connection longer than this
LOG_TAIL, MAX_LOG_TAIL = 200, 2000  # lines of /v1/replicas/{container}/logs: default, most
MAX_EPOCH = 64  # characters of ?epoch= (the store's are 16)


def add_routes(
    app: web.Application,
    store: EndpointStore,
    reports: ReportStore,
    controls: Controls,
    *,
    meter: EnergyMeter,
    counters: ApiCounters,
) -> None:
    """/v1/endpoints, /v1/status, /v1/demand, /v1/events, /v1/replicas/{container}/logs, /healthz
    and /metrics on ``app``."""

    async def endpoints(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "-1"))
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            return web.json_response({"error": "after and wait must be numbers"}, status=400)
        epoch = request.query.get("epoch")
        wait = min(wait, MAX_WAIT_S) if math.isfinite(wait) else math.nan
        if math.isnan(wait) or (epoch is not None and len(epoch) > MAX_EPOCH):
            return web.json_response(
                {"error": f"wait must be finite seconds, epoch at most {MAX_EPOCH} characters"}, status=400
            )
        if not store.published:
            return web.json_response(
                {"error": "no endpoint table yet: first reconcile pass running"}, status=503
            )
        table = await store.wait_newer(after, wait, epoch=epoch) if wait > 0 else store.current()
        return web.json_response(table.to_json())

    async def status(request: web.Request) -> web.Response:
        return web.json_response(
            {
                **reports.current().status_json(),
                "energy": meter.status(),
                "endpoints_version": store.current().version,
                # The console shows each model's LoRA adapters under it (clients name them as models).
                "adapters": {m.name: list(m.adapters) for m in store.current().models if m.adapters},
            }
        )

    async def events(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return web.json_response({"error": "after must be a whole number (an event's seq)"}, status=400)
        return web.json_response(reports.current().events_json(after))

    async def replica_logs(request: web.Request) -> web.Response:
        """A replica's engine log tail, for this controller's containers only (by name or ID)."""
        key = request.match_info["container"]
        tail = request.query.get("tail", str(LOG_TAIL))
        if not (tail.isascii() and tail.isdigit() and len(tail) <= 9) or int(tail) < 1:
            return web.json_response({"error": "tail must be a whole number of lines, 1 or more"}, status=400)
        try:
            found = replica_named(await asyncio.to_thread(controls.replicas.list), key)
            if found is None:
                return web.json_response({"error": f"{key!r}: not a replica of this controller"}, status=404)
            lines = min(int(tail), MAX_LOG_TAIL)
            text = await asyncio.to_thread(controls.replicas.logs, found.id, lines)
        except BackendRuntimeError as exc:
            return web.json_response({"error": f"reading the logs of {key}: {exc}"}, status=503)
        return web.Response(text=text, content_type="text/plain")

    async def demand(request: web.Request) -> web.Response:
        try:
            report = DemandReport.parse(await request.read(), now=controls.demand_clock())
        except ValidationError as exc:
            return invalid("bad demand report", exc)
        report, unknown = report.known(reports.current().model_names())
        counters.unknown_models += len(unknown)
        try:
            controls.report_demand(report)
        except TooManyReporters as exc:
            retry = f"{controls.demand_stale_after_s:.0f}"
            return web.json_response({"error": str(exc)}, status=429, headers={"Retry-After": retry})
        return web.Response(status=204)

    metrics_registry = metrics.registry(reports)
    metrics_registry.register(EnergyCollector(meter))
    metrics_registry.register(ApiCollector(counters))

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(metrics_registry), headers={"Content-Type": metrics.CONTENT_TYPE}
        )

    async def healthz(request: web.Request) -> web.Response:
        """200 while reconcile passes complete; 503 saying since when when they stopped."""
        live = reports.liveness()
        return web.json_response(live.to_json(), status=200 if live.ok else 503)

    app.router.add_get("/v1/endpoints", endpoints)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/demand", demand)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/replicas/{container}/logs", replica_logs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)


def invalid(what: str, exc: ValidationError) -> web.Response:
    """400 naming each field pydantic refused."""
    return web.json_response(refusal(what, exc), status=400)


def replica_named(containers: list[ObservedContainer], key: str) -> ObservedContainer | None:
    """The container whose name or ID is ``key`` (an ID may be shortened to 12 characters or more)."""
    for container in containers:
        if key in (container.name, container.id) or (len(key) >= 12 and container.id.startswith(key)):
            return container
    return None
