"""Forwarding one request to a ready replica, and its answer back, byte for byte as it arrives.

This is where the data plane's promises are kept: the balancer's slot is always given back; a replica
that refuses the connection, drops it, or answers 502/503 *before we sent the client anything* is
skipped for another one; after the first byte there is no retry, a failing upstream ends the stream
(with an SSE error event for event streams) and never hangs; a client that goes away closes the
upstream connection, so the backend stops generating tokens nobody will read.

Cold holds: a request for a model with no ready replica waits in admission until the table gains
one (or its ``load_timeout_s`` passes: 503 with Retry-After). A streamed one gets its answer started
at once (200, ``text/event-stream``) with ``: loading <model>`` SSE comments every
``loading_comment_interval_s``, so clients and proxies in front do not give up on a silent
connection; the replica's events then follow in the same response (its status and headers can no
longer be sent: an error answer, or the hold's 503, becomes an SSE error event that ends the stream).

Client disconnects: run the server with ``handler_cancellation=True`` (``run_gateway`` does, as do
aiohttp's test servers) and the handler is cancelled the moment the client leaves. Without it the
disconnect is noticed at the next chunk written. Either way ``_try`` closes the upstream response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from controller.endpoints.table import ModelEndpoints, Replica
from controller.gateway import errors, mend
from controller.gateway.admission import Admission, Rejected, Slot
from controller.gateway.deadlines import OpenDeadline, ReadDeadline, Watchdog
from controller.gateway.metrics import (
    ANTHROPIC,
    NO_REPLICA,
    OPENAI,
    STREAM_ENDS,
    GatewayMetrics,
    TokenSink,
    usage_tokens,
)
from controller.gateway.upstream import (
    Answer,
    BadAnswer,
    ConnectFailed,
    ConnectionLost,
    Pool,
    UpstreamError,
)

if TYPE_CHECKING:
    from controller.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Host and length belong to the new request; the client's credentials are the gateway's business.
_DROP_FROM_REQUEST = HOP_BY_HOP | {"host", "content-length", "authorization", "x-api-key", "cookie", "expect"}
# aiohttp writes its own Date/Server and frames the body itself.
_DROP_FROM_RESPONSE = HOP_BY_HOP | {"content-length", "date", "server"}
# Upstream statuses that mean "this replica cannot take it now": worth another replica.
_RETRY_STATUSES = frozenset({502, 503})


JSON = "application/json"
# Answers of known length up to this size are read whole and sent in one write: the common JSON
# completion costs fewer system calls, and one that breaks off becomes a clean 502. Larger ones stream.
WHOLE_BODY_BYTES = 1024 * 1024


class _Tail:
    """The last few KiB of a body, kept by reference (no copying per chunk) for ``usage_tokens``."""

    __slots__ = ("_chunks", "_size")
    KEEP = 8192

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self.KEEP:
            self._size -= len(self._chunks.popleft())

    def value(self) -> bytes:
        return b"".join(self._chunks)


class RetryableError(Exception):
    """This try failed before anything reached the client; another replica may serve it."""


# Whether a header name (as spelled on the wire) passes, remembered per spelling: one dict lookup per
# header instead of lower() plus a set lookup. Bounded: a client may invent any number of names.
_KEEP_IN_REQUEST: dict[str, bool] = {}
_KEEP_IN_RESPONSE: dict[str, bool] = {}
_KEEP_CACHE_SIZE = 512


def _keeps(cache: dict[str, bool], drop: frozenset[str], name: str) -> bool:
    keep = name.lower() not in drop
    if len(cache) < _KEEP_CACHE_SIZE:
        cache[name] = keep
    return keep


def request_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return the client's headers that the replica should see (name, value pairs, in order)."""
    cache = _KEEP_IN_REQUEST
    return [
        (k, v)
        for k, v in headers.items()
        if cache.get(k) or (k not in cache and _keeps(cache, _DROP_FROM_REQUEST, k))
    ]


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the replica's headers that the client should see (name, value pairs, in order)."""
    cache = _KEEP_IN_RESPONSE
    return [
        (k, v)
        for k, v in headers
        if cache.get(k) or (k not in cache and _keeps(cache, _DROP_FROM_RESPONSE, k))
    ]


