"""The gateway's HTTP/1.1 client to replicas (controller/gateway/forward/upstream.py) against raw TCP servers.

Each server here is an asyncio stream server that answers with the exact bytes a test writes, so the
framings (length, chunked, end of connection), keep-alive, broken connections and malformed answers
are the ones real servers send, not what another HTTP library would produce.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from controller.gateway.forward.upstream import (
    HIGH_WATER,
    BadAnswer,
    ConnectFailed,
    ConnectionLost,
    Pool,
    ReadTimeout,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\n\r\n{}"
CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one POST (head, body) as the client sent it; (b"", b"") at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


class Server:
    """A TCP server on 127.0.0.1 running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()  # set whenever a handler saw its connection end
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()
            self.closed.set()


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listening.close()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool(connect_timeout_s=2.0, keepalive_s=4.0)
    yield p
    p.close()


def answering(*answers: bytes) -> Handler:
    """A keep-alive server that answers each request on a connection with the next of ``answers``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            head, _ = await read_request(reader)
            if not head:
                return
            writer.write(answer)
            await writer.drain()
        await reader.read()  # keep the connection until the client closes it

    return handle


async def test_request_bytes_and_a_length_framed_answer(pool: Pool) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)
        await reader.read()

    async with serving(handle) as server:
        headers = [("Content-Type", "application/json"), ("X-Note", "caf\udcc3\udca9")]  # raw UTF-8 bytes
        answer = await pool.post(server.url, "/v1/chat/completions?x=1", headers, b'{"a":1}')
        assert (answer.status, answer.reason) == (200, "OK")
        assert answer.content_type == "application/json"
        assert answer.content_length == 2
        assert await answer.read() == b"{}"
    head, body = seen[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.url.rsplit(':', 1)[1]}".encode() in lines
    assert b"X-Note: caf\xc3\xa9" in lines  # the client's bytes, as aiohttp's server received them
    assert b"Content-Length: 7" in lines
    assert body == b'{"a":1}'


async def test_keep_alive_reuses_one_connection(pool: Pool) -> None:
    async with serving(answering(OK, OK, OK)) as server:
        for _ in range(3):
            answer = await pool.post(server.url, "/v1/x", [], b"{}")
            assert await answer.read() == b"{}"
        assert server.connections == 1
        assert pool.open_connections() == 1


async def test_chunked_answer_arrives_piece_by_piece(pool: Pool) -> None:
    go_on = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"7\r\ndata: 1\r\n"
        )
        await writer.drain()
        await go_on.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await reader.read()

    async with serving(handle) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        assert answer.content_type == "text/event-stream"
        assert answer.content_length is None
        assert await answer.next_chunk() == b"data: 1"  # before the rest was even written
        go_on.set()
        assert await answer.next_chunk() == b"data: 2"
        assert await answer.next_chunk() == b""
        assert answer.complete
    assert pool.open_connections() == 1  # chunked framing ended the answer: the connection is pooled


async def test_answer_framed_by_the_end_of_the_connection(pool: Pool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async with serving(handle) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        assert await answer.read() == b"all of it"
    assert pool.open_connections() == 0


async def test_an_answer_that_says_connection_close_is_not_pooled(pool: Pool) -> None:
    async with serving(answering(CLOSING)) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        assert await answer.read() == b"{}"
        assert pool.open_connections() == 0
        await asyncio.wait_for(server.closed.wait(), 2)  # and the replica saw it close


async def test_a_pooled_connection_the_replica_closed_is_sent_again_on_a_new_one(pool: Pool) -> None:
    # Like llama-server after a streamed answer: it closes without saying so in a header.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        # close after the answer, as a server at its idle timeout does, just as the next request comes

    async with serving(handle) as server:
        assert await (await pool.post(server.url, "/v1/x", [], b"{}")).read() == b"{}"
        # The close may or may not have arrived by now; either way the next request succeeds.
        assert await (await pool.post(server.url, "/v1/x", [], b"{}")).read() == b"{}"
        assert server.connections == 2


async def test_stale_pooled_connection_is_retried_once(pool: Pool) -> None:
    # The second request on the connection meets the replica closing it (its idle timeout, say):
    # dropped without a byte of answer, so it is sent again, on a new connection.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        writer.transport.abort()

    async with serving(handle) as server:
        assert await (await pool.post(server.url, "/v1/x", [], b"{}")).read() == b"{}"
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        assert await answer.read() == b"{}"
        assert server.connections == 2


async def test_refused_connection_is_connect_failed(pool: Pool) -> None:
    async with serving(answering(OK)) as server:
        url = server.url
    with pytest.raises(ConnectFailed):
        await pool.post(url, "/v1/x", [], b"{}")


async def test_reset_before_the_status_line_is_connection_lost_before_answer(pool: Pool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async with serving(handle) as server:
        with pytest.raises(ConnectionLost) as caught:
            await pool.post(server.url, "/v1/x", [], b"{}")
    assert caught.value.before_answer and not caught.value.reused


async def test_broken_mid_body_raises_from_the_read(pool: Pool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    async with serving(handle) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        assert await answer.next_chunk() == b"only this"
        with pytest.raises(ConnectionLost) as caught:
            await answer.next_chunk()
    assert not caught.value.before_answer
    assert pool.open_connections() == 0


async def test_not_http_is_bad_answer(pool: Pool) -> None:
    async with serving(answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as server:
        with pytest.raises(BadAnswer):
            await pool.post(server.url, "/v1/x", [], b"{}")
    assert pool.open_connections() == 0


async def test_interim_answers_are_skipped(pool: Pool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    async with serving(answering(interim + OK, OK)) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        assert answer.status == 200
        assert [k for k, _ in answer.headers] == ["Content-Type", "Content-Length"]
        assert await answer.read() == b"{}"
        assert await (await pool.post(server.url, "/v1/x", [], b"{}")).read() == b"{}"  # still in step


async def test_cancel_while_waiting_closes_the_connection(pool: Pool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers; returns when the client closes

    async with serving(handle) as server:
        task = asyncio.create_task(pool.post(server.url, "/v1/x", [], b"{}"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.closed.wait(), 2)  # the replica saw the client leave
    assert pool.open_connections() == 0


async def test_close_of_an_unfinished_answer_closes_its_connection(pool: Pool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await reader.read()

    async with serving(handle) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        assert await answer.next_chunk() == b"abc"
        answer.close()
        await asyncio.wait_for(server.closed.wait(), 2)
    assert pool.open_connections() == 0


async def test_fail_wakes_the_waiting_read_with_its_error(pool: Pool) -> None:
    async with serving(answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        read = asyncio.create_task(answer.next_chunk())
        await asyncio.sleep(0.05)
        answer.fail(ReadTimeout("no data from the replica for 1s"))
        with pytest.raises(ReadTimeout):
            await read
        await asyncio.wait_for(server.closed.wait(), 2)


async def test_a_slow_reader_pauses_the_replica(pool: Pool) -> None:
    total = 4 * 1024 * 1024
    written = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        piece = b"x" * 65536
        while written < total:
            writer.write(piece)
            await writer.drain()
            written += len(piece)
        await reader.read()

    async with serving(handle) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        await asyncio.sleep(0.3)  # nobody reads: the replica must stall well before the end
        assert answer._size <= HIGH_WATER + 65536 * 4
        assert written < total
        got = 0
        while chunk := await answer.next_chunk():
            got += len(chunk)
        assert got == total
        assert pool.open_connections() == 1  # complete: back in the pool, reading again


async def test_read_whole_is_not_paused_by_flow_control(pool: Pool) -> None:
    body = b"y" * (4 * HIGH_WATER)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 65536):
            writer.write(body[i : i + 65536])
            await writer.drain()
        await reader.read()

    async with serving(handle) as server:
        answer = await pool.post(server.url, "/v1/x", [], b"{}")
        await asyncio.sleep(0.2)  # unread meanwhile: paused above the high water mark
        assert await asyncio.wait_for(answer.read(), 5) == body


async def test_idle_connections_are_closed_after_keepalive() -> None:
    pool = Pool(connect_timeout_s=2.0, keepalive_s=0.1)
    try:
        async with serving(answering(OK)) as server:
            assert await (await pool.post(server.url, "/v1/x", [], b"{}")).read() == b"{}"
            assert pool.open_connections() == 1
            await asyncio.wait_for(server.closed.wait(), 2)  # our sweep closed it, not the server
            assert pool.open_connections() == 0
            assert pool._sweeper is None  # nothing idle: no timer left
    finally:
        pool.close()


async def test_not_an_http_url_is_connect_failed(pool: Pool) -> None:
    with pytest.raises(ConnectFailed, match="not an http:// replica URL"):
        await pool.post("https://example.invalid", "/v1/x", [], b"{}")


async def test_a_replica_name_is_resolved_once_per_ttl(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    asked: list[object] = []
    resolve = loop.getaddrinfo

    async def counting(host: object, *args: object, **kwargs: object) -> object:
        asked.append(host)
        return await resolve(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    async with serving(answering(CLOSING)) as server:
        url = server.url.replace("127.0.0.1", "localhost")
        for _ in range(3):  # three new connections (each answer closes), one question to the resolver
            assert await (await pool.post(url, "/v1/x", [], b"{}")).read() == b"{}"
    assert asked == ["localhost"]
    assert server.connections == 3


async def test_a_name_that_does_not_resolve_is_connect_failed(pool: Pool) -> None:
    with pytest.raises(ConnectFailed, match="gaierror"):
        await pool.post("http://no-such-replica.invalid:8080", "/v1/x", [], b"{}")


async def test_a_failed_connect_forgets_the_address(pool: Pool) -> None:
    async with serving(answering(CLOSING)) as server:
        url = server.url.replace("127.0.0.1", "localhost")
        assert await (await pool.post(url, "/v1/x", [], b"{}")).read() == b"{}"
        assert "localhost" in pool._addresses
    with pytest.raises(ConnectFailed):  # the server is gone: refused
        await pool.post(url, "/v1/x", [], b"{}")
    assert "localhost" not in pool._addresses
