"""The controller's API assembled: ``create_api`` puts the guards (``guard``) in front of the
control plane's routes (``control``) and the console's (``page``, ``series``, ``gpus``, ``plan``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

from controller.api import control, gpus, page, plan
from controller.api import series as series_routes
from controller.api.guard import MAX_BODY, ApiCounters, HostCheck, guard_middleware, key_middleware
from controller.endpoints.store import EndpointStore
from controller.errors import ModelctlError
from controller.reconcile.controls import Controls
from controller.reconcile.report import ReportStore
from controller.telemetry.energy import EnergyMeter
from controller.telemetry.series import GatewayScraper


def create_api(
    store: EndpointStore,
    reports: ReportStore | None = None,
    controls: Controls | None = None,
    *,
    keys_file: Path | None = None,
    series: GatewayScraper | None = None,
    model_roots: tuple[Path, ...] = (),
    energy: EnergyMeter | None = None,
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
    meter = energy or EnergyMeter()  # never sampled: says so

    control.add_routes(app, store, reports, controls, meter=meter, counters=counters)
    page.add_routes(app)  # /, /console/{file}: the console's page
    series_routes.add_routes(app, series or GatewayScraper(None))  # /v1/console/*
    gpus.add_routes(app, meter)  # /v1/gpus
    plan.add_routes(app, reports, controls, model_roots=model_roots)  # /v1/plan
    return app
