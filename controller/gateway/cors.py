"""Cross-origin requests (CORS): the gateway decides which web pages may call it, not the engines.

A browser lets a page read an answer from another origin only if the answer names the page's origin
(``Access-Control-Allow-Origin``), and asks first (a preflight ``OPTIONS``) before a POST with a JSON
body or an ``Authorization`` header. Engines send CORS headers of their own (llama-server an empty
``Access-Control-Allow-Origin:``), which said nothing the operator chose: the gateway drops every
``Access-Control-*`` header of a replica's answer (``forward.headers``) and answers CORS itself.

None by default: no origin is allowed, no CORS header is sent, a preflight is not answered (the
browser refuses the call). ``GatewaySettings.cors_origins`` (``MODELCTL_GATEWAY_CORS_ORIGINS``,
comma-separated) names the allowed origins (``https://chat.example.com``), or ``*`` for any page:
then answers carry ``Access-Control-Allow-Origin`` for a request from an allowed origin, and the
gateway answers such a preflight itself (204) before API keys are checked (a preflight never carries
one; the real request still must). Credentials in the CORS sense (cookies) are never allowed: keys
travel in headers, which the preflight allows by name.
"""

from __future__ import annotations

import re

from aiohttp import web

# The methods the gateway's APIs use (Ollama's DELETE and HEAD included, to be refused properly).
METHODS = "GET, POST, HEAD, DELETE, OPTIONS"
# Headers a page's script may read from an answer, beyond the CORS-safelisted ones.
EXPOSED = "Retry-After, X-Modelctl-Replica"
# How long a browser may reuse a preflight's answer (seconds).
MAX_AGE_S = 600
# The request headers a preflight may ask for: header names, comma-separated, bounded.
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")
_MAX_HEADER_LIST = 2048
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


def valid_origin(origin: str) -> bool:
    """True if ``origin`` is ``*`` or a web origin: scheme, host and optional port, no path."""
    return origin == "*" or _ORIGIN.fullmatch(origin) is not None


class Cors:
    """The allowed origins and the headers that say so; falsy when none are allowed."""

    __slots__ = ("_any", "_origins")

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(o.lower() for o in origins if o != "*")

    def __bool__(self) -> bool:
        return self._any or bool(self._origins)

    def allowed(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin``, or None."""
        if self._any:
            return "*"
        return origin if origin.lower() in self._origins else None

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a CORS preflight from an allowed origin, or None (not one: route it)."""
        headers = request.headers
        origin = headers.get("Origin")
        if request.method != "OPTIONS" or origin is None or "Access-Control-Request-Method" not in headers:
            return None
        allow = self.allowed(origin)
        if allow is None:
            return None
        answer = {
            "Access-Control-Allow-Origin": allow,
            "Access-Control-Allow-Methods": METHODS,
            "Access-Control-Max-Age": str(MAX_AGE_S),
        }
        asked = headers.get("Access-Control-Request-Headers", "").strip()
        if asked and len(asked) <= _MAX_HEADER_LIST and _HEADER_LIST.fullmatch(asked):
            answer["Access-Control-Allow-Headers"] = asked
        if allow != "*":
            answer["Vary"] = "Origin"
        return web.Response(status=204, headers=answer)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: an answer to an allowed origin says so (streams included)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return
        allow = self.allowed(origin)
        if allow is None:
            return
        headers = response.headers
        if "Access-Control-Allow-Origin" in headers:  # the preflight's own answer
            return
        headers["Access-Control-Allow-Origin"] = allow
        headers["Access-Control-Expose-Headers"] = EXPOSED
        if allow != "*":
            headers.add("Vary", "Origin")
