"""A request body sent to the replica while it still arrives from the client (audio uploads).

A JSON body is read whole before it is forwarded: it names its model, it is small, and a retry on
another replica sends it again. An audio upload is up to 25 MiB and names its model in a form field
at its start; holding all of it before forwarding would cost that much memory per upload and the
upload's time before the replica may start. So its door reads the head (until the model field),
and the rest goes to the replica as it comes: ``StreamedBody`` is that head, with the client's
stream behind it. The gateway holds at most aiohttp's read buffer, a chunk, and the connection's
write buffer (the replica's reading paces the client's sending).

The body's bounds hold on the way: past the door's limit the request is cut (413; the replica's
request is aborted), and the client has ``body_timeout_s`` in all of waiting for its bytes (time
the replica or the queue takes is not the client's; 408). A client that stops sending mid-upload
(its connection lost, the body short of its Content-Length or badly chunked) ends the request:
400, and the replica's request is aborted.

Retries: the rest of the body is read once, so a streamed body can go to a second replica only if
no byte of it went to the first: a connect that failed (refused, timed out). Once bytes went, a
failure (the connection lost) is a 502; a replica's own 502/503 answer is relayed as it is
(``Proxy._try``). A body that came whole with its head is plain bytes and retried as any.
The replica's ``first_byte_timeout_s`` counts from the start of the upload, not its end.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import StreamReader, web
from aiohttp.http import HttpProcessingError

from controller.gateway import errors
from controller.gateway.forward.upstream import Answer, ConnectFailed, ConnectionLost, Pool

log = logging.getLogger(__name__)

# What the client's stream raises when its body ends before it is complete (connection lost, short
# of its Content-Length, bad chunked coding).
_CUT_SHORT = (ConnectionError, HttpProcessingError, web.RequestPayloadError)


class BodyReader:
    """The client's body, chunk by chunk as it arrives, under ``limit`` bytes in all (413 past it)
    and ``timeout_s`` seconds of waiting for it in all (408); an async iterator of its chunks."""

    __slots__ = ("_content", "_left_s", "_limit", "_size", "_timeout_s")

    def __init__(self, content: StreamReader, *, limit: int, timeout_s: float) -> None:
        self._content = content
        self._limit = limit
        self._timeout_s = timeout_s
        self._left_s = timeout_s  # of waiting for the client
        self._size = 0  # bytes read so far

    async def next(self) -> bytes:
        """The next bytes of the body (all that is buffered), or b"" at its end; raises Refusal."""
        content = self._content
        try:
            chunk = content.read_nowait()  # what is here already: no timer
            if not chunk and not content.is_eof():
                chunk = await self._wait()
        except _CUT_SHORT as exc:
            log.info("a request body ended before it was complete: %s: %s", type(exc).__name__, exc)
            raise errors.bad_request("The request body ended before it was complete.") from None
        self._size += len(chunk)
        if self._size > self._limit:
            raise errors.too_large(self._limit)
        return chunk

    async def _wait(self) -> bytes:
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(self._left_s):
                return await self._content.readany()
        except TimeoutError:
            raise errors.request_timeout(
                f"The request body did not arrive within {self._timeout_s:g} seconds."
            ) from None
        finally:
            self._left_s -= loop.time() - began

    def __aiter__(self) -> BodyReader:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.next()
        if not chunk:
            raise StopAsyncIteration
        return chunk


class StreamedBody(bytes):
    """A body still arriving: these bytes are its head (read to route it), ``rest`` its remainder
    as the client sends it; ``length`` its size in all if the client said (else None).

    A ``bytes`` so that the pipeline and the proxy carry it as any body (its length is what the
    gateway holds of it: the admission queue's bytes); ``Proxy`` sends it with ``post``.
    """

    rest: BodyReader
    length: int | None
    sent: bool  # some of it went to a replica: it cannot be sent again

    def __new__(cls, head: bytes | bytearray, rest: BodyReader, length: int | None) -> StreamedBody:
        body = super().__new__(cls, head)
        body.rest = rest
        body.length = length
        body.sent = False
        return body


def stream_length(request: web.Request) -> int | None:
    """The length to announce to the replica: the client's Content-Length, unless the body comes
    encoded (aiohttp decodes it: its length is not the one announced) or without one (None:
    chunked)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return request.content_length if encoding == "identity" else None


async def post(
    pool: Pool, base_url: str, path: str, headers: list[tuple[str, str]], body: StreamedBody
) -> Answer:
    """Send ``body`` to the replica at ``base_url``; return its answer once its headers are in.

    Raises what ``Pool.post_stream`` raises (ConnectFailed: nothing was sent, another replica may
    take it), but a lost connection once bytes went is a Refusal (502): the body cannot be sent
    again. So is a second try after any bytes went.
    """
    if body.sent:
        raise _gone()
    body.sent = True
    headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"]  # the body goes decoded
    try:
        return await pool.post_stream(base_url, path, headers, body, body.rest, body.length)
    except ConnectFailed:
        body.sent = False  # refused, timed out: no byte went
        raise
    except ConnectionLost as exc:
        log.warning("replica %s lost a streamed request body: %s", base_url, exc)
        raise _gone() from exc


def _gone() -> errors.Refusal:
    return errors.upstream_failed(
        "The model server failed after part of the request body was sent to it; the body cannot be "
        "sent again. Retry the request."
    )
