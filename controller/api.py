"""The controller's small internal HTTP API: the endpoint table for the gateway, and status.

It is the only channel between control plane and data plane, so the gateway needs no Docker socket:
the gateway reads the endpoint table here and reports its demand (``POST /v1/demand``, see
``controller.endpoints.demand``), which is how a request for a scaled-to-zero model starts it.
``GET /v1/endpoints?epoch=E&after=N&wait=S`` long-polls: it answers when the table is not version N of
epoch E (another epoch: at once, the controller restarted), or after S seconds with the unchanged
table. ``GET /v1/status`` is what ``modelctl status`` shows; every route reads the control loop's
published report (``reconcile.report``), and gives it commands only through
``reconcile.controls.Controls`` (a demand report, a replica's log, the manifests to preview);
``GET /metrics`` the control plane's Prometheus metrics (``reconcile.metrics``). ``GET /v1/events``
(``reconcile.events``) and ``GET /v1/replicas/{container}/logs`` serve the console (docs/console.md).

Keys, for when someone publishes the API beyond the host's loopback: by default it answers anyone
who can reach it (compose publishes it on 127.0.0.1 only; on the compose network only the gateway
calls it). With ``MODELCTL_CONTROLLER_KEYS_FILE`` (the gateway's keys file format) every ``/v1/*``
route wants ``Authorization: Bearer <key>``, the gateway's own calls included
(``MODELCTL_CONTROLLER_KEY`` on the gateway). What carries no data stays open: ``/healthz``,
``/metrics`` (as on the gateway), and the console's page and files (``/``, ``/console/...``), which
ask for a key in the browser. Keys are compared in constant time by the gateway's ``KeyCheck`` and
never logged. ``MODELCTL_METRICS_REQUIRE_KEY=true`` makes ``/metrics`` want a key too.

What it accepts, whoever asks (``guard_middleware``, then each route's typed body):

- a Host header it serves: loopback names (``localhost``, ``*.localhost``), IP addresses, the
  compose service name ``controller``, ``MODELCTL_API_HOST`` and ``MODELCTL_API_ALLOWED_HOSTS``;
  any other name gets 421, so a web page cannot reach the API through DNS rebinding (a name the
  page's site controls, resolved to 127.0.0.1). An address cannot be rebound: no check is needed.
- for a method other than GET/HEAD/OPTIONS, no ``Origin`` header, or the API's own origin (the
  console's page): a cross-site browser request gets 403.
- request bodies of ``application/json`` only (415; the cross-site ``text/plain`` a page may send
  without asking is refused), at most ``MAX_BODY`` bytes (413).
- bodies parsed into typed models with bounds (``DemandReport.parse``, ``console.plan``): a bad one
  gets 400 and a JSON error naming the field. Demand for names that are no model (or alias) the
  controller knows now is ignored and counted (``modelctl_demand_unknown_models_total``).

Every refusal is JSON (``{"error": ...}``), counted in ``modelctl_api_refused_total{status}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError
from yarl import URL

from controller.console import energy as console_energy
from controller.console import page as console_page
from controller.console import plan as plan_preview
from controller.console import series as console_series
from controller.endpoints.demand import DemandReport
from controller.endpoints.refusal import refusal, short
from controller.endpoints.store import EndpointStore
from controller.errors import BackendRuntimeError, ModelctlError
from controller.gateway.auth import KeyCheck, bearer_token
from controller.reconcile import metrics
from controller.reconcile.controls import Controls
from controller.reconcile.demand import TooManyReporters
from controller.reconcile.report import ReportStore
from controller.runtime.observed import ObservedContainer

MAX_WAIT_S = 60.0  # a long poll never holds a connection longer than this
LOG_TAIL, MAX_LOG_TAIL = 200, 2000  # lines of /v1/replicas/{container}/logs: default, most
MAX_BODY = 1024 * 1024  # bytes of a request body (a plan's manifests are the largest)
MAX_EPOCH = 64  # characters of ?epoch= (the store's are 16)
# Names the API always answers to: loopback, and the service name compose gives the controller.
SERVED_NAMES = frozenset({"localhost", "controller"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # api_host values that name no host
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # read only: a cross-site page cannot read answers
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def create_api(
    store: EndpointStore,
    reports: ReportStore | None = None,
    controls: Controls | None = None,
    *,
    keys_file: Path | None = None,
    series: console_series.GatewayScraper | None = None,
    model_roots: tuple[Path, ...] = (),
    energy: console_energy.EnergyMeter | None = None,
    hosts: Iterable[str] = (),
    metrics_require_key: bool = False,
) -> web.Application:
    """The aiohttp application serving /v1/endpoints, /v1/status, /v1/demand and /healthz from
    ``store`` (the endpoint table), ``reports`` (the loop's report) and ``controls`` (None: no loop
    behind it, ``Controls.idle``); with
    ``keys_file``, /v1/* wants one of its keys (``key_middleware``), and /metrics too with
    ``metrics_require_key``. ``hosts``: names it answers to besides loopback, addresses and
    ``controller`` (``MODELCTL_API_HOST``, ``MODELCTL_API_ALLOWED_HOSTS``)."""
    if keys_file is not None and not keys_file.is_file():
        raise ModelctlError(f"MODELCTL_CONTROLLER_KEYS_FILE={keys_file}: no such file")
    if metrics_require_key and keys_file is None:
        raise ModelctlError("MODELCTL_METRICS_REQUIRE_KEY=true needs MODELCTL_CONTROLLER_KEYS_FILE")
    reports = reports or ReportStore()
    controls = controls or Controls.idle()
    counters = ApiCounters()
    guard = guard_middleware(HostCheck(hosts), counters)
    keys = [key_middleware(keys_file, open_metrics=not metrics_require_key)] if keys_file is not None else []
    app = web.Application(middlewares=[guard, *keys], client_max_size=MAX_BODY)
    meter = energy or console_energy.EnergyMeter()  # never sampled: says so

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
    metrics_registry.register(console_energy.EnergyCollector(meter))
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
    console_page.add_routes(app)  # /, /console/{file}: the console's page
    console_series.add_routes(app, series or console_series.GatewayScraper(None))  # /v1/console/*
    console_energy.add_routes(app, meter)  # /v1/gpus
    plan_preview.add_routes(app, reports, controls, model_roots=model_roots)  # /v1/plan
    return app


def invalid(what: str, exc: ValidationError) -> web.Response:
    """400 naming each field pydantic refused."""
    return web.json_response(refusal(what, exc), status=400)


def replica_named(containers: list[ObservedContainer], key: str) -> ObservedContainer | None:
    """The container whose name or ID is ``key`` (an ID may be shortened to 12 characters or more)."""
    for container in containers:
        if key in (container.name, container.id) or (len(key) >= 12 and container.id.startswith(key)):
            return container
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/", "/healthz", "/metrics"})
OPEN_PREFIXES = ("/console/",)


def is_open(path: str, *, open_metrics: bool = True) -> bool:
    """True for the routes that answer without a key (no data in them)."""
    if path == "/metrics":
        return open_metrics
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def key_middleware(keys_file: Path, *, open_metrics: bool = True) -> Middleware:
    """An aiohttp middleware refusing keyless calls to the API with 401 and a JSON error saying why;
    ``open_metrics`` False: /metrics wants a key too (MODELCTL_METRICS_REQUIRE_KEY)."""
    check = KeyCheck(keys_file=keys_file)

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open(request.path, open_metrics=open_metrics):
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


@dataclass
class ApiCounters:
    """What the API refused or ignored since start, for /metrics."""

    unknown_models: int = 0  # names in demand reports that are no model the controller knows
    refused: dict[int, int] = field(default_factory=dict)  # status -> requests refused with it

    def refusal(self, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1


class ApiCollector(Collector):
    """``modelctl_demand_unknown_models_total`` and ``modelctl_api_refused_total{status}``."""

    def __init__(self, counters: ApiCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "modelctl_demand_unknown_models",
            "Model names in demand reports that no manifest names (ignored, never stored).",
            value=self.counters.unknown_models,
        )
        refused = CounterMetricFamily(
            "modelctl_api_refused",
            "Requests the controller API refused (4xx), by status.",
            labels=["status"],
        )
        for status, count in sorted(self.counters.refused.items()):
            refused.add_metric([str(status)], count)
        yield refused


class HostCheck:
    """Which Host headers the API answers: its names (loopback, ``controller``, configured ones, in
    any case, with any port) and IP addresses. A name only a web page's site controls is refused:
    that is DNS rebinding (the page's name, resolved to this host, makes the browser treat the API as
    the page's own origin)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        configured = (n.strip().lower().rstrip(".") for n in names)
        self.names = SERVED_NAMES | {n for n in configured if n not in WILDCARDS}

    def serves(self, header: str | None) -> bool:
        if header is None:  # HTTP/1.0 without one: not a browser
            return True
        name = host_name(header)
        if name is None:
            return False
        return name in self.names or name.endswith(".localhost") or is_address(name)


def host_name(header: str) -> str | None:
    """The host of a Host header ("name:port", "[v6]:port"), lower case without a trailing dot;
    None when it is not one."""
    try:
        url = URL(f"http://{header.strip()}/")
    except ValueError:
        return None
    host, path = url.raw_host, url.raw_path
    if not host or path != "/" or url.user or url.query_string:
        return None
    return host.lower().rstrip(".").strip("[]")


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def same_origin(origin: str, request: web.Request) -> bool:
    """True when ``origin`` (an Origin header) is the API's own: scheme, host and port of the URL
    the request was sent to (what the console's page sends)."""
    host = request.headers.get("Host")
    try:
        theirs, ours = URL(origin), URL(f"{request.scheme}://{host}/")
    except ValueError:
        return False
    if not theirs.is_absolute() or theirs.raw_path not in ("", "/") or host is None:
        return False
    return (theirs.scheme, (theirs.host or "").lower(), theirs.port) == (
        ours.scheme,
        (ours.host or "").lower(),
        ours.port,
    )


def refuse(counters: ApiCounters, status: int, message: str) -> web.Response:
    counters.refusal(status)
    return web.json_response({"error": message}, status=status)


def guard_middleware(hosts: HostCheck, counters: ApiCounters) -> Middleware:
    """Refuse what the API does not serve, before any route sees it (this module's docstring)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = refused(request, hosts)
        if refusal is not None:
            return refuse(counters, *refusal)
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return refuse(counters, 413, f"the body is larger than {MAX_BODY} bytes")
        if 400 <= response.status < 500:
            counters.refusal(response.status)
        return response

    return guard


def refused(request: web.Request, hosts: HostCheck) -> tuple[int, str] | None:
    """(status, message) when ``request`` is not one the API serves; None when it is."""
    host = request.headers.get("Host")
    if not hosts.serves(host):
        return 421, (
            f"this API does not answer to the host name {short(host or '')!r}: add it to "
            "MODELCTL_API_ALLOWED_HOSTS (comma-separated) if that is how it is reached"
        )
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, request):
        return 403, f"cross-origin {request.method} from {short(origin)!r} refused"
    if request.method in BODY_METHODS and request.content_type != "application/json":
        return 415, f"send the body as Content-Type: application/json, not {short(request.content_type)!r}"
    if request.content_length is not None and request.content_length > MAX_BODY:
        return 413, f"the body is larger than {MAX_BODY} bytes"
    return None
