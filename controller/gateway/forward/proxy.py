"""Forwarding one request to a ready replica (its answer comes back through ``relay``).

This is where the data plane's promises are kept: the balancer's slot is always given back; a replica
that refuses the connection, drops it, or answers 502/503 *before we sent the client anything* is
skipped for another one (a body streamed to it, ``upload``: only if none of it went there); after
the first byte there is no retry, a failing upstream ends the stream
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
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.endpoints.table import ModelEndpoints, Replica
from controller.gateway import errors
from controller.gateway.admission.queues import Admission, Slot
from controller.gateway.call import EVENT_STREAM, REPLICA_HEADER, Call, Loading, Translation
from controller.gateway.errors import Refusal
from controller.gateway.forward import upload
from controller.gateway.forward.deadlines import OpenDeadline, Watchdog
from controller.gateway.forward.headers import request_headers
from controller.gateway.forward.relay import WHOLE_BODY_BYTES, Relay
from controller.gateway.forward.upload import StreamedBody
from controller.gateway.forward.upstream import (
    MAX_WHOLE_ANSWER_BYTES,
    Answer,
    BadAnswer,
    ConnectFailed,
    ConnectionLost,
    Pool,
)
from controller.gateway.telemetry.metrics import GatewayMetrics

if TYPE_CHECKING:
    from controller.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Upstream statuses that mean "this replica cannot take it now": worth another replica.
_RETRY_STATUSES = frozenset({502, 503})


class RetryableError(Exception):
    """This try failed before anything reached the client; another replica may serve it."""


class Proxy:
    """Sends requests to replicas admitted by ``admission``; ``pool`` is set at app start-up."""

    def __init__(self, settings: GatewaySettings, admission: Admission, metrics: GatewayMetrics) -> None:
        self._settings = settings
        self._admission = admission
        self._metrics = metrics
        self.pool: Pool | None = None
        # Deadlines fire at most a tenth of the shortest timeout (and at most 1 s) late.
        shortest = min(
            settings.first_byte_timeout_s,
            settings.read_timeout_s,
            settings.write_timeout_s,
            settings.body_timeout_s,
        )
        tick_s = min(1.0, shortest / 10)
        self._watchdog = Watchdog(tick_s)
        self._relay = Relay(settings, metrics, self._watchdog)

    async def read_body(self, request: web.Request, limit: int) -> bytes:
        """Return the request's whole body; raise ``Refusal``: 413 past ``limit`` bytes, 408 when it
        does not come within ``body_timeout_s`` (a body trickling in holds a connection and memory).

        A body that came with the request's head (most do) is taken as it lies in the buffer: no
        deadline, no coroutine, no copy.
        """
        length = request.content_length
        if length is not None and length > limit:
            raise errors.too_large(limit)
        content = request.content
        if content.is_eof():  # all of it is here (decoded, if the client compressed it)
            body = content.read_nowait()
            if len(body) > limit:
                raise errors.too_large(limit)
            return body
        timeout_s = self._settings.body_timeout_s
        task = asyncio.current_task()
        assert task is not None
        deadline = OpenDeadline(asyncio.get_running_loop().time() + timeout_s, task)
        self._watchdog.add(deadline)
        try:
            return await self._read(request, limit)
        except asyncio.CancelledError:
            if not deadline.timed_out():
                raise  # the client left
            log.info("the body of %s did not come within %gs", request.path, timeout_s)
            # The connection closes: the rest of the body is not worth waiting for.
            raise errors.request_timeout(
                f"The request body did not arrive within {timeout_s:g} seconds."
            ) from None
        finally:
            self._watchdog.discard(deadline)

    def count_tokens(self, call: Call, usage: tuple[int, int]) -> None:
        """Count ``usage`` as ``call``'s tokens (a door's translated stream that the client left)."""
        self._relay.count(call, usage)

    @staticmethod
    async def _read(request: web.Request, limit: int) -> bytes:
        """The body as it comes, refused once past ``limit`` (a door's own: audio's is not the
        app's ``client_max_size``)."""
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise errors.too_large(limit)
        return bytes(body)

    async def forward(
        self,
        request: web.Request,
        call: Call,
        body: bytes,
        *,
        slot: Slot | None = None,
        loading: Loading | None = None,
        model: ModelEndpoints | None = None,
    ) -> web.StreamResponse:
        """Answer ``request`` from one of ``call.entry``'s replicas; return the relayed response.

        Tries up to ``max_tries`` replicas, each at most once, while nothing has been sent to the
        client; waits (bounded) for a slot when all are busy or none is ready yet. Raises
        ``Refusal``: 429/503 from admission; 503 (with Retry-After) when every try failed before
        the first byte; 502 when a replica failed in a way a retry would not fix. A model without
        ready replicas goes through ``_forward_cold``, which passes the slot of its first try, its
        started loading stream (if any) and the model's entry as it is now back in: the common path
        keeps one coroutine frame.
        """
        if model is None:
            model = call.entry
            if slot is None and not model.replicas:
                return await self._forward_cold(request, call, body)
        failed: list[str] = []
        for _ in range(self._settings.max_tries):
            if slot is None:
                slot = await self._admission.acquire(
                    model, exclude=failed, key=call.key, size=len(body), group=call.group
                )
                if slot is None:
                    break
            replica, done = slot
            slot = None
            try:
                return await self._try(request, replica, body, call, loading)
            except RetryableError as exc:
                log.warning("model %s: replica %s failed: %s", model.name, replica.id, exc)
                failed.append(replica.id)
                self._metrics.retry(call.model)
            finally:
                done()
        raise self._failed(model, len(failed))

    async def _forward_cold(self, request: web.Request, call: Call, body: bytes) -> web.StreamResponse:
        """``forward`` for a model that had no ready replica: held (counted, timed), then as usual."""
        name = call.entry.name
        self._metrics.cold_start(call.model)
        status = lambda: (self._admission.entry(name) or call.entry).loading  # noqa: E731
        loading = Loading(request, name, call.api, status) if call.stream else None
        held_since = time.monotonic()
        try:
            slot = await self._admission.acquire(
                call.entry,
                key=call.key,
                tick=loading.tick if loading is not None else None,
                size=len(body),
                group=call.group,
            )
        except Refusal as exc:
            self._metrics.held(call.model, time.monotonic() - held_since)
            return await self._loaded(loading, exc)
        except ConnectionError:  # a loading comment found the client gone
            log.debug("client left %s while held for model %s", request.path, name)
            if loading is not None and loading.response is not None:
                return loading.response
            return web.Response(status=499, reason="Client Closed Request")  # nobody reads it
        self._metrics.held(call.model, time.monotonic() - held_since)
        if slot is None:
            return await self._loaded(loading, self._failed(call.entry, 0))
        model = self._admission.entry(name) or call.entry  # retries go to its replicas now
        try:
            return await self.forward(request, call, body, slot=slot, loading=loading, model=model)
        except Refusal as exc:
            return await self._loaded(loading, exc)

    async def _loaded(self, loading: Loading | None, refusal: Refusal) -> web.StreamResponse:
        """Raise ``refusal``, or end the loading stream already started with it as an error event."""
        if loading is None or loading.response is None:
            raise refusal
        return await loading.fail(refusal.sse_event(loading.api))

    def _failed(self, model: ModelEndpoints, failed: int) -> Refusal:
        return errors.unavailable(
            f"The model '{model.name}' is temporarily unavailable: {failed} of its replicas "
            "failed to answer. Retry later.",
            retry_after=self._settings.retry_after_s,
        )

    def _post(
        self, replica: Replica, request: web.Request, body: bytes, translation: Translation | None = None
    ) -> Coroutine[Any, Any, Answer]:
        """Send the request to ``replica``; its answer once the status line and headers are in (the
        pool's coroutine, awaited by the caller: no frame of its own on the request path).

        Streams keep their connection too (vLLM's server keeps it alive: a connect saved per
        stream). llama-server closes it after every streamed answer without saying so; the pool
        forgets it when the close arrives, and a request that raced the close is sent again.
        """
        assert self.pool is not None, "the gateway's upstream pool starts with the app"
        headers = request_headers(request.headers)
        if translation is not None:  # its answer is parsed: no compressed body, whatever the client takes
            headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
            return self.pool.post(replica.url, translation.path, headers, body)
        if type(body) is StreamedBody:  # still arriving (audio's): sent as it comes, ``upload``
            return upload.post(self.pool, replica.url, request.raw_path, headers, body)
        return self.pool.post(replica.url, request.raw_path, headers, body)

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
            raise errors.upstream_failed(
                f"The model server sent no answer within {timeout_s:g} seconds."
            ) from None
        except (ConnectFailed, ConnectionLost) as exc:
            # Refused, reset, dropped before the status line, connect timeout: nothing was sent.
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        except BadAnswer as exc:
            log.warning("replica %s answered badly: %s", replica.id, exc)
            raise errors.upstream_failed("The model server sent an invalid answer.") from exc
        finally:
            watchdog.discard(deadline)
        try:
            if upstream.status in _RETRY_STATUSES and type(body) is not StreamedBody:  # its bytes went
                raise RetryableError(f"answered HTTP {upstream.status}")
            call.replica = replica.id
            if loading is not None and loading.response is not None:
                return await self._relay.loaded(request, upstream, replica, call, loading)
            content_type = upstream.content_type
            is_sse = content_type == EVENT_STREAM
            length = upstream.content_length
            translation = call.translation
            if translation is not None:  # its answer is translated: as a stream, or read whole (capped)
                started = translation.stream(upstream.status, content_type) if is_sse else None
                if started is None:
                    limit = MAX_WHOLE_ANSWER_BYTES
                    return await self._relay.whole(upstream, replica, call, content_type, limit=limit)
                started.headers[REPLICA_HEADER] = replica.id
                await started.prepare(request)
                return await self._relay.stream(
                    request, upstream, replica, call, is_sse, content_type, started
                )
            if not is_sse and length is not None and length <= WHOLE_BODY_BYTES:
                return await self._relay.whole(upstream, replica, call, content_type)
            return await self._relay.stream(request, upstream, replica, call, is_sse, content_type)
        finally:
            upstream.close()  # an incomplete answer closes its connection; a complete one is pooled
