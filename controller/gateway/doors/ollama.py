"""Ollama's API on the gateway's port, translated to the replicas' OpenAI endpoints.

Tools that speak Ollama (Open WebUI, Continue, Home Assistant, the ``ollama`` client) point at the
gateway as they would at ``ollama serve``. Model lists (``/api/tags``, ``/api/ps``, ``/api/show``,
``/api/version``) are answered here from the endpoint table. ``/api/chat``, ``/api/generate``,
``/api/embed`` and ``/api/embeddings`` are translated (``ollama_translate``: ``OllamaDoor`` is their
adapter) and go down the same pipeline (``pipeline.Pipeline``) as any OpenAI request: the same admission
(queue, 429/503), balancing and prefix affinity, retries before the first byte, cancel on disconnect, and
metrics (``api="ollama"``). The proxy relays the replica's answer into a ``Translation``: a whole JSON
answer (read whole, at most ``upstream.MAX_WHOLE_ANSWER_BYTES``: 502 past it) is translated here, an
event stream line by line into NDJSON as it arrives (``translated.TranslatedResponse``; an event over
``ollama_translate.MAX_EVENT_BYTES`` ends it with an error line).
Calls that manage models
(pull, push, create, copy, delete, blobs) are refused: models are declared in the manifests.
Errors are Ollama's ``{"error": "..."}`` with the status Ollama uses.

A streamed request for a model with no ready replica is held silently (as Ollama is while it loads
a model): NDJSON has no comment line that clients would skip, so there are no loading comments.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.endpoints.table import EndpointTable, Target
from controller.gateway import errors
from controller.gateway.admission.balancer import PREFIX_AFFINITY
from controller.gateway.admission.prefix import prefix_key
from controller.gateway.admission.queues import Admission
from controller.gateway.call import Call, error_message
from controller.gateway.doors import images, targets
from controller.gateway.doors import ollama_models as models
from controller.gateway.doors import ollama_translate as translate
from controller.gateway.doors.pipeline import Door, Pipeline, Prepared, Router
from controller.gateway.doors.translated import Translated, TranslatedResponse, left_after_end
from controller.gateway.errors import Refusal
from controller.gateway.forward.proxy import Proxy
from controller.gateway.tables.source import TableSource

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


def refusal(status: int, message: str, *, retry_after: int | None = None) -> Refusal:
    """A refusal whose message is Ollama's words (answered in Ollama's shape, ``{"error": ...}``)."""
    return Refusal(status, message, retry_after=retry_after)


class OllamaTranslation(Translated):
    """How one Ollama call reaches the replica (``path``) and how its answer comes back."""

    __slots__ = ("kind", "model", "path", "started")

    def __init__(self, kind: str, path: str, model: str, started: float) -> None:
        super().__init__()
        self.kind = kind  # "chat", "generate", "embed" or "embeddings"
        self.path = path
        self.model = model  # the name the client asked for: Ollama echoes it
        self.started = started

    def stream(self, status: int, content_type: str) -> web.StreamResponse | None:
        """NDJSON lines for an event stream of chats and generations; None: read the answer whole."""
        if content_type == "text/event-stream" and self.kind in ("chat", "generate"):
            stream = translate.NdjsonStream(self.kind, self.model, self.started)
            self.response = TranslatedResponse(stream, status, {"Content-Type": translate.NDJSON})
            return self.response
        return None

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


class OllamaDoor(Door):
    """One of Ollama's model calls (``kind``: chat, generate, embed, embeddings), translated to the
    replica's OpenAI endpoint on the way in and to Ollama's answer on the way out."""

    def __init__(self, kind: str, settings: GatewaySettings, admission: Admission, proxy: Proxy) -> None:
        self.kind = kind
        self._prefix_chars = settings.affinity_prefix_chars
        self._admission = admission
        self._proxy = proxy

    def api_of(self, request: web.Request) -> str:
        return errors.OLLAMA

    def parse(self, body: bytes) -> tuple[str, dict[str, Any]]:
        document = request_document(body)
        return model_of(document), document

    def lookup(self, table: EndpointTable, name: str) -> Target | None:
        return models.lookup(table, name)

    def no_table(self, retry_after: int) -> Refusal:
        message = "the gateway knows no models yet: the controller has published no table; retry later"
        return refusal(503, message, retry_after=retry_after)

    def not_found(self, table: EndpointTable, name: str) -> Refusal:
        return refusal(404, translate.not_found(name, table.served_names()))

    def prepare(
        self,
        request: web.Request,
        target: Target,
        document: dict[str, Any],
        body: bytes,
        api: str,
        started: float,
    ) -> Prepared | web.StreamResponse:
        """The translated call, or the answer given here (Ollama's "loaded"). Only what the call
        needs outlives this: not the parsed request, nor the translated one (the body goes as bytes)."""
        kind, name, entry = self.kind, document["model"], target.entry
        if "keep_alive" in document:  # how long the model stays after this request (on demand)
            try:
                seconds = translate.keep_alive_seconds(document["keep_alive"])
            except translate.Invalid as exc:
                raise refusal(400, str(exc)) from exc
            self._admission.demand.keep_alive(entry.name, seconds)
        path, translated = self._request(document, target)
        if translated is None:
            return loaded(kind, name)
        targets.check_api(target, path)
        images.check(target, translated)
        translated |= targets.changes(target, translated)  # the adapter's selection
        key = None
        if entry.balancing == PREFIX_AFFINITY and len(entry.replicas) != 1:
            key = targets.prefix_key(prefix_key(translated, prefix_chars=self._prefix_chars), target)
        streamed = translated.get("stream") is True
        translation = OllamaTranslation(kind, path, name, started)
        return Prepared(json.dumps(translated).encode(), key, False, streamed, translation=translation)

    def answer(self, call: Call, resp: web.StreamResponse) -> web.StreamResponse:
        if isinstance(resp, web.Response) and not resp.prepared:
            assert isinstance(call.translation, OllamaTranslation)
            return call.translation.whole(resp)
        return resp

    def left(self, call: Call) -> int | None:
        """A client that left mid-stream: 200 with its tokens if the done line had reached it."""
        return left_after_end(call, self._proxy)

    def _request(self, document: dict[str, Any], target: Target) -> tuple[str, dict[str, Any] | None]:
        """(path, OpenAI body) for the replica; body None: nothing to ask (Ollama's load call)."""
        kind, served, engine = self.kind, target.entry.name, target.entry.engine
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
            raise refusal(400, str(exc)) from exc


def request_document(body: bytes) -> dict[str, Any]:
    """The request's JSON object (an empty body is an empty one); raises Refusal (400) otherwise."""
    try:
        document = json.loads(body) if body else {}
    except (ValueError, RecursionError) as exc:
        raise refusal(400, f"invalid JSON in the request body: {exc}") from exc
    if not isinstance(document, dict):
        raise refusal(400, "the request body must be a JSON object")
    return document


def model_of(document: dict[str, Any], *, key: str = "model") -> str:
    """The model the request names; raises Refusal (400) without one."""
    name = document.get(key)
    if not isinstance(name, str) or not name:
        raise refusal(400, "model is required")
    return name


def loaded(kind: str, model: str) -> web.Response:
    """Ollama's answer to a chat without messages or a generate without prompt: "loaded"."""
    document: dict[str, Any] = {"model": model, "created_at": translate.now_rfc3339()}
    if kind == "chat":
        document["message"] = {"role": "assistant", "content": ""}
    else:
        document["response"] = ""
    return web.json_response(document | {"done": True, "done_reason": "load"})


class OllamaRoutes:
    """The ``/api/*`` handlers over the same table, admission, proxy and metrics as OpenAI's."""

    def __init__(
        self,
        source: TableSource,
        settings: GatewaySettings,
        *,
        pipeline: Pipeline,
        proxy: Proxy,
        admission: Admission,
    ) -> None:
        self._source = source
        self._settings = settings
        self._pipeline = pipeline
        self._proxy = proxy
        self._admission = admission

    def add_to(self, router: Router) -> None:
        pipeline = self._pipeline
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
            router.add_post(
                path, pipeline.handler(OllamaDoor(kind, self._settings, self._admission, self._proxy))
            )
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
            document = request_document(await self._pipeline.read_body(request))
            key = "model" if document.get("model") else "name"  # "name": older clients
            target = self._target(model_of(document, key=key))
        except Refusal as exc:
            return exc.response(errors.OLLAMA)
        return web.json_response(models.show(target))

    async def manage(self, request: web.Request) -> web.Response:
        path = request.path if not request.path.startswith("/api/blobs/") else "/api/blobs"
        return refusal(NOT_HERE, translate.managed_elsewhere(path)).response(errors.OLLAMA)

    async def unknown(self, request: web.Request) -> web.Response:
        return refusal(404, f"{request.method} {request.path}: no such Ollama API call here").response(
            errors.OLLAMA
        )

    def _target(self, name: str) -> Target:
        """The served model (or adapter) ``name`` names; raises Refusal: 404, 503 no table."""
        table = self._source.current()
        target = models.lookup(table, name)
        if target is not None:
            return target
        door = OllamaDoor("show", self._settings, self._admission, self._proxy)
        if table.version == 0 and not table.models:
            raise door.no_table(self._settings.retry_after_s)
        raise door.not_found(table, name)
