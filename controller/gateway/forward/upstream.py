"""A small HTTP/1.1 client for the gateway's requests to replicas: one POST, its answer, a pool.

Why not aiohttp's client: it was about a fifth of the gateway's CPU per request (request and response
objects, cookie and redirect handling, a timer per request, its connector's bookkeeping), for
features a proxy to replicas on a private network never uses. Here a request is one write of head
and body on a pooled connection, the answer is parsed by llhttp (``httptools``, as uvicorn does),
and the status line and headers wake the waiting request once.

What it does, and no more:
- POST with a body of known length; the answer's body framed by Content-Length, chunked transfer
  coding (decoded) or the end of the connection. ``post_stream``: a body still arriving (audio
  uploads), written as it comes and as fast as the replica reads it, on a connection of its own.
- Names are resolved at most every ``DNS_TTL_S`` (replicas are container names: every new connection,
  one per stream with llama-server, would otherwise ask the resolver in a thread); a failed connect
  forgets them.
- Keep-alive: a connection whose answer completed and that the replica did not ask to close goes back to
  an idle list per replica (newest first), for at most ``keepalive_s``. The replica closing an idle
  connection removes it at once.
- Flow control: a client that reads slower than the replica writes pauses reading from the replica
  (``pause_reading``) above ``HIGH_WATER`` bytes buffered, so memory stays bounded.
- Errors, each saying whether a retry is safe: ``ConnectFailed`` (nothing was sent),
  ``ConnectionLost`` (``reused`` and ``before_answer`` tell whether the replica can have seen the
  request), ``BadAnswer`` (not HTTP), and whatever ``Answer.fail`` is given (the gateway's read
  deadline). Cancelling a waiting task closes its connection: the replica sees the client leave.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

# aiohttp's server decodes the client's header bytes as UTF-8 with surrogateescape: this gives them back.
_WIRE = ("utf-8", "surrogateescape")
# How long a replica's resolved address is used before asking the resolver again (as aiohttp's default).
DNS_TTL_S = 10.0
# Bytes of answer body buffered for a slow client before the replica's connection stops being read.
HIGH_WATER = 256 * 1024
# The most of an answer ``Answer.read`` holds (answers to be translated are read whole: Ollama's
# non-streamed ones, embeddings; 2048 embeddings of 1024 dimensions are about 40 MiB of JSON).
MAX_WHOLE_ANSWER_BYTES = 64 * 1024 * 1024
# An answer's status line and headers: llama-server and vLLM send well under 1 KiB; a replica that
# sends more than this is not answering HTTP as they do (``BadAnswer``), and must not fill memory.
MAX_HEAD_BYTES = 64 * 1024
# A request body above this is written as two buffers (head, body) instead of one joined copy:
# a 16 MiB prompt is not copied once more while it is sent. Small ones take one write (a syscall).
JOIN_BELOW = 64 * 1024


class UpstreamError(Exception):
    """A request to a replica failed."""


class ConnectFailed(UpstreamError):
    """No connection could be made: the replica never saw the request."""


class ConnectionLost(UpstreamError):
    """The connection closed or broke before the answer was complete."""

    def __init__(self, message: str, *, reused: bool, before_answer: bool) -> None:
        super().__init__(message)
        self.reused = reused  # the connection had served an earlier answer (it came from the pool)
        self.before_answer = before_answer  # not one byte of the answer had arrived


class BadAnswer(UpstreamError):
    """The replica's bytes are not a valid HTTP/1.1 answer."""


class ReadTimeout(UpstreamError, TimeoutError):
    """The replica sent nothing for too long (raised through ``Answer.fail`` by the caller's clock)."""


class AnswerTooLarge(UpstreamError):
    """The replica's answer (or one event of it) passed a cap on what the gateway holds."""


class ClientStalled(UpstreamError):
    """The client stopped reading the answer (raised through ``Answer.fail`` by its write deadline)."""