REPLICA_HEADER = "X-Modelctl-Replica"


class Translation(Protocol):
    """A call made in another API's shape (``ollama.py``) and translated to the replica's OpenAI API.

    Its body is translated before ``Proxy.forward``; ``path`` is the replica's path it goes to. A
    whole answer comes back as the ``web.Response`` the caller translates. A streamed one is relayed
    into ``stream(status, content_type)``: an unprepared response whose ``write`` translates each
    chunk (SSE events in, NDJSON lines out) and whose ``write_eof`` ends the translated answer.
    """

    path: str

    def stream(self, status: int, content_type: str) -> web.StreamResponse: ...


class Call:
    """One client request on its way: the model it resolved to, its prefix key, its clock.

    ``api`` (``metrics.OPENAI``, ``ANTHROPIC``, ``RESPONSES``, ``OLLAMA``) is the API the client
    speaks, decided once from the path: it labels the metrics and says which event ends a stream.
    ``delivered`` is the status of an answer whose last event reached the client: a client that
    hangs up after it (guidellm does, right after ``data: [DONE]``) was served, not a 499.
    """

    __slots__ = (
        "api",
        "delivered",
        "entry",
        "first_byte_s",
        "head",
        "key",
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
        api: str = OPENAI,
        user: TokenSink | None = None,
    ) -> None:
        self.entry = entry
        self.key = key
        self.started = started
        self.stream = stream  # the client asked for an event stream ("stream": true)
        self.stream_usage = stream_usage  # the stream ends with usage (include_usage; Messages, Responses)
        self.api = api
        self.user = user  # the named API key it came with (usage, limits); None when the gateway is open
        self.replica = NO_REPLICA  # the replica that answered, for the request metrics
        self.first_byte_s: float | None = None
        self.translation: Translation | None = None  # set for a call made in another API's shape
        self.delivered: int | None = None
        self.head = b""  # the first chunk of a stream (Messages report prompt tokens there)
        self.tokens: tuple[int, int] | None = None  # (prompt, completion) from its usage, once counted


EVENT_STREAM = "text/event-stream"
_LOADING_HEADERS = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Loading:
    """A streamed request held for a model with no ready replica: its answer, once started.

    ``tick`` (admission calls it at once and every comment interval) starts the response and writes
    an SSE comment, which OpenAI's clients ignore; ``fail`` ends it with an error event instead of
    the error answer that can no longer be sent.
    """

    __slots__ = ("_comment", "_request", "api", "response")

    def __init__(self, request: web.Request, model: str, api: str = OPENAI) -> None:
        self._request = request
        self._comment = f": loading {model}\n\n".encode()
        self.api = api  # the error event's shape
        self.response: web.StreamResponse | None = None  # None until the first comment

    async def tick(self) -> None:
        """Write the loading comment (starting the response first); raise ConnectionError if gone."""
        resp = self.response
        if resp is None:
            resp = web.StreamResponse(status=200, headers=_LOADING_HEADERS)
            await resp.prepare(self._request)
            self.response = resp
        await resp.write(self._comment)

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


