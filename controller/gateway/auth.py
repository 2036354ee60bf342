"""Optional API keys: a bearer token on every /v1/* request, compared in constant time.

With no keys configured the gateway is open (``run_gateway`` says so once at start-up). With keys,
``Authorization: Bearer <key>`` must carry one of them, else 401 in OpenAI's shape (openai clients
raise AuthenticationError). Every key is compared with ``hmac.compare_digest`` and the loop never
stops early, so timing tells neither which key matched nor how much of a guess was right. Probes and
scrapers (``/healthz``, ``/readyz``, ``/metrics``) stay open: they carry no key, and expose no prompt
or answer. Keys are never logged, and the proxy never forwards the client's Authorization header.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web

from controller.gateway import errors

OPEN_PATHS = frozenset({"/healthz", "/health", "/readyz", "/metrics"})


class KeyCheck:
    """Whether a bearer token is one of the configured keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(k.encode("ascii") for k in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def accepts(self, authorization: str | None) -> bool:
        """Return True if the Authorization header value carries a configured key."""
        if authorization is None:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        candidate = token.strip().encode("utf-8", "replace")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


def refusal(check: KeyCheck, request: web.Request) -> web.Response | None:
    """Return the 401 for a request outside OPEN_PATHS without a valid key, else None (it may pass).

    The app's one middleware (``app.gateway_middleware``) calls it before the handler when keys are
    configured.
    """
    if request.path in OPEN_PATHS:
        return None
    authorization = request.headers.get("Authorization")
    if check.accepts(authorization):
        return None
    if authorization is None:
        return errors.unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
        )
    return errors.unauthorized("Incorrect API key provided.")
