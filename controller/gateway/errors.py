"""OpenAI-shaped error answers, so every client library maps our failures to its own exceptions.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and pick an exception class by
HTTP status (400 BadRequestError, 404 NotFoundError, 413, 502/503 retried with backoff). Every error the
gateway produces goes through here; nothing reaches a client as a traceback.

Statuses used::

    400 invalid_request_error   malformed JSON, missing or non-string "model"; code "unsupported_task":
                                the model's task is not one the API serves (``doors.tasks``)
    401 invalid_request_error   code "invalid_api_key": API keys are configured and the bearer token
                                is missing or not one of them
    404 invalid_request_error   code "model_not_found": no model by that name or alias; code
                                "unknown_url": a path that is no API the gateway forwards
                                (``doors.openai.API_PATHS``: engines' admin endpoints never are)
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
its error is sent as an SSE event carrying the same document (``Refusal.sse_event``), as is a replica's
failure mid-stream (``sse_error_event``).

Every such answer is raised as one exception, ``Refusal`` (status, message, type, code, Retry-After),
answered by the pipeline in the shape of the API the client speaks (``Refusal.response(api)``; the API
is decided by the request's path,
``api_of``): Anthropic's ``{"type": "error", "error": {"type", "message"}}`` on ``/v1/messages*``,
with Anthropic's type per status (400 invalid_request_error, 401 authentication_error, 403
permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 503
overloaded_error, other 5xx api_error), so the ``anthropic`` client raises its class for the status;
Ollama's ``{"error": "..."}`` on ``/api/*``. Responses (``/v1/responses``) is OpenAI's shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum

from aiohttp import web


class Api(StrEnum):
    """The APIs clients speak (the metrics' ``api`` label), decided once per request from its path.
    A StrEnum: its members are the label strings, so they compare and log as the plain names."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    RESPONSES = "responses"
    OLLAMA = "ollama"


OPENAI, ANTHROPIC, RESPONSES, OLLAMA = Api.OPENAI, Api.ANTHROPIC, Api.RESPONSES, Api.OLLAMA
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


class Refusal(Exception):
    """The gateway answers a request itself with an error: the one exception of the request path.

    Raised by any stage (the body, the door's parsing, the table, a key's limits, admission, the
    forwarding) and answered by the pipeline in the shape of the API the client speaks
    (``response(api)``). It carries what every shape needs: the status, OpenAI's error parts
    (message, type, code), Retry-After, and whether the connection closes (a 408's body never came).
    """

    __slots__ = ("close", "code", "message", "retry_after", "status", "type_")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = INVALID_REQUEST,
        code: str | None = None,
        retry_after: int | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.code = code
        self.retry_after = retry_after
        self.close = close

    def document(self, api: str = OPENAI) -> dict[str, object]:
        """The error document in ``api``'s shape (OpenAI's also for Responses)."""
        if api == ANTHROPIC:
            return {"type": "error", "error": {"type": anthropic_type(self.status), "message": self.message}}
        if api == OLLAMA:
            return {"error": self.message}
        return error_body(self.message, type_=self.type_, code=self.code)

    def response(self, api: str = OPENAI) -> web.Response:
        """The answer in ``api``'s shape, with Retry-After (and WWW-Authenticate for a 401)."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="modelctl"'
        response = web.json_response(self.document(api), status=self.status, headers=headers)
        if self.close:
            response.force_close()
        return response

    def sse_event(self, api: str = OPENAI) -> bytes:
        """The SSE event carrying the document, for a stream that started before the refusal: its
        status and headers are gone. Anthropic's client reads only an event named ``error``."""
        if api == ANTHROPIC:
            return _anthropic_event(self.message, anthropic_type(self.status))
        # OpenAI's document for every other API: Ollama's NDJSON translation reads it so.
        return b"data: " + json.dumps(self.document()).encode() + b"\n\n"


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    retry_after: int | None = None,
) -> web.Response:
    """Return a JSON error response in OpenAI's shape; ``retry_after`` (seconds) adds Retry-After."""
    return Refusal(status, message, type_=type_, code=code, retry_after=retry_after).response()


def bad_request(message: str, *, code: str | None = None) -> Refusal:
    """400 for a request the client must fix."""
    return Refusal(400, message, code=code)


def not_api(method: str, path: str) -> Refusal:
    """404 for a path that is no API the gateway forwards (OpenAI's words for an unknown URL)."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    return Refusal(404, f"Invalid URL ({method} {shown})", code="unknown_url")


def too_large(limit: int) -> Refusal:
    """413 for a body over ``limit`` bytes."""
    message = f"Request body is larger than the gateway's limit of {limit} bytes."
    return Refusal(413, message, code="request_too_large")


def request_timeout(message: str) -> Refusal:
    """408 for a body that did not arrive in time: the connection closes (the rest is not awaited)."""
    return Refusal(408, message, code="request_timeout", close=True)


def model_not_found(model: str, available: Iterable[str]) -> Refusal:
    """404 naming the unknown model and listing (briefly) the names that are served."""
    names = sorted(available)
    listed = ", ".join(names[:_LISTED_NAMES]) or "none"
    if len(names) > _LISTED_NAMES:
        listed += f" and {len(names) - _LISTED_NAMES} more"
    message = f"The model '{model}' does not exist. Available models: {listed}."
    return Refusal(404, message, code="model_not_found")


def unavailable(message: str, *, retry_after: int) -> Refusal:
    """503 with Retry-After: the model exists but nothing can serve it right now."""
    return Refusal(503, message, type_=SERVER_ERROR, code="model_unavailable", retry_after=retry_after)


def overloaded(message: str, *, code: str, retry_after: int) -> Refusal:
    """429 with Retry-After: the model is up but at capacity (openai clients: RateLimitError)."""
    return Refusal(429, message, type_=RATE_LIMIT, code=code, retry_after=retry_after)


def unauthorized(message: str) -> Refusal:
    """401: no valid API key (openai clients: AuthenticationError); answered with WWW-Authenticate."""
    return Refusal(401, message, code="invalid_api_key")


def upstream_failed(message: str) -> Refusal:
    """502: the replica was reached but failed to answer properly."""
    return Refusal(502, message, type_=SERVER_ERROR, code="upstream_error")


def sse_error_event(message: str, api: str = OPENAI) -> bytes:
    """Return the SSE event that ends a stream whose upstream failed after the first byte."""
    if api == ANTHROPIC:
        return _anthropic_event(message, "api_error")
    return upstream_failed(message).sse_event(api)


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
