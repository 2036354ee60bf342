"""OpenAI-shaped error answers, so every client library maps our failures to its own exceptions.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and pick an exception class by
HTTP status (400 BadRequestError, 404 NotFoundError, 413, 502/503 retried with backoff). Every error the
gateway produces goes through here; nothing reaches a client as a traceback.

Statuses used::

    400 invalid_request_error   malformed JSON, missing or non-string "model"
    404 invalid_request_error   code "model_not_found": no model by that name or alias
    413 invalid_request_error   code "request_too_large": body over GatewaySettings.max_body_bytes
    502 server_error            code "upstream_error": the replica failed (timeout, broken answer)
    503 server_error            code "model_unavailable": no ready replica, or every try failed
                                before the first byte; carries Retry-After
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from aiohttp import web

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

# How many available model names a 404 lists before it says "and N more".
_LISTED_NAMES = 10


def error_body(message: str, *, type_: str, code: str | None = None) -> dict[str, object]:
    """Return the OpenAI error document for ``message``."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    retry_after: int | None = None,
) -> web.Response:
    """Return a JSON error response; ``retry_after`` (seconds) adds a Retry-After header."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response(error_body(message, type_=type_, code=code), status=status, headers=headers)


def bad_request(message: str, *, code: str | None = None) -> web.Response:
    """400 for a request the client must fix."""
    return error_response(400, message, type_=INVALID_REQUEST, code=code)


def too_large(limit: int) -> web.Response:
    """413 for a body over ``limit`` bytes."""
    message = f"Request body is larger than the gateway's limit of {limit} bytes."
    return error_response(413, message, type_=INVALID_REQUEST, code="request_too_large")


def model_not_found(model: str, available: Iterable[str]) -> web.Response:
    """404 naming the unknown model and listing (briefly) the names that are served."""
    names = sorted(available)
    listed = ", ".join(names[:_LISTED_NAMES]) or "none"
    if len(names) > _LISTED_NAMES:
        listed += f" and {len(names) - _LISTED_NAMES} more"
    message = f"The model '{model}' does not exist. Available models: {listed}."
    return error_response(404, message, type_=INVALID_REQUEST, code="model_not_found")


def unavailable(message: str, *, retry_after: int) -> web.Response:
    """503 with Retry-After: the model exists but nothing can serve it right now."""
    return error_response(503, message, type_=SERVER_ERROR, code="model_unavailable", retry_after=retry_after)


def upstream_failed(message: str) -> web.Response:
    """502: the replica was reached but failed to answer properly."""
    return error_response(502, message, type_=SERVER_ERROR, code="upstream_error")


def sse_error_event(message: str) -> bytes:
    """Return the SSE event that ends a stream whose upstream failed after the first byte."""
    payload = error_body(message, type_=SERVER_ERROR, code="upstream_error")
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
