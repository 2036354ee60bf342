"""The gateway's HTTP surface: OpenAI's model list, health probes, and every POST /v1/* by model.

Requests are routed by the ``model`` field of their JSON body (a name or an alias), which is how every
OpenAI client addresses a model, and Anthropic's and the Responses API's too. This module validates
the request (``OpenAIDoor``, its adapter to ``pipeline.Pipeline``, which every API's calls share) and
answers what it can answer itself (lists, probes, metrics). The body is read and parsed once, then
forwarded unchanged, unless the model has LoRA adapters (``targets``: the adapter's selection) or
the gateway asks for a stream's usage.

The API a request speaks is decided once, from its path (``errors.api_of``): Anthropic Messages
(``/v1/messages``, ``/v1/messages/count_tokens``) get the gateway's own errors in Anthropic's
shape; Messages and Responses (``/v1/responses``) get a prefix key of their own (``api_prefix_key``)
and their streams' usage counted; every API is labelled in the metrics. The answers themselves pass
through as the engine gives them (llama-server serves all three), except Messages for a llama.cpp
model with LoRA adapters, which its door translates (``messages.MessagesDoor``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.endpoints.table import EndpointTable, Target
from controller.gateway import errors
from controller.gateway.admission.balancer import PREFIX_AFFINITY
from controller.gateway.admission.hashring import hash64
from controller.gateway.admission.prefix import chat_prefix, prefix_key, prompt_prefix
from controller.gateway.doors import images, targets, tasks
from controller.gateway.doors.audio import AUDIO_PATHS, AudioDoor
from controller.gateway.doors.messages import MessagesDoor
from controller.gateway.doors.pipeline import Door, Pipeline, Prepared, Router
from controller.gateway.errors import ANTHROPIC, OPENAI, RESPONSES, Refusal, api_of
from controller.gateway.forward.usage import USAGE_PATHS, ask_for_usage
from controller.gateway.tables.source import TableSource
from controller.gateway.telemetry.metrics import CONTENT_TYPE, GatewayMetrics
from controller.gateway.telemetry.peers import Peers
from controller.gateway.telemetry.recent import SNAPSHOT_KEY

if TYPE_CHECKING:
    from controller.gateway.forward.proxy import Proxy
    from controller.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


# The APIs forwarded to replicas, by the exact path the client sent (``request.raw_path``: no dot
# segments, no doubled or percent-encoded slashes, no query); the replica gets that same path. Any
# other path under /v1 (llama-server's /v1/../slots, a LoRA adapter load, a typo) is a 404 here.
API_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/rerank",  # llama-server and vLLM
        "/rerank",  # Jina's and Cohere's clients, llama-swap: the replica's /v1/rerank (tasks.REPLICA_PATHS)
        "/v1/score",  # vLLM
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
    }
)
# The queries a client may add to an API path: the anthropic SDK's beta calls (Claude Code's too).
_API_QUERIES = {"/v1/messages": ("beta=true",), "/v1/messages/count_tokens": ("beta=true",)}


def forwarded_as_sent(raw_path: str) -> bool:
    """True if ``raw_path`` (not one of API_PATHS) is an API path with a query it may carry."""
    path, _, query = raw_path.partition("?")
    return query in _API_QUERIES.get(path, ())


def model_card(target: Target, name: str) -> dict[str, object]:
    """OpenAI's entry for ``name``; an adapter's names its base model as ``parent``, as vLLM's does."""
    card: dict[str, object] = {"id": name, "object": "model", "created": target.entry.created}
    card["owned_by"] = "modelctl"
    if target.adapter is not None:
        card["parent"] = target.entry.name
    return card


def model_list(table: EndpointTable) -> dict[str, object]:
    """Return OpenAI's model list: one entry per name and per alias, then each adapter of each."""
    data = [model_card(Target(m), name) for m in table.models for name in m.names]
    data += [model_card(Target(m, k), name) for m in table.models for k, name in enumerate(m.adapters)]
    return {"object": "list", "data": data}


