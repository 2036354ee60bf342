"""Keys on the controller's API, for when someone publishes it beyond the host's loopback.

By default the API answers anyone who can reach it: compose publishes it on 127.0.0.1 only, and on
the compose network only the gateway talks to it. Publishing it wider (to see the console from
another machine) is then a choice to make with keys: with ``MODELCTL_CONTROLLER_KEYS_FILE`` (the gateway's
keys file format: ``name: key`` lines, or one key per line), every ``/v1/*`` route wants
``Authorization: Bearer <key>``, the gateway's own calls included (``MODELCTL_CONTROLLER_KEY`` on the
gateway). What carries no data stays open: ``/healthz`` for health checks, ``/metrics`` for
scrapers (as on the gateway), and the console's page and static files (``/``, ``/console/...``),
which ask for a key in the browser and send it with every call. Keys are compared in constant time
by the gateway's ``KeyCheck`` and never logged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from controller.gateway.auth import KeyCheck, bearer_token

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
