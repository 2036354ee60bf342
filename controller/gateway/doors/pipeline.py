"""The one path every API call takes through the gateway; a front door adapts it to its API.

Each stage is written once here, in order, for every door (OpenAI's, with Anthropic Messages and
Responses on it; Ollama's)::

    the body      read whole under its deadlines (413 past the door's limit: max_body_bytes, audio's
                  max_audio_bytes; 408 past body_timeout_s); audio's only up to its model field, the
                  rest streamed to the replica as it arrives (the door's ``reader``, ``forward.upload``)
    the request   the door parses it in its API's terms and names the model (its refusals: 400)
    the model     resolved in the endpoint table: a model, or one of its adapters (``Target``; just
                  started: waits for the first table; 404, 503); its task must be one the API
                  serves (``tasks``: 400 naming the model and its task)
    the call      the door prepares it: the replica's body and path (an adapter's selection,
                  ``targets``; images checked, ``images``), prefix key, stream flags; the API key's
                  use (checked and counted in flight by the app's middleware, ``auth``)
    forwarding    admission (a slot, a bounded wait: 429, 503), the replica, retries before the first
                  byte, the relay of the answer (``forward.proxy``)
    the answer    the door translates it out (Ollama's shape; others pass as the engine gives them)
    the outcome   metrics, the key's usage, the recent-requests ring (``outcome.record``)

A stage that refuses raises ``errors.Refusal``; the pipeline answers it in the door's API's shape.
A client that leaves is recorded as 499, unless its answer's last event had reached it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from aiohttp import web

from controller.endpoints.table import EndpointTable, Target
from controller.gateway.auth import KEY_USE
from controller.gateway.call import Call, Translation
from controller.gateway.doors import outcome, tasks
from controller.gateway.errors import OPENAI, Refusal
from controller.gateway.tables.source import TableSource

if TYPE_CHECKING:
    from controller.gateway.admission.queues import Admission
    from controller.gateway.forward.proxy import Proxy
    from controller.gateway.settings import GatewaySettings
    from controller.gateway.telemetry.metrics import GatewayMetrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Reader = Callable[[web.Request, int], Awaitable[bytes]]  # (request, limit) -> its body (``Door.reader``)


class Router(Protocol):
    """Where the doors add their routes: the app's guarded router (``app.GuardedRouter``), which
    puts every handler behind the gateway's guard (keys, CORS preflights, errors as JSON)."""

    def add_get(self, path: str, handler: Handler) -> object: ...

    def add_post(self, path: str, handler: Handler) -> object: ...

    def add_route(self, method: str, path: str, handler: Handler) -> object: ...


class Prepared(NamedTuple):
    """What a door makes of a request for a served model: what goes to the replica, and how."""

    body: bytes  # the replica's request body
    key: int | None  # the prefix key (prefix affinity), None without one
    stream: bool  # the client asked for a stream
    stream_usage: bool  # the stream ends with usage
    hide_usage: bool = False  # the gateway asked for that usage: the client does not see it
    translation: Translation | None = None  # a call made in another API's shape


