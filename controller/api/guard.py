"""What the controller's API accepts, whoever asks: the Host and Origin checks, JSON bodies of
bounded size (``guard_middleware``), the keys (``key_middleware``), and the counters of what it
refused for /metrics. The package docstring says what each check is for.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from yarl import URL

from controller.endpoints.refusal import short
from controller.gateway.auth import KeyCheck, bearer_token

MAX_BODY = 1024 * 1024  # bytes of a request body (a plan's manifests are the largest)
# Names the API always answers to: loopback, and the service name compose gives the controller.
SERVED_NAMES = frozenset({"localhost", "controller"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # api_host values that name no host
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # read only: a cross-site page cannot read answers
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

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
    """Refuse what the API does not serve, before any route sees it (the package docstring)."""

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
