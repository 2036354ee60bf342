"""Ollama's API on the gateway's port, translated to the replicas' OpenAI endpoints.

Tools that speak Ollama (Open WebUI, Continue, Home Assistant, the ``ollama`` client) point at the
gateway as they would at ``ollama serve``. Model lists (``/api/tags``, ``/api/ps``, ``/api/show``,
``/api/version``) are answered here from the endpoint table. ``/api/chat``, ``/api/generate``,
``/api/embed`` and ``/api/embeddings`` are translated (``ollama_translate``) and forwarded by
``proxy.Proxy`` like any OpenAI request: the same admission (queue, 429/503), balancing and prefix
affinity, retries before the first byte, cancel on disconnect, and metrics (``api="ollama"``). The
proxy relays the replica's answer into a ``Translation``: a whole JSON answer (read whole, at most
``upstream.MAX_WHOLE_ANSWER_BYTES``: 502 past it) is translated here, an event stream line by line
into NDJSON as it arrives (``NdjsonResponse``; an event over ``ollama_translate.MAX_EVENT_BYTES``
ends it with an error line). Calls that manage models
(pull, push, create, copy, delete, blobs) are refused: models are declared in the manifests.
Errors are Ollama's ``{"error": "..."}`` with the status Ollama uses.

A streamed request for a model with no ready replica is held silently (as Ollama is while it loads
a model): NDJSON has no comment line that clients would skip, so there are no loading comments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.endpoints.table import ModelEndpoints
from controller.gateway import errors
from controller.gateway.admission.balancer import PREFIX_AFFINITY
from controller.gateway.admission.prefix import prefix_key
from controller.gateway.admission.queues import Admission
from controller.gateway.auth import KEY_USE
from controller.gateway.call import REPLICA_HEADER, Call, error_message
from controller.gateway.doors import ollama_models as models
from controller.gateway.doors import ollama_translate as translate
from controller.gateway.doors import outcome
from controller.gateway.forward.proxy import BodyRefused, Proxy
from controller.gateway.tables.source import TableSource
from controller.gateway.telemetry.metrics import GatewayMetrics

if TYPE_CHECKING:
    from controller.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Calls that manage models in Ollama; here the manifests do.
MANAGEMENT = (
    ("POST", "/api/pull"),
    ("POST", "/api/push"),
    ("POST", "/api/create"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
    ("HEAD", "/api/blobs/{digest}"),
    ("POST", "/api/blobs/{digest}"),
)
# Status for them: the server does not do that (Ollama has no status of its own for it).
NOT_HERE = 501


def refusal(status: int, message: str, *, retry_after: str | None = None) -> web.Response:
    """An error answer in Ollama's shape."""
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response({"error": message}, status=status, headers=headers)


class Refused(Exception):
    """The request is answered by the gateway itself (``response``, Ollama-shaped)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class NdjsonResponse(web.StreamResponse):
    """The client's response to a streamed call: each chunk written (OpenAI SSE) goes out as the
    NDJSON lines it completes; ``write_eof`` first sends what the stream still owes (the done line)."""

    def __init__(self, stream: translate.NdjsonStream, status: int) -> None:
        super().__init__(status=status, headers={"Content-Type": translate.NDJSON})
        self.ndjson = stream
        self.delivered = False  # the done line reached the client

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        stream = self.ndjson
        out = stream.feed(bytes(data))
        if out:
            await super().write(out)
            self.delivered = stream.done and not stream.failed

    async def write_eof(self, data: bytes = b"") -> None:
        out = self.ndjson.end()
        if out:
            await super().write(out)
        await super().write_eof(data)


class OllamaTranslation:
    """How one Ollama call reaches the replica (``path``) and how its answer comes back."""

    __slots__ = ("kind", "model", "path", "response", "started")

    def __init__(self, kind: str, path: str, model: str, started: float) -> None:
        self.kind = kind  # "chat", "generate", "embed" or "embeddings"
        self.path = path
        self.model = model  # the name the client asked for: Ollama echoes it
        self.started = started
        self.response: NdjsonResponse | None = None  # once the answer streams

    def stream(self, status: int, content_type: str) -> web.StreamResponse | None:
        """NDJSON lines for an event stream of chats and generations; None: read the answer whole."""
        if content_type == "text/event-stream" and self.kind in ("chat", "generate"):
            stream = translate.NdjsonStream(self.kind, self.model, self.started)
            self.response = NdjsonResponse(stream, status)
            return self.response
        return None

    def whole(self, resp: web.Response) -> web.StreamResponse:
        """The replica's whole answer (or the gateway's own error) in Ollama's shape."""
        body = resp.body if isinstance(resp.body, bytes) else b""
        if resp.status >= 400 and REPLICA_HEADER not in resp.headers:
            return errors.in_shape(resp, errors.OLLAMA)  # the gateway's own: 429, 502, 503
        status, document = self.document(resp.status, body)
        headers = {k: v for k, v in resp.headers.items() if k in (REPLICA_HEADER, "Retry-After")}
        return web.json_response(document, status=status, headers=headers)

    def document(self, status: int, body: bytes) -> tuple[int, dict[str, Any]]:
        """(status, Ollama's JSON) for a replica's whole answer."""
        if status >= 400:
            return status, {"error": error_message(body) or f"the model server answered HTTP {status}"}
        try:
            answer = json.loads(body)
            if self.kind in ("embed", "embeddings"):
                return status, translate.embed_answer(
                    self.model, answer, self.started, legacy=self.kind == "embeddings"
                )
            return status, translate.answer(self.kind, self.model, answer, self.started)
        except (ValueError, AttributeError, TypeError, IndexError, KeyError, OverflowError, RecursionError):
            return 502, {"error": "the model server sent an answer that is not OpenAI's JSON"}


