"""The composition root: builds the controller (and optionally an in-process gateway) from settings.

``modelctl controller``, ``modelctl serve`` and the integration tests all go through
``running_controller``, so what the tests exercise is what users run.

Every background task runs ``supervised`` (``controller.reconcile.supervise``): an unexpected error
is counted and logged once, and the task starts again. What supervision cannot mend (a pass hung in
a Docker or NVML call, state poisoned so that every pass fails) the watchdog of ``run_controller``
ends: when no reconcile pass completed within ``MODELCTL_LIVENESS_S`` it logs one line and the
process exits 1, for Docker's restart policy (or Kubernetes) to start a fresh controller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aiohttp
import docker
from aiohttp import web
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from controller.api import create_api
from controller.endpoints.demand import DemandReport
from controller.endpoints.store import EndpointStore
from controller.errors import (
    CannotListen,
    ControllerStalled,
    InvalidManifests,
    ManifestError,
    RuntimeUnavailable,
)
from controller.gateway.app import create_app
from controller.gateway.serving.server import app_runner, listen
from controller.gateway.settings import GatewaySettings
from controller.hub.cache import HubCache
from controller.hub.fit import check_pulled
from controller.hub.pull import Puller
from controller.manifests.envrefs import EnvAllow
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.placement.host import Host, read_host
from controller.reconcile.drain import Drainer
from controller.reconcile.health import HttpProber
from controller.reconcile.loop import Reconciler
from controller.reconcile.ondemand import OnDemand
from controller.reconcile.report import ReportStore
from controller.reconcile.scaling import Scaler
from controller.reconcile.supervise import Failures, Liveness, supervised
from controller.reconcile.watch import watch_docker_events, watch_manifests
from controller.runtime.docker import DockerRuntime, connect
from controller.runtime.speckey import spec_key
from controller.settings import ControllerSettings
from controller.telemetry.energy import EnergyMeter, pass_owners, run_energy
from controller.telemetry.series import GatewayScraper
from controller.weights.compat import check_files
from controller.weights.task import detect_task

log = logging.getLogger(__name__)

API_IDLE_S = 75.0  # above the API's longest long poll (60 s), so a waiting gateway is never cut

# After the watchdog fires, how long the orderly exit may take before the process ends anyway: a
# worker thread stuck in a Docker or NVML call would hold asyncio.run's executor shutdown for ever.
EXIT_GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class RunningController:
    """Handles on a running controller, for the CLI and for tests."""

    reconciler: Reconciler
    store: EndpointStore
    reports: ReportStore  # what the loop publishes after each pass (status, scaling, events)
    runtime: DockerRuntime
    api_url: str
    gateway_url: str | None


@asynccontextmanager
async def running_controller(
    settings: ControllerSettings, *, gateway: GatewaySettings | None = None
) -> AsyncIterator[RunningController]:
    """Start the reconciler and the internal API (and a gateway when given); stop them on exit.

    Replicas keep running after exit: a controller that starts again adopts them.
    Raises RuntimeUnavailable when Docker cannot be reached at start.
    """
    client = await connect_with_retry(settings)
    runtime = DockerRuntime(
        client,
        instance=settings.instance,
        network=settings.network,
        egress_network=settings.egress_network,
        hash_key=spec_key(settings.state_dir),
    )
    await asyncio.to_thread(runtime.ensure_network)
    store = EndpointStore()
    load = manifest_loader(settings)
    runners: list[web.AppRunner] = []
    # Probes open a connection each and close it: an idle keep-alive connection would hold one of
    # the engine's HTTP threads (cpp-httplib keeps a thread per open connection).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        prober = HttpProber(session)
        failures = Failures()  # every task's unexpected errors: modelctl_reconcile_errors_total
        drainer = Drainer(runtime, prober.fetch, grace_s=settings.drain_grace_s, failures=failures)
        reconciler = Reconciler(
            runtime=runtime,
            load_models=load,
            store=store,
            prober=prober,
            drainer=drainer,
            interval_s=settings.interval_s,
            lifecycle=settings.lifecycle,
            on_demand=on_demand(settings),
            failures=failures,
            liveness_s=settings.liveness_s,
            puller=Puller(settings.hub),
        )
        meter = EnergyMeter()  # GPU joules per replica and per output token (console, /metrics)
        # The console's charts: the gateway scraped like Prometheus would (the in-process one below
        # when no MODELCTL_GATEWAY_URL says where it is); its output tokens feed the energy meter.
        scraper = GatewayScraper(
            settings.gateway_url,
            step_s=settings.console_step_s,
            on_tokens=meter.tokens,
            joules_per_token=meter.joules_per_token,
            key=settings.gateway_key,
        )
        tasks = background(settings.manifests, reconciler, runtime, meter, scraper)
        try:
            api = create_api(
                store,
                reconciler.reports,
                reconciler.controls(),
                keys_file=settings.api_keys_file,
                model_roots=settings.model_roots,
                energy=meter,
                series=scraper,
                hosts=(settings.api_host, *settings.api_allowed_hosts),
                metrics_require_key=settings.metrics_require_key,
            )
            api_url = await serve(
                api, settings.api_host, settings.api_port, runners, what="the controller API"
            )
            gateway_url = None
            if gateway is not None:
                gateway_url = await serve_gateway(
                    create_app(store, gateway, demand_sink=record_demand(reconciler)), gateway, runners
                )
                if scraper.url is None:
                    scraper.url = gateway_url
                    scraper.key = scraper.key or next(iter(gateway.api_keys), None)
            log.info("controller API on %s; manifests from %s", api_url, settings.manifests)
            yield RunningController(reconciler, store, reconciler.reports, runtime, api_url, gateway_url)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await drainer.close()
            await store.close()
            for runner in reversed(runners):
                await runner.cleanup()
            client.close()


def background(
    manifests: Path,
    reconciler: Reconciler,
    runtime: DockerRuntime,
    meter: EnergyMeter,
    scraper: GatewayScraper,
) -> list[asyncio.Task[None]]:
    """Every task the controller runs beside its API, each ``supervised``: its unexpected errors
    counted in ``reconciler.failures`` under the task's name, and started again."""

    def start(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        return asyncio.create_task(supervised(name, run, failures=reconciler.failures), name=name)

    owners = partial(pass_owners, reconciler.reports)  # the GPUs' replicas, as the last pass saw them

    return [
        start("reconciler", reconciler.run),
        start("manifests", partial(watch_manifests, manifests, reconciler.wake.set)),
        start("docker-events", partial(watch_docker_events, runtime, reconciler.wake.set)),
        start("energy", partial(run_energy, meter, reconciler.read_inventory, owners)),
        start("console-series", scraper.run),
    ]


async def watchdog(reports: ReportStore, *, poll_s: float = 1.0) -> Liveness:
    """Wait until the reconciler's passes stop completing within its liveness bound; returns what
    ``/healthz`` then answers (503)."""
    while (live := reports.liveness()).ok:
        await asyncio.sleep(poll_s)
    return live


def exit_anyway_after(
    seconds: float, *, code: int = 1, end: Callable[[int], object] = os._exit
) -> threading.Timer:
    """End the process with ``code`` in ``seconds`` unless it ended before (a daemon timer)."""
    timer = threading.Timer(seconds, end, (code,))
    timer.daemon = True
    timer.start()
    return timer


def manifest_loader(settings: ControllerSettings) -> Callable[[], list[LoadedModel]]:
    """The reconciler's manifest load: the folder in ``settings``, its errors located as the user
    knows the folder (``settings.manifests_shown_as``), not as the controller's container sees it."""
    allow = EnvAllow.of(settings.manifest_env_allow)
    load = partial(
        load_folder,
        settings.manifests,
        model_roots=settings.model_roots,
        env_allow=allow,
        check_files=check_files,
        detect_task=detect_task,
    )
    pulled = with_pulled(load, settings.hub)
    shown_as = settings.manifests_shown_as
    if shown_as is None:
        return pulled

    def load_shown() -> list[LoadedModel]:
        try:
            return pulled()
        except InvalidManifests as exc:
            errors = [relocated(e, settings.manifests, shown_as) for e in exc.errors]
            raise InvalidManifests(errors) from exc

    return load_shown


def with_pulled(load: Callable[[], list[LoadedModel]], cache: HubCache) -> Callable[[], list[LoadedModel]]:
    """``load``, its hub models found in the hub cache given their local files (``pulled``): a
    few stat calls per hub model, no network; once pulled, their files are checked against the
    weights as the loader checks local ones (``check_pulled``: InvalidManifests on a misfit)."""

    def load_pulled() -> list[LoadedModel]:
        models = cache.resolve(load())
        check_pulled(models, check_files)
        return models

    return load_pulled


def relocated(error: ManifestError, folder: Path, shown_as: str) -> ManifestError:
    """``error`` with its file under ``folder`` named under ``shown_as`` instead (others as they are)."""
    try:
        inside = Path(error.file).relative_to(folder)
    except ValueError:
        return error
    file = shown_as if inside == Path() else str(Path(shown_as) / inside)
    return ManifestError(
        error.message, file=file, document=error.document, field=error.field, line=error.line
    )


def record_demand(reconciler: Reconciler) -> Callable[[DemandReport], Awaitable[None]]:
    """The in-process gateway's demand sink: what POST /v1/demand does, without the HTTP."""

    async def record(report: DemandReport) -> None:
        reconciler.report_demand(report)

    return record


def on_demand(settings: ControllerSettings) -> OnDemand:
    """Scaling on the gateway's demand, with CPU replicas placed against the host's memory."""

    def host(ours: int) -> Host:
        return read_host(budget=settings.cpu_memory, reserve=settings.cpu_memory_reserve, ours=ours)

    return OnDemand(scaler=Scaler(settings.scaling), read_host=host)


async def connect_with_retry(settings: ControllerSettings) -> docker.DockerClient:
    """Connect to Docker, retrying with backoff while the engine is unavailable (it may be
    starting or restarting) for up to ``settings.docker_wait_s``; then RuntimeUnavailable."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(RuntimeUnavailable),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(settings.docker_wait_s),
        before_sleep=lambda state: log.warning(
            "Docker engine unavailable (%s); retrying", state.outcome.exception() if state.outcome else "?"
        ),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await asyncio.to_thread(connect, settings.docker_url)
    raise AssertionError("unreachable: tenacity reraises")


async def serve(
    app: web.Application,
    host: str,
    port: int,
    runners: list[web.AppRunner],
    *,
    what: str,
) -> str:
    """Serve ``app`` on host:port (0 = any free port); returns its base URL. A connection that sends
    no complete request head for ``API_IDLE_S`` is closed (idle keep-alive, or slowloris).

    Raises CannotListen (naming ``what`` and the address) when the address cannot be bound."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=API_IDLE_S)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise CannotListen(what, host, port, exc) from exc
    bound_host, bound_port = runner.addresses[0][:2]
    return f"http://{bound_host}:{bound_port}"


async def serve_gateway(app: web.Application, settings: GatewaySettings, runners: list[web.AppRunner]) -> str:
    """Serve the in-process gateway as ``modelctl gateway`` serves its own (``gateway.server``: idle
    and slowloris timeouts, the connection bound, quiet parse errors); returns its base URL.
    Raises CannotListen."""
    runner = app_runner(app, settings)
    runners.append(runner)
    await listen(runner, settings, settings.host, settings.port)
    bound_host, bound_port = runner.addresses[0][:2]
    return f"http://{bound_host}:{bound_port}"


async def run_controller(settings: ControllerSettings, *, gateway: GatewaySettings | None = None) -> None:
    """Run until cancelled (the CLI's `controller` and `serve` commands). Raises ControllerStalled
    (the CLI exits 1) when reconcile passes stop completing."""
    async with running_controller(settings, gateway=gateway) as running:
        print(f"modelctl controller: API {running.api_url}, manifests {settings.manifests}", flush=True)
        if running.gateway_url:
            print(f"modelctl gateway: OpenAI endpoint {running.gateway_url}/v1", flush=True)
        stalled = await watchdog(running.reports)
        log.critical("exiting, for a fresh controller to start: %s", stalled.describe())
        exit_anyway_after(EXIT_GRACE_S)
        raise ControllerStalled(stalled.describe())