class Door:
    """A front door's adapter: what differs between APIs. The defaults are OpenAI's pass-through."""

    def api_of(self, request: web.Request) -> str:
        """The API ``request`` speaks (labels, error shapes, stream ends)."""
        return OPENAI

    def check(self, request: web.Request) -> None:
        """Raise ``Refusal`` for a request this door does not take (before its body is read)."""

    def parse(self, body: bytes) -> tuple[str, dict[str, Any]]:
        """(the model named, the parsed request); raise ``Refusal`` (400) otherwise."""
        raise NotImplementedError

    def body_limit(self, settings: GatewaySettings) -> int:
        """The most bytes a request body may have here (413 past it)."""
        return settings.max_body_bytes

    def reader(self, proxy: Proxy, settings: GatewaySettings) -> Reader:
        """How this door's bodies are read (asked once, when its handler is made): whole, by default."""
        return proxy.read_body

    def parse_request(self, request: web.Request, body: bytes) -> tuple[str, dict[str, Any]]:
        """``parse`` for a door that needs the request's headers too (a multipart boundary)."""
        return self.parse(body)

    def lookup(self, table: EndpointTable, name: str) -> Target | None:
        """What ``name`` selects in ``table`` (a model or one of its adapters), or None."""
        return table.resolve(name)

    def no_table(self, retry_after: int) -> Refusal:
        """The refusal while the gateway knows no table yet (503)."""
        raise NotImplementedError

    def not_found(self, table: EndpointTable, name: str) -> Refusal:
        """The refusal for a model the table does not serve (404)."""
        raise NotImplementedError

    def prepare(
        self,
        request: web.Request,
        target: Target,
        document: dict[str, Any],
        body: bytes,
        api: str,
        started: float,
    ) -> Prepared | web.StreamResponse:
        """The call's parts for the replica of ``target.entry``, or the door's own answer (nothing
        to forward)."""
        raise NotImplementedError

    def answer(self, call: Call, resp: web.StreamResponse) -> web.StreamResponse:
        """The replica's answer (relayed, or read whole) as the client gets it."""
        return resp

    def left(self, call: Call) -> int | None:
        """The status of an answer the client had whole when it left, else None (499)."""
        return call.delivered


class Pipeline:
    """The stages every door shares, over one table source, admission, proxy and metrics."""

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
        self._keyed = bool(settings.api_keys) or settings.api_keys_file is not None

    def handler(self, door: Door) -> Handler:
        """The aiohttp handler that takes ``door``'s requests down the pipeline (made once per door)."""

        read = door.reader(self._proxy, self._settings)
        return functools.partial(self.handle, door=door, read=read)  # a coroutine function, one frame less

    async def handle(self, request: web.Request, door: Door, read: Reader) -> web.StreamResponse:
        """Answer ``request`` through ``door``, its body read by ``read``: the stages of the module's
        docstring, in order."""
        started = time.monotonic()
        api = door.api_of(request)
        call: Call | None = None
        try:
            door.check(request)
            body = await read(request, door.body_limit(self._settings))
            name, document = door.parse_request(request, body)
            target = await self._target(door, name)
            tasks.check(request.path, target.entry, target.name)  # the API fits the model's task, else 400
            prepared = door.prepare(request, target, document, body, api, started)
            del document  # parsed, it can be 10-30 times its bytes: not kept while it waits or streams
            if isinstance(prepared, web.StreamResponse):
                resp = prepared  # the door's own answer: nothing to forward
            else:
                call = self._call(request, target, prepared, started, api)
                resp = door.answer(call, await self._proxy.forward(request, call, prepared.body))
        except Refusal as refusal:
            resp = refusal.response(api)
        except asyncio.CancelledError:
            # nginx's "client closed request", unless the answer's last event had reached it.
            delivered = door.left(call) if call is not None else None
            outcome.record(self._metrics, request, call, delivered or 499, started, api, keyed=self._keyed)
            raise
        outcome.record(self._metrics, request, call, resp.status, started, api, keyed=self._keyed)
        return resp

    async def read_body(self, request: web.Request) -> bytes:
        """The request's body under the pipeline's bounds (for a door's own calls); raises Refusal."""
        return await self._proxy.read_body(request, self._settings.max_body_bytes)

    async def _target(self, door: Door, name: str) -> Target:
        """The served model (or adapter) ``name`` names in the current table; raises the door's 404
        or 503."""
        table = self._source.current()
        if table.version == 0 and not table.models:
            table = await self._admission.wait_for_table()  # just started: the table is on its way
        target = door.lookup(table, name)
        if target is not None:
            return target
        if table.version == 0 and not table.models:
            # Version 0 is the empty table a source starts with: nothing known yet, not "no such".
            raise door.no_table(self._settings.retry_after_s)
        raise door.not_found(table, name)

    def _call(
        self, request: web.Request, target: Target, prepared: Prepared, started: float, api: str
    ) -> Call:
        return Call(
            target.entry,
            model=target.name,
            key=prepared.key,
            started=started,
            stream=prepared.stream,
            stream_usage=prepared.stream_usage,
            hide_usage=prepared.hide_usage,
            api=api,
            user=request.get(KEY_USE) if self._keyed else None,
            translation=prepared.translation,
        )