class OllamaRoutes:
    """The ``/api/*`` handlers over the same table, admission, proxy and metrics as OpenAI's."""

    def __init__(
        self,
        source: TableSource,
        settings: GatewaySettings,
        *,
        proxy: Proxy,
        admission: Admission,
        metrics: GatewayMetrics,
    ) -> None:
        self._source = source
        self._settings = settings
        self._proxy = proxy
        self._admission = admission
        self._metrics = metrics

    def add_to(self, app: web.Application) -> None:
        router = app.router
        router.add_get("/", self.root)
        router.add_get("/api/version", self.version)
        router.add_get("/api/tags", self.tags)
        router.add_get("/api/ps", self.ps)
        router.add_post("/api/show", self.show)
        for path, kind in (
            ("/api/chat", "chat"),
            ("/api/generate", "generate"),
            ("/api/embed", "embed"),
            ("/api/embeddings", "embeddings"),
        ):
            router.add_post(path, self._translated(kind))
        for method, path in MANAGEMENT:
            router.add_route(method, path, self.manage)
        router.add_route("*", "/api/{path:.*}", self.unknown)

    async def root(self, request: web.Request) -> web.Response:
        """What ``ollama serve`` answers at its root: tools (the ollama CLI among them) probe it."""
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": models.API_VERSION})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response(models.tags(self._source.current()))

    async def ps(self, request: web.Request) -> web.Response:
        figures = self._admission.demand.figures({})
        last_active = {name: d.last_active for name, d in figures.items()}
        return web.json_response(models.ps(self._source.current(), last_active, time.time()))

    async def show(self, request: web.Request) -> web.Response:
        try:
            document = await self._document(request)
            name = document.get("model") or document.get("name")  # "name": older clients
            entry = self._entry(name)
        except Refused as exc:
            return exc.response
        return web.json_response(models.show(entry))

    async def manage(self, request: web.Request) -> web.Response:
        path = request.path if not request.path.startswith("/api/blobs/") else "/api/blobs"
        return refusal(NOT_HERE, translate.managed_elsewhere(path))

    async def unknown(self, request: web.Request) -> web.Response:
        return refusal(404, f"{request.method} {request.path}: no such Ollama API call here")

    def _translated(self, kind: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.forward(request, kind)

        return handler

    async def forward(self, request: web.Request, kind: str) -> web.StreamResponse:
        """Translate one call, forward it through admission and the proxy, translate the answer."""
        started = time.monotonic()
        call: Call | None = None
        try:
            document = await self._document(request)
            table = self._source.current()
            if table.version == 0 and not table.models:
                await self._admission.wait_for_table()  # just started: the table is on its way
            prepared = self._call(request, kind, document, started)
            del document  # parsed, it can be 10-30 times its bytes: not kept while it waits or streams
            if isinstance(prepared, web.Response):
                resp: web.StreamResponse = prepared
            else:
                call, translation, body = prepared
                resp = await self._proxy.forward(request, call, body)
                if isinstance(resp, web.Response) and not resp.prepared:
                    resp = translation.whole(resp)
        except Refused as exc:
            resp = exc.response
        except asyncio.CancelledError:
            delivered = call.delivered if call is not None else None
            if delivered is None and call is not None:
                delivered = self._settle_left(call)
            self._record(request, call, delivered or 499, started)
            raise
        self._record(request, call, resp.status, started)
        return resp

    def _call(
        self, request: web.Request, kind: str, document: dict[str, Any], started: float
    ) -> tuple[Call, OllamaTranslation, bytes] | web.Response:
        """The call to forward, its translation and the replica's body; or the answer given here
        (Ollama's "loaded"). Raises Refused. Only what the call needs outlives this: not the
        parsed request, nor the translated one (the body goes as bytes)."""
        name = document.get("model")
        entry = self._entry(name)
        assert isinstance(name, str)
        if "keep_alive" in document:  # how long the model stays after this request (on demand)
            try:
                seconds = translate.keep_alive_seconds(document["keep_alive"])
            except translate.Invalid as exc:
                raise Refused(refusal(400, str(exc))) from exc
            self._admission.demand.keep_alive(entry.name, seconds)
        path, body = self._request(kind, document, entry)
        if body is None:
            return self._loaded(kind, name)
        key = None
        if entry.balancing == PREFIX_AFFINITY and len(entry.replicas) != 1:
            key = prefix_key(body, prefix_chars=self._settings.affinity_prefix_chars)
        streamed = body.get("stream") is True
        call = Call(entry, key=key, started=started, stream_usage=streamed, api=errors.OLLAMA)
        call.user = request.get(KEY_USE)
        translation = OllamaTranslation(kind, path, name, started)
        call.translation = translation
        return call, translation, json.dumps(body).encode()

    def _settle_left(self, call: Call) -> int | None:
        """A client that left mid-stream: 200 with its tokens if the done line had reached it."""
        translation = call.translation
        streamed = translation.response if isinstance(translation, OllamaTranslation) else None
        if streamed is None or not streamed.delivered:
            return None
        usage = streamed.ndjson.usage()
        if usage is not None:
            call.tokens = usage
            self._metrics.tokens(call.entry.name, errors.OLLAMA, *usage)
            if call.user is not None:
                call.user.tokens(*usage)
        return 200

    def _request(
        self, kind: str, document: dict[str, Any], entry: ModelEndpoints
    ) -> tuple[str, dict[str, Any] | None]:
        """(path, OpenAI body) for the replica; body None: nothing to ask (Ollama's load call)."""
        served, engine = entry.name, entry.engine
        try:
            if kind == "chat":
                if not document.get("messages"):
                    return translate.CHAT, None
                return translate.CHAT, translate.chat_request(document, served, engine=engine)
            if kind == "generate":
                if not document.get("prompt") and not document.get("images"):
                    return translate.CHAT, None
                return translate.generate_request(document, served, engine=engine)
            return translate.EMBEDDINGS, translate.embed_request(
                document, served, legacy=kind == "embeddings"
            )
        except translate.Invalid as exc:
            raise Refused(refusal(400, str(exc))) from exc

    def _loaded(self, kind: str, model: str) -> web.Response:
        """Ollama's answer to a chat without messages or a generate without prompt: "loaded"."""
        document: dict[str, Any] = {"model": model, "created_at": translate.now_rfc3339()}
        if kind == "chat":
            document["message"] = {"role": "assistant", "content": ""}
        else:
            document["response"] = ""
        return web.json_response(document | {"done": True, "done_reason": "load"})

    async def _document(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object; raises Refused (400, 413) otherwise."""
        try:
            body = await self._proxy.read_body(request, self._settings.max_body_bytes)
        except BodyRefused as exc:  # 413, 408
            shaped = errors.in_shape(exc.response, errors.OLLAMA)
            assert isinstance(shaped, web.Response)
            raise Refused(shaped) from exc
        try:
            document = json.loads(body) if body else {}
        except (ValueError, RecursionError) as exc:
            raise Refused(refusal(400, f"invalid JSON in the request body: {exc}")) from exc
        if not isinstance(document, dict):
            raise Refused(refusal(400, "the request body must be a JSON object"))
        return document

    def _entry(self, name: Any) -> ModelEndpoints:
        """The served model ``name`` names; raises Refused: 400 without a name, 404, 503 no table."""
        if not isinstance(name, str) or not name:
            raise Refused(refusal(400, "model is required"))
        table = self._source.current()
        entry = models.lookup(table, name)
        if entry is not None:
            return entry
        if table.version == 0 and not table.models:
            message = "the gateway knows no models yet: the controller has published no table; retry later"
            raise Refused(refusal(503, message, retry_after=str(self._settings.retry_after_s)))
        served = (n for m in table.models for n in m.names)
        raise Refused(refusal(404, translate.not_found(name, served)))

    def _record(self, request: web.Request, call: Call | None, status: int, started: float) -> None:
        outcome.record(self._metrics, request, call, status, started, errors.OLLAMA)
