"""One client request on its way through the gateway, and the stream held for a cold model.

``Call`` carries what every step needs to know about a request (its model, prefix key, API, clock;
then the replica that answered and what it delivered); ``Loading`` is the answer started at once for a
streamed request held until its model has a ready replica; ``Translation`` is how a request in
another API's shape (Ollama's) rides the OpenAI path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Final, Protocol

from aiohttp import web

from controller.endpoints.table import ModelEndpoints
from controller.gateway.errors import OPENAI
from controller.gateway.telemetry.metrics import NO_REPLICA, TokenSink

log = logging.getLogger(__name__)

JSON = "application/json"
REPLICA_HEADER = "X-Modelctl-Replica"


class Translation(Protocol):
    """A call made in another API's shape (``ollama.py``; ``messages.py`` for Anthropic Messages to
    a llama.cpp model with adapters) and translated to the replica's OpenAI chat API.

    Its body is translated before ``Proxy.forward``; ``path`` is the replica's path it goes to. A
    whole answer (read whole, up to ``upstream.MAX_WHOLE_ANSWER_BYTES``) comes back as the
    ``web.Response`` the caller translates. An event stream is relayed into ``stream(status,
    content_type)`` if that gives a response: an unprepared one whose ``write`` translates each
    chunk (SSE events in, NDJSON lines out; raising ``events.EventTooLarge`` past a cap) and
    whose ``write_eof`` ends the translated answer; None: the stream is read whole instead.
    """

    path: str

    def stream(self, status: int, content_type: str) -> web.StreamResponse | None: ...


class Call:
    """One client request on its way: what it asked for (set once), and what its answer did.

    Two sides, each with one owner. The request side is set once, when the pipeline builds the call from
    what the door made of the request (``Final``: mypy refuses a second write): ``entry`` (the served
    model, whose replicas take it), ``model`` (the name it is counted under: the adapter's for a request
    naming one of the model's adapters, else the model's own), ``key`` (prefix affinity), ``started``
    (the clock), ``api`` (the API the client speaks, decided once from the path: it labels the metrics,
    shapes the errors and says which event ends a stream), ``stream`` and ``stream_usage`` (the stream
    ends with usage: include_usage, or Messages and Responses), ``hide_usage`` (the gateway asked for
    that usage, not the client), ``user`` (the API key's use, None when the gateway is open) and
    ``translation`` (a call made in another API's shape). The answer side is written only by
    ``forward/`` as the answer goes out: ``replica`` (the proxy, once a replica answered),
    ``first_byte_s``, ``head``, ``delivered`` and ``tokens`` (the relay). ``delivered`` is the status of
    an answer whose last event reached the client: a client that hangs up after it (guidellm does, right
    after ``data: [DONE]``) was served, not a 499.
    """

    __slots__ = (
        "api",
        "delivered",
        "entry",
        "first_byte_s",
        "head",
        "hide_usage",
        "key",
        "model",
        "replica",
        "started",
        "stream",
        "stream_usage",
        "tokens",
        "translation",
        "user",
    )

    def __init__(
        self,
        entry: ModelEndpoints,
        *,
        key: int | None,
        started: float,
        stream_usage: bool,
        stream: bool = False,
        hide_usage: bool = False,
        api: str = OPENAI,
        user: TokenSink | None = None,
        translation: Translation | None = None,
        model: str | None = None,
    ) -> None:
        # The request side: set here, once.
        self.entry: Final = entry
        self.model: Final = model if model is not None else entry.name
        self.key: Final = key
        self.started: Final = started
        self.stream: Final = stream
        self.stream_usage: Final = stream_usage
        self.hide_usage: Final = hide_usage
        self.api: Final = api
        self.user: Final = user
        self.translation: Final = translation
        # The answer side: written by forward/ (proxy: replica; relay: the rest).
        self.replica = NO_REPLICA
        self.first_byte_s: float | None = None
        self.head = b""  # the first chunk of a stream (Messages report prompt tokens there)
        self.delivered: int | None = None
        self.tokens: tuple[int, int] | None = None  # (prompt, completion) from its usage, once counted

    @property
    def group(self) -> str | None:
        """The adapter set the request runs under, for balancing (``admission.balancer``): the
        adapter's name or the base's, for a model with adapters; None for any other model."""
        return self.model if self.entry.adapters else None


EVENT_STREAM = "text/event-stream"
_LOADING_HEADERS = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Loading:
    """A streamed request held for a model with no ready replica: its answer, once started.

    ``tick`` (admission calls it at once and every comment interval) starts the response and writes
    an SSE comment, which OpenAI's clients ignore; ``fail`` ends it with an error event instead of
    the error answer that can no longer be sent.
    """

    __slots__ = ("_comment", "_request", "_status", "api", "response")

    def __init__(
        self, request: web.Request, model: str, api: str = OPENAI, status: Callable[[], str] | None = None
    ) -> None:
        self._request = request
        self._comment = f": loading {model}"
        self._status = status  # what the model waits for now (a hub pull's progress), "" if nothing
        self.api = api  # the error event's shape
        self.response: web.StreamResponse | None = None  # None until the first comment

    async def tick(self) -> None:
        """Write the loading comment (starting the response first); raise ConnectionError if gone."""
        resp = self.response
        if resp is None:
            resp = web.StreamResponse(status=200, headers=_LOADING_HEADERS)
            await resp.prepare(self._request)
            self.response = resp
        status = " ".join((self._status() if self._status is not None else "").split())  # one line
        await resp.write(f"{self._comment}{': ' + status if status else ''}\n\n".encode())

    async def fail(self, event: bytes) -> web.StreamResponse:
        """End the started response with the SSE error ``event``; return the response."""
        resp = self.response
        assert resp is not None, "only a started loading stream fails this way"
        try:
            await resp.write(event)
            await resp.write_eof()
        except ConnectionError:
            log.debug("client left %s before the error event", self._request.path)
        return resp


def error_message(body: bytes) -> str:
    """Return the message of a replica's error body (OpenAI's or llama-server's shape, else text)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body[:200].decode(errors="replace").strip()
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return body[:200].decode(errors="replace").strip()