class Answer:
    """The replica's answer: status and headers at once, the body as it arrives.

    Read it with ``read()`` (whole) or ``next_chunk()`` (b"" at the end), never both. ``close()``
    gives up on it: its connection is closed unless the answer had completed and went back to the
    pool. ``fail(exc)`` makes the waiting read raise ``exc`` and closes the connection.
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_error",
        "_head_bytes",
        "_size",
        "_waiter",
        "_whole",
        "complete",
        "content_length",
        "content_type",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.content_type = ""  # the media type, lower case, without parameters
        self.content_length: int | None = None
        self.complete = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._whole = False  # read() wants all of it: no pausing
        self._head_bytes = 0  # of the status line and headers, for MAX_HEAD_BYTES

    async def next_chunk(self) -> bytes:
        """Return the next piece of body as it arrived, or b"" once the answer is complete."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            await self._wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        conn = self._conn
        if conn is not None and conn.paused and self._size < HIGH_WATER // 4:
            conn.resume()
        return chunk

    async def read(self, limit: int = MAX_WHOLE_ANSWER_BYTES) -> bytes:
        """Return the whole body (waits for the end of the answer; no flow control on the way).

        Raises AnswerTooLarge once more than ``limit`` bytes came (the connection is closed).
        """
        self._whole = True
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        while not self.complete:
            if self._error is not None:
                raise self._error
            if self._size > limit:
                self.fail(AnswerTooLarge(f"the answer is larger than {limit} bytes"))
                continue
            await self._wait()
        if self._size > limit:  # it came whole with the headers, or the last piece passed it
            raise AnswerTooLarge(f"the answer is larger than {limit} bytes")
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return body

    def fail(self, exc: BaseException) -> None:
        """End the answer with ``exc`` (raised by the read waiting now or next); drop the connection."""
        if self.complete or self._error is not None:
            return
        self._set_error(exc)
        self.close()

    def close(self) -> None:
        """Give up on the answer: an incomplete one closes its connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not self.complete:
            conn.answer = None  # whatever the connection says next is not this answer's business
            conn.abort()

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Called by the connection.
    def _add(self, chunk: bytes) -> bool:
        """Buffer ``chunk``; return True if the buffer is above the high water mark."""
        self._chunks.append(chunk)
        self._size += len(chunk)
        self._wake()
        return self._size > HIGH_WATER and not self._whole

    def _finish(self) -> None:
        self.complete = True
        self._conn = None
        self._wake()

    def _set_error(self, exc: BaseException) -> None:
        if self._error is None:  # the first cause is the one to tell
            self._error = exc
        self._wake()


class _Connection(asyncio.Protocol):
    """One TCP connection to a replica; parses answers with llhttp and feeds them to ``Answer``s."""

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.answer: Answer | None = None  # the answer being received, if any
        self._headers_done: asyncio.Future[None] | None = None
        self._received = False  # some byte of the current answer arrived
        self._keep_alive = True  # the replica did not say Connection: close
        self._chunked = False  # the answer's body is chunked (else: length, or the end of the connection)
        self._interim = False  # a 1xx answer is being parsed: the real one follows
        self.uses = 0  # answers completed on this connection
        self.idle_since = 0.0
        self.paused = False
        self.closed = False
        self._writable: asyncio.Future[None] | None = None  # set while the transport's buffer is full

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCP transport has the methods of
        # asyncio.Transport without being a subclass of it.
        self.transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.answer is None:
            # Bytes nobody asked for (an idle connection): the replica is not speaking HTTP to us.
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._lost(BadAnswer("the replica switched protocols"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised (MAX_HEAD_BYTES), if that was it
            self._lost(cause if isinstance(cause, BadAnswer) else BadAnswer(f"invalid HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._pool._forget(self)
        answer = self.answer
        if answer is None:
            return
        if exc is None and self._headers_done is None and answer.content_length is None and not self._chunked:
            self._message_done(keep=False)  # a body framed by the end of the connection: its end
            return
        reason = f"{type(exc).__name__}: {exc}" if exc else "the replica closed the connection"
        self._lost(ConnectionLost(reason, reused=self.uses > 0, before_answer=not self._received))

    # llhttp callbacks
    def on_status(self, status: bytes) -> None:
        answer = self.answer
        assert answer is not None
        answer._head_bytes += len(status)
        if answer._head_bytes > MAX_HEAD_BYTES:
            raise BadAnswer(f"the answer's status line is longer than {MAX_HEAD_BYTES} bytes")
        answer.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        answer = self.answer
        assert answer is not None
        answer._head_bytes += len(name) + len(value)
        if answer._head_bytes > MAX_HEAD_BYTES:
            raise BadAnswer(f"the answer's headers are larger than {MAX_HEAD_BYTES} bytes")
        key, text = name.decode("latin-1"), value.decode("utf-8", "replace")
        answer.headers.append((key, text))
        lower = key.lower()
        if lower == "content-type":
            answer.content_type = text.partition(";")[0].strip().lower()
        elif lower == "content-length":
            answer.content_length = int(text) if text.isdigit() else None
        elif lower == "transfer-encoding":
            self._chunked = "chunked" in text.lower()

    def on_headers_complete(self) -> None:
        answer = self.answer
        assert answer is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): wait for the real one
            answer.headers.clear()
            answer.content_type, answer.content_length = "", None
            self._interim = True
            return
        answer.status = status
        self._keep_alive = self._parser.should_keep_alive()
        waiter, self._headers_done = self._headers_done, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        if answer is not None and answer._add(body) and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._message_done(keep=self._keep_alive)

    # the pool's side
    def send(self, answer: Answer, data: bytes, body: bytes = b"") -> asyncio.Future[None]:
        """Write one request (``data``, then ``body`` if not joined to it); return a future done
        when the answer's status and headers are in."""
        assert self.transport is not None
        self.answer = answer
        self._received = False
        self._interim = False
        self._chunked = False
        self._keep_alive = True
        self._headers_done = waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        if body:
            self.transport.write(body)
        return waiter

    def write(self, data: bytes) -> None:
        """Write more of the request being sent (``send`` wrote its start); nothing once closed."""
        if self.transport is not None:
            self.transport.write(data)

    async def writable(self) -> None:
        """Return once the replica takes more bytes (the transport's buffer below its high-water
        mark); at once if it does now."""
        waiter = self._writable
        if waiter is not None:
            await asyncio.wait((waiter,))  # cancelled, the waiter stays for the next writer

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Close now, whatever is in flight (a reset for the replica: stop generating)."""
        self.closed = True
        self._pool._forget(self)
        if self.transport is not None:
            self.transport.abort()

    def _message_done(self, *, keep: bool) -> None:
        answer, self.answer = self.answer, None
        self.uses += 1
        if self.paused:
            self.resume()
        if answer is not None:
            answer._finish()
        if keep and not self.closed:
            self._pool._release(self)
        elif not self.closed:
            self.closed = True
            self._pool._forget(self)
            if self.transport is not None:
                self.transport.close()

    def _lost(self, exc: UpstreamError) -> None:
        answer, self.answer = self.answer, None
        waiter, self._headers_done = self._headers_done, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        elif answer is not None:
            answer._set_error(exc)
        if not self.closed:
            self.abort()


class _OneRequest(_Connection):
    """A connection for one request (a streamed body's): closed after its answer, never pooled."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._keep_alive = False


class Pool:
    """Connections to replicas, kept alive between answers; ``post`` is the one way to use it."""

    def __init__(self, *, connect_timeout_s: float, keepalive_s: float, max_idle: int = 1024) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._all: set[_Connection] = set()
        self._heads: dict[tuple[str, str], bytes] = {}  # (base url, path) -> "POST ... Host: ..."
        self._keys: dict[str, tuple[str, int]] = {}
        self._addresses: dict[str, tuple[list[str], float]] = {}  # host -> (IP addresses, good until)
        self._sweeper: asyncio.TimerHandle | None = None

    async def post(self, base_url: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """Send POST ``path`` to the replica at ``base_url``; return its answer once headers are in.

        A pooled connection that turns out closed before any byte of the answer is retried once on a
        new connection: the replica had closed it (its idle timeout; llama-server after a stream).
        """
        key = self._key(base_url)
        head = self._request_head(base_url, path, headers, body)
        data, rest = (head, body) if len(body) >= JOIN_BELOW else (head + body, b"")
        conn = self._take_idle(key)
        if conn is not None:  # ``_exchange`` inlined: the common path, one coroutine frame less
            answer = Answer(conn)
            try:
                await conn.send(answer, data, rest)
                return answer
            except ConnectionLost as exc:
                conn.abort()
                if not (exc.reused and exc.before_answer):
                    raise
            except BaseException:
                conn.abort()  # as in ``_exchange``
                raise
        conn = await self._connect(key)
        return await self._exchange(conn, data, rest)

    async def post_stream(
        self,
        base_url: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        rest: AsyncIterator[bytes],
        length: int | None,
    ) -> Answer:
        """Send POST ``path`` with a body still arriving: ``body``, then ``rest``'s chunks as they
        come (``length`` bytes in all; None: chunked transfer coding); return the answer once its
        status and headers are in.

        On a new connection of its own, closed after the answer: a pooled one may turn out closed once
        the body has started (and a streamed body cannot be sent twice), and one whose body was cut
        short must carry no other request. Each chunk is written once the replica takes more (the
        transport's high-water mark), so what the gateway holds stays bounded; a replica that
        answers before the body's end gets no more of it. Raises ConnectFailed (nothing was sent),
        ConnectionLost or BadAnswer (some was), or what ``rest`` raises; a failure once connected
        closes the connection (the replica sees its request end unfinished).
        """
        conn = await self._connect(self._key(base_url), _OneRequest)
        chunked = length is None
        framing = (
            b"Transfer-Encoding: chunked\r\n\r\n"
            if length is None
            else b"Content-Length: %d\r\n\r\n" % length
        )
        # The cached request line and headers, framed for a stream (a hot-path helper left as it is).
        head = self._request_head(base_url, path, headers, b"").removesuffix(b"Content-Length: 0\r\n\r\n")
        answer = Answer(conn)
        answered = conn.send(answer, head + framing, _framed(body, chunked))
        # The rest goes in a task of its own: waiting for the client must not keep us from seeing the
        # replica answer early or go away.
        pump = asyncio.create_task(_send_rest(conn, rest, chunked))
        try:
            await asyncio.wait((pump, answered), return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()  # raises what the client's body raised
            else:  # the replica answered (or the connection ended) before the body's end
                pump.cancel()
                await asyncio.wait((pump,))
                _settle(pump)
            await answered
        except BaseException:
            _settle(pump, answered)
            conn.abort()
            raise
        return answer

    def close(self) -> None:
        """Close every connection (at shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        self._idle_count = 0

    def open_connections(self) -> int:
        return len(self._all)

    async def _exchange(self, conn: _Connection, data: bytes, body: bytes = b"") -> Answer:
        answer = Answer(conn)
        headers_done = conn.send(answer, data, body)
        try:
            await headers_done
        except BaseException:
            conn.abort()  # cancelled (client left, deadline) or failed: the replica must see it
            raise
        return answer

    async def _connect(self, key: tuple[str, int], kind: type[_Connection] = _Connection) -> _Connection:
        host = key[0]
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                conn = await self._connect_any(key, await self._addresses_of(host), kind)
        except TimeoutError as exc:
            self._addresses.pop(host, None)
            raise ConnectFailed(f"no connection within {self._connect_timeout_s:g}s") from exc
        except OSError as exc:  # refused, unreachable, or the name does not resolve (gaierror)
            self._addresses.pop(host, None)
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        self._all.add(conn)
        return conn

    async def _connect_any(
        self, key: tuple[str, int], addresses: list[str], kind: type[_Connection]
    ) -> _Connection:
        """Connect to the first of ``addresses`` that accepts; raise the last one's error."""
        loop = asyncio.get_running_loop()
        for address in addresses[:-1]:
            try:
                _, conn = await loop.create_connection(lambda: kind(self, key), address, key[1])
                return conn
            except OSError:
                continue
        _, conn = await loop.create_connection(lambda: kind(self, key), addresses[-1], key[1])
        return conn

    async def _addresses_of(self, host: str) -> list[str]:
        """The IP addresses to connect to for ``host``, resolved at most every ``DNS_TTL_S``.

        Replicas are container names on the Docker network: without a cache every new connection
        (every stream) would ask the resolver, in a thread. A failed connect forgets the addresses.
        """
        now = time.monotonic()
        cached = self._addresses.get(host)
        if cached is not None and cached[1] > now:
            return cached[0]
        if _is_ip(host):
            addresses, expires = [host], math.inf
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            expires = now + DNS_TTL_S
        if len(self._addresses) >= 1024:
            self._addresses.clear()
        self._addresses[host] = (addresses, expires)
        return addresses

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_ok = time.monotonic() - self._keepalive_s
        while idle:
            conn = idle.pop()  # newest first: the likeliest to be open
            self._idle_count -= 1
            if not conn.closed and conn.idle_since >= oldest_ok:
                return conn
            conn.abort()
        return None

    def _release(self, conn: _Connection) -> None:
        if self._idle_count >= self._max_idle:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive_s, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle longer than ``keepalive_s`` (one timer for the pool, not each)."""
        self._sweeper = None
        oldest_ok = time.monotonic() - self._keepalive_s
        for idle in self._idle.values():
            stale = [conn for conn in idle if conn.idle_since < oldest_ok]
            for conn in stale:
                conn.abort()  # removes it from ``idle``
        if self._idle_count:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive_s, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            self._idle_count -= 1

    def _key(self, base_url: str) -> tuple[str, int]:
        key = self._keys.get(base_url)
        if key is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname:
                raise ConnectFailed(f"not an http:// replica URL: {base_url!r}")
            key = (parts.hostname, parts.port or 80)
            if len(self._keys) >= 1024:
                self._keys.clear()
            self._keys[base_url] = key
        return key

    def _request_head(self, base_url: str, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        head = self._heads.get((base_url, path))
        if head is None:
            host, port = self._key(base_url)
            prefix = urlsplit(base_url).path.rstrip("/")
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            head = f"POST {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\n".encode(*_WIRE)
            if len(self._heads) >= 1024:  # replicas and query strings come and go
                self._heads.clear()
            self._heads[(base_url, path)] = head
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
        return head + f"{lines}Content-Length: {len(body)}\r\n\r\n".encode(*_WIRE)


def _framed(chunk: bytes, chunked: bool) -> bytes:
    """``chunk`` as it goes on the wire: as is, or as one chunk of chunked transfer coding."""
    if not chunked or not chunk:
        return chunk
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


async def _send_rest(conn: _Connection, rest: AsyncIterator[bytes], chunked: bool) -> None:
    """Write ``rest``'s chunks to ``conn`` as the replica takes them, then the end of a chunked body."""
    async for chunk in rest:
        if chunk:  # an empty chunk would end a chunked body
            conn.write(_framed(chunk, chunked))
            await conn.writable()
    if chunked:
        conn.write(b"0\r\n\r\n")


def _settle(*futures: asyncio.Future[None]) -> None:
    """Cancel ``futures``; the failure of one that is done already is not news (nor "never retrieved")."""
    for future in futures:
        if not future.cancel() and not future.cancelled():
            future.exception()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