def requested_model(body: bytes) -> tuple[str, dict[str, Any]]:
    """Return the body's ``model`` and the parsed body; raise Refusal (400) unless JSON with a model."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are both
        raise errors.bad_request(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    model = document.get("model")
    if model is None:
        raise errors.bad_request("You must provide a model parameter.", code=None)
    if not isinstance(model, str) or not model:
        raise errors.bad_request("The model parameter must be a non-empty string.")
    return model, document


def wants_stream_usage(document: dict[str, Any]) -> bool:
    """True if a streamed answer will end with a usage chunk (``stream_options.include_usage``)."""
    options = document.get("stream_options")
    return bool(document.get("stream")) and isinstance(options, dict) and bool(options.get("include_usage"))


def api_prefix_key(document: dict[str, Any], api: str, *, prefix_chars: int) -> int | None:
    """Return the prefix key of a request in ``api`` (``prefix.prefix_key`` for OpenAI's), or None.

    Messages: ``system`` and the messages up to the first user message; Responses: ``instructions``
    and ``input`` (its items up to the first user message, or the first ``prefix_chars`` of a
    string), so a conversation that re-sends its history keeps its replica.
    """
    if api == ANTHROPIC:
        head, rest = document.get("system"), document.get("messages")
    elif api == RESPONSES:
        head, rest = document.get("instructions"), document.get("input")
    else:
        return prefix_key(document, prefix_chars=prefix_chars)
    text = chat_prefix(rest) if isinstance(rest, list) and rest else prompt_prefix(rest, prefix_chars) or ""
    system = head if isinstance(head, str) else json.dumps(head, sort_keys=True) if head else ""
    if not text and not system:
        return None
    return hash64(f"{system}\x1d{text}".encode("utf-8", "surrogatepass"))


class OpenAIDoor(Door):
    """OpenAI's API, and Anthropic Messages and Responses on it: forwarded as the client sent them.

    The API is decided once per request from its path (``errors.api_of``): it shapes the gateway's
    own errors (Anthropic's on ``/v1/messages*``) and picks the prefix key. A chat or text stream
    whose client asked no usage asks for it on the client's behalf (``usage``), hidden from it.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self._prefix_chars = settings.affinity_prefix_chars
        self._image_urls = settings.image_urls

    def api_of(self, request: web.Request) -> str:
        return api_of(request.path)

    def check(self, request: web.Request) -> None:
        raw_path = request.raw_path
        if raw_path not in API_PATHS and not forwarded_as_sent(raw_path):
            raise errors.not_api(request.method, request.path)

    def parse(self, body: bytes) -> tuple[str, dict[str, Any]]:
        return requested_model(body)

    def no_table(self, retry_after: int) -> Refusal:
        return errors.unavailable(
            "The gateway knows no models yet: the controller has published no endpoint table. Retry later.",
            retry_after=retry_after,
        )

    def not_found(self, table: EndpointTable, name: str) -> Refusal:
        return errors.model_not_found(name, table.served_names())

    def prepare(
        self,
        request: web.Request,
        target: Target,
        document: dict[str, Any],
        body: bytes,
        api: str,
        started: float,
    ) -> Prepared:
        entry = target.entry
        targets.check_api(target, request.path)
        images.check(target, document, body, urls=self._image_urls)
        body, document = targets.replica_body(target, document, body)
        if request.path in tasks.REPLICA_PATHS:  # served by the replica under another path, whole
            return Prepared(body, None, False, False, translation=tasks.REPLICA_PATHS[request.path])
        key = None
        # A key only matters where there is a choice: not for a model with exactly one replica (a
        # request that then waits through a scale-up is balanced least-outstanding, once).
        if entry.balancing == PREFIX_AFFINITY and len(entry.replicas) != 1:
            key = targets.prefix_key(api_prefix_key(document, api, prefix_chars=self._prefix_chars), target)
        stream = document.get("stream") is True
        # Messages and Responses streams always end with their usage.
        stream_usage = wants_stream_usage(document) if api == OPENAI else stream
        if stream and not stream_usage and request.path in USAGE_PATHS:
            body = ask_for_usage(body, document)  # counted in tokens, as any answer is
            return Prepared(body, key, stream, stream_usage=True, hide_usage=True)
        return Prepared(body, key, stream, stream_usage)


class Routes:
    """OpenAI's surface: model lists, health probes, metrics, and every API path through the pipeline."""

    def __init__(
        self,
        source: TableSource,
        settings: GatewaySettings,
        *,
        pipeline: Pipeline,
        metrics: GatewayMetrics,
        proxy: Proxy,
        peers: Peers | None = None,
    ) -> None:
        self._source = source
        self._settings = settings
        self._pipeline = pipeline
        self._door = OpenAIDoor(settings)
        self._messages = MessagesDoor(self._door, settings, proxy)  # translated where lora would be lost
        self._metrics = metrics
        self._peers = peers

    def add_to(self, router: Router) -> None:
        router.add_get("/healthz", self.healthz)
        router.add_get("/health", self.healthz)  # what llama-server and vLLM answer (tools probe it)
        router.add_get("/readyz", self.readyz)
        router.add_get("/metrics", self.metrics)
        router.add_get("/metrics/requests", self.recent_requests)
        router.add_get("/v1/models", self.list_models)
        router.add_get("/v1/models/{model:.+}", self.get_model)
        forward = self._pipeline.handler(self._door)
        for path in API_PATHS - {targets.MESSAGES}:
            router.add_post(path, forward)
        router.add_post(targets.MESSAGES, self._pipeline.handler(self._messages))
        audio = self._pipeline.handler(AudioDoor())  # multipart, by its form's model field
        for path in AUDIO_PATHS:
            router.add_post(path, audio)
        router.add_post("/v1/{path:.*}", self.not_api)  # never forwarded: 404

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the process serves HTTP at all; names the worker process that answered."""
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 if some model has a ready replica, else 503."""
        table = self._source.current()
        ready = [m.name for m in table.models if m.replicas]
        status = 200 if ready else 503
        return web.json_response({"version": table.version, "ready_models": ready}, status=status)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition of the whole gateway: this process and its peer workers, if any."""
        others = await self._peers.snapshots() if self._peers is not None else ()
        return web.Response(body=self._metrics.render(others), headers={"Content-Type": CONTENT_TYPE})

    async def recent_requests(self, request: web.Request) -> web.Response:
        """The last requests per model (``recent.py``), newest first, of this process and its peers."""
        others = await self._peers.snapshots() if self._peers is not None else ()
        rows = self._metrics.recent.merged(snapshot.get(SNAPSHOT_KEY, ()) for snapshot in others)
        return web.json_response({"models": rows})

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response(model_list(self._source.current()))

    async def get_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        table = self._source.current()
        target = table.resolve(name)
        if target is None:
            door = self._door
            refusal = (
                door.no_table(self._settings.retry_after_s)
                if table.version == 0 and not table.models
                else door.not_found(table, name)
            )
            return refusal.response()
        return web.json_response(model_card(target, name))

    async def not_api(self, request: web.Request) -> web.Response:
        """404 for a path under /v1 that is no API the gateway serves (an engine's admin, a typo)."""
        return errors.not_api(request.method, request.path).response()
