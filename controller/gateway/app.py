"""The gateway's composition root: settings, the aiohttp application, and the serving loop.

``create_app`` wires a table source, a balancer and a proxy into an aiohttp app; tests and an
in-process controller call it with a ``StaticTable``. ``run_gateway`` is what ``modelctl gateway``
calls: it follows the controller's table over HTTP and serves until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from controller.gateway import errors
from controller.gateway.balancer import Balancer
from controller.gateway.proxy import Proxy
from controller.gateway.routes import Routes
from controller.gateway.table import ControllerTable, TableSource

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The app's balancer, for whoever needs its in-flight counts (metrics, tests).
BALANCER = web.AppKey("modelctl.balancer", Balancer)


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """How the gateway listens, whom it follows, and how patient it is with replicas."""

    # All interfaces: the gateway is the endpoint clients (and other containers) reach.
    host: str = "0.0.0.0"
    # The port the design promises: clients point at http://localhost:8080/v1.
    port: int = 8080
    # The controller's internal API, which serves GET /v1/endpoints (compose: http://controller:8081).
    controller_url: str = "http://127.0.0.1:8081"
    # Requests are JSON prompts; 16 MiB holds long contexts and base64 images, and bounds memory.
    max_body_bytes: int = 16 * 1024 * 1024
    # A ready replica accepts at once; a slow connect means it is gone, so try another soon.
    connect_timeout_s: float = 5.0
    # Until the status line: a non-streamed completion arrives only when generation ends (slow LLMs).
    first_byte_timeout_s: float = 600.0
    # Longest silence between two chunks of an answer (prompt processing before the first token).
    read_timeout_s: float = 300.0
    # Replicas tried per request before the first byte; each replica at most once.
    max_tries: int = 3
    # Retry-After (seconds) on 503: about the time a replica takes to come (back) up.
    retry_after_s: int = 5
    # Connections to all replicas together; beyond it requests wait for a free one.
    max_upstream_connections: int = 1024
    # Idle keep-alive under the backends' own 5 s (uvicorn, cpp-httplib), so we never reuse a
    # connection that the replica is closing (that would fail a request with a single replica).
    upstream_keepalive_s: float = 4.0


@web.middleware
async def openai_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Turn aiohttp's own errors (unknown route, wrong method) and bugs into OpenAI error JSON."""
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


def create_app(source: TableSource, settings: GatewaySettings | None = None) -> web.Application:
    """Return the gateway application serving ``source``'s table; it owns its upstream session.

    Serve it with ``handler_cancellation=True`` so a client that disconnects cancels its upstream
    request at once (``run_gateway`` does; aiohttp's test servers do by default).
    """
    settings = settings or GatewaySettings()
    balancer = Balancer()
    proxy = Proxy(settings, balancer)
    app = web.Application(middlewares=[openai_errors], client_max_size=settings.max_body_bytes)
    app[BALANCER] = balancer
    Routes(source, settings, proxy).add_to(app)

    async def upstream_session(_: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(
            limit=settings.max_upstream_connections,
            limit_per_host=0,
            keepalive_timeout=settings.upstream_keepalive_s,
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s)
        # Bodies go through as the replica encoded them, and only what the client asked for.
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        ) as session:
            proxy.session = session
            yield
            proxy.session = None

    app.cleanup_ctx.append(upstream_session)
    return app


async def run_gateway(settings: GatewaySettings) -> None:
    """Serve the gateway, following the controller at ``settings.controller_url``, until cancelled.

    Returns only by cancellation (or raises OSError if the port cannot be bound). The controller
    being down is not an error: the gateway serves its last table and keeps polling.
    """
    async with aiohttp.ClientSession() as controller_session:
        table = ControllerTable(settings.controller_url, controller_session)
        follower = asyncio.create_task(table.run(), name="gateway-endpoint-table")
        runner = web.AppRunner(create_app(table, settings), handler_cancellation=True, access_log=None)
        try:
            await runner.setup()
            await web.TCPSite(runner, settings.host, settings.port).start()
            print(
                f"modelctl gateway listening on http://{settings.host}:{settings.port}/v1, "
                f"following the controller at {settings.controller_url}",
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            follower.cancel()
            await asyncio.wait([follower])
            await runner.cleanup()