class Proxy:
    """Sends requests to replicas admitted by ``admission``; ``pool`` is set at app start-up."""

    def __init__(self, settings: GatewaySettings, admission: Admission, metrics: GatewayMetrics) -> None:
        self._settings = settings
        self._admission = admission
        self._metrics = metrics
        self.pool: Pool | None = None
        # Deadlines fire at most a tenth of the shortest timeout (and at most 1 s) late.
        tick_s = min(1.0, settings.first_byte_timeout_s / 10, settings.read_timeout_s / 10)
        self._watchdog = Watchdog(tick_s)

    async def forward(
        self,
        request: web.Request,
        call: Call,
        body: bytes,
        *,
        slot: Slot | None = None,
        loading: Loading | None = None,
    ) -> web.StreamResponse:
        """Answer ``request`` from one of ``call.entry``'s replicas; errors come back as responses.

        Tries up to ``max_tries`` replicas, each at most once, while nothing has been sent to the
        client; waits (bounded) for a slot when all are busy or none is ready yet. Returns the relayed
        response; a 429/503 from admission; a 503 (with Retry-After) when every try failed before the
        first byte; or a 502 when a replica failed in a way a retry would not fix. A model without
        ready replicas goes through ``_forward_cold``, which passes the slot of its first try and its
        started loading stream (if any) back in: the common path keeps one coroutine frame.
        """
        if slot is None and not call.entry.replicas:
            return await self._forward_cold(request, call, body)
        model = call.entry
        failed: list[str] = []
        for _ in range(self._settings.max_tries):
            if slot is None:
                try:
                    slot = await self._admission.acquire(model, exclude=failed, key=call.key)
                except Rejected as exc:
                    return exc.response
                if slot is None:
                    break
            replica, done = slot
            slot = None
            try:
                return await self._try(request, replica, body, call, loading)
            except RetryableError as exc:
                log.warning("model %s: replica %s failed: %s", model.name, replica.id, exc)
                failed.append(replica.id)
                self._metrics.retry(model.name)
            finally:
                done()
        return self._failed(model, len(failed))

    async def _forward_cold(self, request: web.Request, call: Call, body: bytes) -> web.StreamResponse:
        """``forward`` for a model that had no ready replica: held (counted, timed), then as usual."""
        name = call.entry.name
        self._metrics.cold_start(name)
        loading = Loading(request, name, call.api) if call.stream else None
        held_since = time.monotonic()
        try:
            slot = await self._admission.acquire(
                call.entry, key=call.key, tick=loading.tick if loading is not None else None
            )
        except Rejected as exc:
            self._metrics.held(name, time.monotonic() - held_since)
            return await self._loaded(loading, exc.response)
        except ConnectionError:  # a loading comment found the client gone
            log.debug("client left %s while held for model %s", request.path, name)
            if loading is not None and loading.response is not None:
                return loading.response
            return web.Response(status=499, reason="Client Closed Request")  # nobody reads it
        self._metrics.held(name, time.monotonic() - held_since)
        if slot is None:
            return await self._loaded(loading, self._failed(call.entry, 0))
        call.entry = self._admission.entry(name) or call.entry  # retries go to its replicas now
        resp = await self.forward(request, call, body, slot=slot, loading=loading)
        return await self._loaded(loading, resp)

    async def _loaded(self, loading: Loading | None, resp: web.StreamResponse) -> web.StreamResponse:
        """Return ``resp``, or end the loading stream already started with it as an error event."""
        if loading is None or loading.response is None or resp is loading.response:
            return resp
        assert isinstance(resp, web.Response), "answers other than the loading stream are whole"
        return await loading.fail(errors.sse_event_of(resp, loading.api))

    def _failed(self, model: ModelEndpoints, failed: int) -> web.Response:
        return errors.unavailable(
            f"The model '{model.name}' is temporarily unavailable: {failed} of its replicas "
            "failed to answer. Retry later.",
            retry_after=self._settings.retry_after_s,
        )

    async def _post(
        self, replica: Replica, request: web.Request, body: bytes, translation: Translation | None = None
    ) -> Answer:
        """Send the request to ``replica``; return its answer once the status line and headers are in.

        Streams keep their connection too (vLLM's server keeps it alive: a connect saved per
        stream). llama-server closes it after every streamed answer without saying so; the pool
        forgets it when the close arrives, and a request that raced the close is sent again.
        """
        assert self.pool is not None, "the gateway's upstream pool starts with the app"
        headers = request_headers(request.headers)
        if translation is not None:  # its answer is parsed: no compressed body, whatever the client takes
            headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
            return await self.pool.post(replica.url, translation.path, headers, body)
        return await self.pool.post(replica.url, request.raw_path, headers, body)

    async def _try(
        self,
        request: web.Request,
        replica: Replica,
        body: bytes,
        call: Call,
        loading: Loading | None = None,
    ) -> web.StreamResponse:
        """One try on ``replica``; raise RetryableError if it failed before the first byte.

        Sends the request and waits (``first_byte_timeout_s``) for the status line and headers, then
        relays the answer. The upstream response is closed on the way out unless it completed (its
        connection went back to the pool already): cancelled, failed or client gone, that closes the
        connection to the replica.
        """
        timeout_s = self._settings.first_byte_timeout_s
        task = asyncio.current_task()
        assert task is not None
        deadline = OpenDeadline(asyncio.get_running_loop().time() + timeout_s, task)
        watchdog = self._watchdog
        watchdog.add(deadline)
        try:
            upstream = await self._post(replica, request, body, call.translation)
        except asyncio.CancelledError:
            if not deadline.timed_out():
                raise  # the client left (or the server stops): not a timeout
            log.warning("replica %s sent no answer within %gs", replica.id, timeout_s)
            return errors.upstream_failed(f"The model server sent no answer within {timeout_s:g} seconds.")
        except (ConnectFailed, ConnectionLost) as exc:
            # Refused, reset, dropped before the status line, connect timeout: nothing was sent.
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        except BadAnswer as exc:
            log.warning("replica %s answered badly: %s", replica.id, exc)
            return errors.upstream_failed("The model server sent an invalid answer.")
        finally:
            watchdog.discard(deadline)
        try:
            if upstream.status in _RETRY_STATUSES:
                raise RetryableError(f"answered HTTP {upstream.status}")
            call.replica = replica.id
            if loading is not None and loading.response is not None:
                return await self._relay_loaded(request, upstream, replica, call, loading)
            content_type = upstream.content_type
            is_sse = content_type == EVENT_STREAM
            length = upstream.content_length
            translation = call.translation
            if translation is not None and (is_sse or length is None or length > WHOLE_BODY_BYTES):
                started = translation.stream(upstream.status, content_type)
                started.headers[REPLICA_HEADER] = replica.id
                await started.prepare(request)
                return await self._relay(request, upstream, replica, call, is_sse, content_type, started)
            if not is_sse and length is not None and length <= WHOLE_BODY_BYTES:
                return await self._relay_whole(upstream, replica, call, content_type)
            return await self._relay(request, upstream, replica, call, is_sse, content_type)
        finally:
            upstream.close()  # an incomplete answer closes its connection; a complete one is pooled

    async def _relay(
        self,
        request: web.Request,
        upstream: Answer,
        replica: Replica,
        call: Call,
        is_sse: bool,
        content_type: str,
        started: web.StreamResponse | None = None,
    ) -> web.StreamResponse:
        """Copy status, headers and each chunk to the client as it arrives; return the response.

        ``started``: a response already sent to the client (a loading stream); only the body goes
        into it.
        """
        if started is None:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            headers = resp.headers
            headers.extend(response_headers(upstream.headers))
            headers[REPLICA_HEADER] = replica.id  # which replica answered: for users and tests
            if is_sse:
                headers["Cache-Control"] = "no-cache"
                headers["X-Accel-Buffering"] = "no"
            elif upstream.content_length is not None:
                resp.content_length = upstream.content_length
            await resp.prepare(request)
        else:
            resp = started
        # Usage comes at the end: of a JSON body, or of a stream that asked for it.
        tail = _Tail() if (call.stream_usage if is_sse else content_type == JSON) else None
        loop = asyncio.get_running_loop()
        watch = ReadDeadline(self._settings.read_timeout_s, upstream)
        self._watchdog.add(watch)
        chunk = b""
        mending = mend.for_stream(call.api, call.entry.name) if is_sse and upstream.status == 200 else None
        try:
            while True:
                watch.reading_since = loop.time()
                try:
                    chunk = await upstream.next_chunk()
                except UpstreamError as exc:
                    await self._end_broken(request, resp, replica, exc, is_sse=is_sse, api=call.api)
                    return resp
                watch.reading_since = None
                if not chunk:  # the end: what a mend still holds goes out, then nothing
                    chunk, mending = (mending.flush() if mending is not None else b""), None
                    if not chunk:
                        break
                elif mending is not None:
                    chunk = mending.feed(chunk)
                    if not chunk:
                        continue  # the end of an event is still to come
                try:
                    await resp.write(chunk)
                except ConnectionError:  # aiohttp's ClientConnectionResetError is one
                    log.debug("client left %s mid-answer; closing replica %s", request.path, replica.id)
                    return resp
                if call.first_byte_s is None:
                    call.first_byte_s = time.monotonic() - call.started
                    call.head = chunk
                if tail is not None:
                    tail.add(chunk)
        except asyncio.CancelledError:
            # The client left while we waited for the replica: after the stream's last event, it
            # was served (what it read is whole), so it counts as such, tokens included.
            if is_sse and watch.reading_since is not None:
                self._settle_left(call, resp.status, tail.value() if tail is not None else chunk)
            raise
        finally:
            self._watchdog.discard(watch)
        try:
            await resp.write_eof()
        except ConnectionError:
            log.debug("client left %s at the end of the answer", request.path)
        except asyncio.CancelledError:
            call.delivered = resp.status  # every byte of the answer was written already
            if tail is not None:
                self._count_tokens(call, tail.value())
            raise
        if tail is not None:
            self._count_tokens(call, tail.value())
        return resp

    def _settle_left(self, call: Call, status: int, sent: bytes) -> None:
        """A client that left mid-stream: if ``sent`` (what it got last) ends the stream, it was served."""
        end = STREAM_ENDS.get(call.api)
        if end is None or not sent.endswith(b"\n\n"):
            return
        at = sent.rfind(end)
        if at < 0 or b"\n\n" in sent[at:-2]:  # no end event, or another event follows it
            return
        call.delivered = status
        if call.stream_usage:
            self._count_tokens(call, sent)

    async def _relay_whole(
        self, upstream: Answer, replica: Replica, call: Call, content_type: str
    ) -> web.Response:
        """A small body of known length: read it whole, answer in one write (or 502 if it broke)."""
        try:
            if upstream.complete:  # the whole body came with the headers: nothing to wait for
                body = await upstream.read()
            else:
                async with asyncio.timeout(self._settings.read_timeout_s):
                    body = await upstream.read()
        except (UpstreamError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("replica %s failed mid-answer: %s", replica.id, reason)
            return errors.upstream_failed("The model server failed mid-answer.")
        headers = response_headers(upstream.headers)
        headers.append((REPLICA_HEADER, replica.id))
        call.first_byte_s = time.monotonic() - call.started
        if content_type == JSON:
            self._count_tokens(call, body[-_Tail.KEEP :])
        return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)

    async def _relay_loaded(
        self, request: web.Request, upstream: Answer, replica: Replica, call: Call, loading: Loading
    ) -> web.StreamResponse:
        """The replica's answer into a loading stream: its events, or its error as an SSE event."""
        started = loading.response
        assert started is not None
        content_type = upstream.content_type
        if upstream.status == 200 and content_type == EVENT_STREAM:
            return await self._relay(request, upstream, replica, call, True, content_type, started)
        if upstream.status == 200:
            message = f"The model server answered {content_type or 'a body'}, not an event stream."
        else:
            try:
                async with asyncio.timeout(self._settings.read_timeout_s):
                    length = upstream.content_length
                    small = length is not None and length <= WHOLE_BODY_BYTES
                    body = await upstream.read() if small else await upstream.next_chunk()
            except (UpstreamError, TimeoutError):
                body = b""
            details = error_message(body) or "no details"
            message = f"The model server answered HTTP {upstream.status}: {details}"
        log.warning("replica %s answered a held stream: %s", replica.id, message)
        return await loading.fail(errors.sse_error_event(message, loading.api))

    def _count_tokens(self, call: Call, tail: bytes) -> None:
        usage = usage_tokens(tail)
        if usage is None:
            return
        if call.api == ANTHROPIC and call.stream:  # Messages streams: prompt tokens come first
            head = usage_tokens(call.head)
            usage = (max(usage[0], head[0]) if head else usage[0], usage[1])
        call.tokens = usage
        self._metrics.tokens(call.entry.name, call.api, *usage)
        if call.user is not None:
            call.user.tokens(*usage)

    async def _end_broken(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        replica: Replica,
        exc: BaseException,
        *,
        is_sse: bool,
        api: str = OPENAI,
    ) -> None:
        """End a response whose upstream failed after the first byte, without hanging the client."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("replica %s failed mid-answer to %s: %s", replica.id, request.path, reason)
        if not is_sse:
            # The client must see a truncated body as an error, not as a short complete one.
            resp.force_close()
            if request.transport is not None:
                request.transport.close()
            return
        try:
            await resp.write(errors.sse_error_event("The model server failed mid-stream.", api))
            await resp.write_eof()
        except ConnectionError:
            log.debug("client left %s before the error event", request.path)
