"""OpenAI-shaped error answers, so every client library maps our failures to its own exceptions.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and pick an exception class by
HTTP status (400 BadRequestError, 404 NotFoundError, 413, 502/503 retried with backoff). Every error the
gateway produces goes through here; nothing reaches a client as a traceback.

Statuses used::

    400 invalid_request_error   malformed JSON, missing or non-string "model"
    401 invalid_request_error   code "invalid_api_key": API keys are configured and the bearer token
                                is missing or not one of them
    404 invalid_request_error   code "model_not_found": no model by that name or alias; code
                                "unknown_url": a path that is no API the gateway forwards
                                (``routes.API_PATHS``: engines' admin endpoints never are)
    408 invalid_request_error   code "request_timeout": the body did not arrive within
                                GatewaySettings.body_timeout_s (the connection is closed)
    413 invalid_request_error   code "request_too_large": body over GatewaySettings.max_body_bytes
    429 rate_limit_error        code "queue_full" / "queue_timeout": every replica is at its
                                max_concurrency and the model's wait queue is full (or the waiting
                                requests hold max_queued_bytes), or the request waited too long in
                                it; carries Retry-After
    502 server_error            code "upstream_error": the replica failed (timeout, broken answer,
                                an answer past the size read whole)
    503 server_error            code "model_unavailable": no ready replica, or every try failed
                                before the first byte; carries Retry-After

A stream already started (loading comments while held for a cold model) cannot change its status:
its error is sent as an SSE event carrying the same document (``sse_event_of``), as is a replica's
failure mid-stream (``sse_error_event``).

Other APIs get the same statuses in their own shape (``in_shape``, decided by the request's path,
``api_of``): Anthropic's ``{"type": "error", "error": {"type", "message"}}`` on ``/v1/messages*``,
with Anthropic's type per status (400 invalid_request_error, 401 authentication_error, 403
permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 503
overloaded_error, other 5xx api_error), so the ``anthropic`` client raises its class for the status;
Ollama's ``{"error": "..."}`` on ``/api/*``. Responses (``/v1/responses``) is OpenAI's shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from aiohttp import web

# The APIs clients speak (the metrics' ``api`` label), decided once per request from its path.
OPENAI = "openai"
ANTHROPIC = "anthropic"
RESPONSES = "responses"
OLLAMA = "ollama"
ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
_APIS = {"/v1/responses": RESPONSES, **dict.fromkeys(ANTHROPIC_PATHS, ANTHROPIC)}

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
RATE_LIMIT = "rate_limit_error"

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


def not_api(method: str, path: str) -> web.Response:
    """404 for a path that is no API the gateway forwards (OpenAI's words for an unknown URL)."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    return error_response(404, f"Invalid URL ({method} {shown})", type_=INVALID_REQUEST, code="unknown_url")


def too_large(limit: int) -> web.Response:
    """413 for a body over ``limit`` bytes."""
    message = f"Request body is larger than the gateway's limit of {limit} bytes."
    return error_response(413, message, type_=INVALID_REQUEST, code="request_too_large")


def request_timeout(message: str) -> web.Response:
    """408 for a body that did not arrive in time."""
    return error_response(408, message, type_=INVALID_REQUEST, code="request_timeout")


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


def overloaded(message: str, *, code: str, retry_after: int) -> web.Response:
    """429 with Retry-After: the model is up but at capacity (openai clients: RateLimitError)."""
    return error_response(429, message, type_=RATE_LIMIT, code=code, retry_after=retry_after)


def unauthorized(message: str) -> web.Response:
    """401: no valid API key (openai clients: AuthenticationError)."""
    response = error_response(401, message, type_=INVALID_REQUEST, code="invalid_api_key")
    response.headers["WWW-Authenticate"] = 'Bearer realm="modelctl"'
    return response


def upstream_failed(message: str) -> web.Response:
    """502: the replica was reached but failed to answer properly."""
    return error_response(502, message, type_=SERVER_ERROR, code="upstream_error")


def sse_error_event(message: str, api: str = OPENAI) -> bytes:
    """Return the SSE event that ends a stream whose upstream failed after the first byte."""
    if api == ANTHROPIC:
        return _anthropic_event(message, "api_error")
    payload = error_body(message, type_=SERVER_ERROR, code="upstream_error")
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def sse_event_of(response: web.Response, api: str = OPENAI) -> bytes:
    """Return the SSE event carrying the error document of ``response`` (one of the above).

    For a stream that already started (with loading comments) when the answer turned out to be an
    error: the status and headers are gone, the document still reaches the client. Anthropic's
    client reads only an event named ``error`` (and ignores ``data:`` alone): that one it gets.
    """
    if api == ANTHROPIC:
        return _anthropic_event(_message_of(response), anthropic_type(response.status))
    body = response.body
    if not isinstance(body, bytes) or b"\n" in body:  # json.dumps writes one line
        body = json.dumps(error_body(response.reason or "Error", type_=SERVER_ERROR)).encode()
    return b"data: " + body + b"\n\n"


def _anthropic_event(message: str, type_: str) -> bytes:
    document = {"type": "error", "error": {"type": type_, "message": message}}
    return b"event: error\ndata: " + json.dumps(document).encode() + b"\n\n"


def api_of(path: str) -> str:
    """Return the API a request to ``path`` speaks (OPENAI unless it is another's path)."""
    api = _APIS.get(path)
    if api is not None:
        return api
    return OLLAMA if path.startswith("/api/") else OPENAI


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",  # Anthropic's own is 529; 503 keeps what every other client expects
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """Return Anthropic's error type for an HTTP status."""
    return _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def in_shape(response: web.StreamResponse, api: str) -> web.StreamResponse:
    """Return the gateway's own error ``response`` (OpenAI-shaped) in ``api``'s shape.

    Status and headers (Retry-After, WWW-Authenticate) stay; OpenAI and Responses get it unchanged,
    as does a response that is not whole (a stream).
    """
    if (api != ANTHROPIC and api != OLLAMA) or not isinstance(response, web.Response):
        return response
    message = _message_of(response)
    if api == ANTHROPIC:
        document: dict[str, object] = {
            "type": "error",
            "error": {"type": anthropic_type(response.status), "message": message},
        }
    else:
        document = {"error": message}
    headers = {k: v for k, v in response.headers.items() if k in ("Retry-After", "WWW-Authenticate")}
    shaped = web.json_response(document, status=response.status, headers=headers)
    if response.keep_alive is False:  # a 408's connection is closed, whatever the shape
        shaped.force_close()
    return shaped


def _message_of(response: web.Response) -> str:
    body = response.body
    try:
        error = json.loads(body)["error"] if isinstance(body, bytes) else None
    except (ValueError, KeyError, TypeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return response.reason or "Error"
