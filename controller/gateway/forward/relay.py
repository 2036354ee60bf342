"""A replica's answer back to the client, byte for byte as it arrives, and what it counts.

After the first byte there is no retry (``proxy`` retries before it): a failing upstream ends the
stream with an SSE error event (event streams) or a cut connection (other bodies, so the client
sees a truncated body as an error), and a replica that goes silent past ``read_timeout_s`` is cut
by the watchdog. Streams of APIs whose engines leave out what SDKs need are mended on the way
(``mend``). Usage is read from the last KiB of a body (``_Tail``), and a client that hangs up right
after a stream's last event was served (``_settle_left``), tokens included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from aiohttp import web

from controller.endpoints.table import VLLM, Replica
from controller.gateway import errors
from controller.gateway.call import EVENT_STREAM, JSON, REPLICA_HEADER, Call, Loading, error_message
from controller.gateway.errors import ANTHROPIC, OPENAI
from controller.gateway.forward import mend, reasoning
from controller.gateway.forward.deadlines import StreamDeadline, Watchdog
from controller.gateway.forward.events import EventTooLarge
from controller.gateway.forward.headers import response_headers
from controller.gateway.forward.upstream import (
    Answer,
    AnswerTooLarge,
    ClientStalled,
    UpstreamError,
)
from controller.gateway.forward.usage import UsageStrip
from controller.gateway.telemetry.metrics import STREAM_ENDS, GatewayMetrics, usage_tokens

if TYPE_CHECKING:
    from controller.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Answers of known length up to this size are read whole and sent in one write: the common JSON
# completion costs fewer system calls, and one that breaks off becomes a clean 502. Larger ones stream.
WHOLE_BODY_BYTES = 1024 * 1024
# Token counts above this in a usage object are not counts (a replica's garbage): not counted.
_MAX_TOKENS = 1 << 40


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


class Relay:
    """Relays answers for ``Proxy``: ``stream`` (chunk by chunk), ``whole`` (a small body of known
    length, in one write), ``loaded`` (into a loading stream already started)."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, watchdog: Watchdog) -> None:
        self._settings = settings
        self._metrics = metrics
        self._watchdog = watchdog

    async def stream(
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
        settings = self._settings
        watch = StreamDeadline(
            upstream,
            request.transport,
            read_timeout_s=settings.read_timeout_s,
            write_timeout_s=settings.write_timeout_s,
        )
        self._watchdog.add(watch)
        try:
            return await self._copy(request, resp, upstream, replica, call, watch, is_sse, tail)
        finally:
            self._watchdog.discard(watch)

    async def _copy(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        upstream: Answer,
        replica: Replica,
        call: Call,
        watch: StreamDeadline,
        is_sse: bool,
        tail: _Tail | None,
    ) -> web.StreamResponse:
        """``stream``'s loop: each chunk read (within ``read_timeout_s``), mended, written (within
        ``write_timeout_s``), then the end. A failure ends the response (``_end_broken``)."""
        loop = asyncio.get_running_loop()
        chunk = b""
        translated = call.translation is not None  # its events are another API's: the translation's
        mending = (
            mend.for_stream(call.api, call.model)
            if is_sse and upstream.status == 200 and not translated
            else None
        )
        if call.hide_usage and is_sse:  # the usage chunk the client did not ask for goes to the tail only
            mending = UsageStrip(tail)
        if is_sse and upstream.status == 200 and thinks_as_vllm(call):  # reasoning_content beside it
            alias = reasoning.ReasoningAlias()
            mending = alias if mending is None else reasoning.Chain(mending, alias)
        try:
            while True:
                watch.reading_since = loop.time()
                try:
                    chunk = await upstream.next_chunk()
                    watch.reading_since = None
                    if not chunk:  # the end: what a mend still holds goes out, then nothing
                        chunk, mending = (mending.flush() if mending is not None else b""), None
                        if not chunk:
                            break
                    elif mending is not None:
                        chunk = mending.feed(chunk)
                        if not chunk:
                            continue  # the end of an event is still to come
                    watch.writing_since = loop.time()
                    await resp.write(chunk)
                    watch.writing_since = None
                except ConnectionError:  # aiohttp's ClientConnectionResetError is one
                    log.debug("client left %s mid-answer; closing replica %s", request.path, replica.id)
                    return resp
                except (UpstreamError, EventTooLarge) as exc:  # the replica failed, or passed a cap
                    cut = is_sse and not ends_event(chunk)
                    await self._fail(request, resp, replica, call, watch, exc, is_sse=is_sse, cut=cut)
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
        try:
            watch.writing_since = loop.time()
            await resp.write_eof()
        except ConnectionError:
            log.debug("client left %s at the end of the answer", request.path)
        except (UpstreamError, EventTooLarge) as exc:  # a translation's last words passed a cap
            await self._fail(request, resp, replica, call, watch, exc, is_sse=is_sse)
            return resp
        except asyncio.CancelledError:
            if watch.stalled:  # the client read nothing for write_timeout_s: not served
                raise
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

    async def whole(
        self,
        upstream: Answer,
        replica: Replica,
        call: Call,
        content_type: str,
        *,
        limit: int = WHOLE_BODY_BYTES,
    ) -> web.Response:
        """A body read whole (at most ``limit`` bytes), answered in one write; raises ``Refusal``
        (502) if it broke or passed ``limit``. Small bodies of known length come here, and those to
        be translated."""
        try:
            if upstream.complete:  # the whole body came with the headers: nothing to wait for
                body = await upstream.read(limit)
            else:
                async with asyncio.timeout(self._settings.read_timeout_s):
                    body = await upstream.read(limit)
        except AnswerTooLarge:
            log.warning("replica %s answered more than %d bytes to be read whole", replica.id, limit)
            raise errors.upstream_failed(
                f"The model server's answer is larger than the gateway's limit of {limit} bytes."
            ) from None
        except (UpstreamError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("replica %s failed mid-answer: %s", replica.id, reason)
            raise errors.upstream_failed("The model server failed mid-answer.") from exc
        headers = response_headers(upstream.headers)
        headers.append((REPLICA_HEADER, replica.id))
        call.first_byte_s = time.monotonic() - call.started
        if content_type == JSON:
            if upstream.status == 200 and thinks_as_vllm(call):
                body = reasoning.alias_body(body)
            self._count_tokens(call, body[-_Tail.KEEP :])
        return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)

    async def loaded(
        self, request: web.Request, upstream: Answer, replica: Replica, call: Call, loading: Loading
    ) -> web.StreamResponse:
        """The replica's answer into a loading stream: its events, or its error as an SSE event."""
        started = loading.response
        assert started is not None
        content_type = upstream.content_type
        if upstream.status == 200 and content_type == EVENT_STREAM:
            return await self.stream(request, upstream, replica, call, True, content_type, started)
        if upstream.status == 200:
            message = f"The model server answered {content_type or 'a body'}, not an event stream."
        else:
            try:
                async with asyncio.timeout(self._settings.read_timeout_s):
                    length = upstream.content_length
                    small = length is not None and length <= WHOLE_BODY_BYTES
                    body = await upstream.read(WHOLE_BODY_BYTES) if small else await upstream.next_chunk()
            except (UpstreamError, TimeoutError):
                body = b""
            details = error_message(body) or "no details"
            message = f"The model server answered HTTP {upstream.status}: {details}"
        log.warning("replica %s answered a held stream: %s", replica.id, message)
        return await loading.fail(errors.sse_error_event(message, loading.api))

    def _count_tokens(self, call: Call, tail: bytes) -> None:
        usage = _usage(tail)
        if usage is None:
            return
        if call.api == ANTHROPIC and call.stream:  # Messages streams: prompt tokens come first
            head = _usage(call.head)
            usage = (max(usage[0], head[0]) if head else usage[0], usage[1])
        self.count(call, usage)

    def count(self, call: Call, usage: tuple[int, int]) -> None:
        """Count ``usage`` (prompt, completion) as ``call``'s tokens: the call, the metrics, its key."""
        call.tokens = usage
        self._metrics.tokens(call.model, call.api, *usage)
        if call.user is not None:
            call.user.tokens(*usage)

    async def _fail(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        replica: Replica,
        call: Call,
        watch: StreamDeadline,
        exc: Exception,
        *,
        is_sse: bool,
        cut: bool = False,
    ) -> None:
        """``_end_broken``, its writes within ``write_timeout_s`` (a read deadline that fired took
        ``watch`` out of the watchdog: it goes back in)."""
        if isinstance(exc, ClientStalled):  # nobody to tell: its connection is gone
            log.debug("client stalled on %s; replica %s closed", request.path, replica.id)
            return
        watch.reading_since = None
        watch.writing_since = asyncio.get_running_loop().time()
        self._watchdog.add(watch)
        await self._end_broken(request, resp, replica, exc, is_sse=is_sse, api=call.api, cut=cut)

    async def _end_broken(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        replica: Replica,
        exc: BaseException,
        *,
        is_sse: bool,
        api: str = OPENAI,
        cut: bool = False,
    ) -> None:
        """End a response whose upstream failed after the first byte, without hanging the client.
        ``cut``: the replica stopped inside an event; a blank line ends that one first, so the
        error event is an event of its own (a translation skips the broken one and says the error;
        glued to it, the error was lost in the broken event's JSON)."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("replica %s failed mid-answer to %s: %s", replica.id, request.path, reason)
        if not is_sse:
            # The client must see a truncated body as an error, not as a short complete one.
            resp.force_close()
            if request.transport is not None:
                request.transport.close()
            return
        try:
            message = "The model server failed mid-stream."
            if isinstance(exc, AnswerTooLarge | EventTooLarge):
                message = f"The model server's answer passed a limit of the gateway: {exc}."
            await resp.write((b"\n\n" if cut else b"") + errors.sse_error_event(message, api))
            await resp.write_eof()
        except ConnectionError:
            log.debug("client left %s before the error event", request.path)


def ends_event(written: bytes) -> bool:
    """True when the bytes written last end an SSE event (or none were written)."""
    return not written or written.endswith((b"\n\n", b"\n\r\n"))


def thinks_as_vllm(call: Call) -> bool:
    """An OpenAI answer of a vLLM model: its thinking is named ``reasoning`` (``forward.reasoning``)."""
    return call.api == OPENAI and call.entry.engine == VLLM and call.translation is None


def _usage(data: bytes) -> tuple[int, int] | None:
    """``usage_tokens`` of a replica's bytes, None for counts that are no counts (garbage)."""
    try:
        usage = usage_tokens(data)
    except ValueError:  # more digits than int() takes
        return None
    if usage is None or not (usage[0] < _MAX_TOKENS and usage[1] < _MAX_TOKENS):
        return None
    return usage
