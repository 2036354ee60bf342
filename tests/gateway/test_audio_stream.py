"""Audio uploads are streamed to the replica (``doors.audio``, ``forward.upload``), not held whole.

The replica here records when the first bytes of a body reached it, and the client holds back the
rest of its upload until then: a gateway that read the whole body before forwarding never lets the
replica see a byte, and the client's wait fails. Every test runs over real sockets: aiohttp servers
as replicas, the gateway's own app, aiohttp's client sending the body from a generator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, eventually, refused_url, start_closing_server, table_of
from test_metrics import sample, scrape
from test_tasks import AUDIO, BOUNDARY, FORM, form

from controller.endpoints.table import EndpointTable
from controller.gateway.app import BALANCER
from controller.gateway.doors.audio import FIELD_SCAN_BYTES, FormHead

PATH = "/v1/audio/transcriptions"
SEEN_WITHIN_S = 10.0  # liveness bound: how long the client waits for the replica to see its first bytes
FILE = AUDIO * 10  # 1000 KiB


@dataclasses.dataclass
class Upload:
    """One request body as a replica received it."""

    content_type: str
    framing: str  # "length" or "chunked"
    sha256: str = ""
    size: int = 0
    aborted: bool = False  # its connection broke (or its handler was cancelled) before the end


class StreamingReplica:
    """A replica that reads each body as it arrives, marking the moment its first bytes came."""

    def __init__(self, name: str, *, status: int = 200) -> None:
        self.name = name
        self.status = status
        self.uploads: list[Upload] = []
        self.first_bytes = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(PATH, self.transcribe)
        return app

    async def transcribe(self, request: web.Request) -> web.Response:
        framing = "chunked" if request.headers.get("Transfer-Encoding") == "chunked" else "length"
        upload = Upload(request.headers["Content-Type"], framing)
        self.uploads.append(upload)
        digest = hashlib.sha256()
        try:
            async for chunk in request.content.iter_any():
                self.first_bytes.set()
                digest.update(chunk)
                upload.size += len(chunk)
        except (ConnectionError, asyncio.CancelledError, web.RequestPayloadError):
            upload.aborted = True
            raise
        upload.sha256 = digest.hexdigest()
        return web.json_response({"text": f"heard by {self.name}"}, status=self.status)


def body_of(file: bytes = FILE, *, model: str = "whisper") -> bytes:
    return form([("model", model), ("language", "en")], file)


async def held_back(body: bytes, replica: StreamingReplica, *, more: bytes = b"") -> AsyncIterator[bytes]:
    """``body``'s form head and the start of its file, then (once ``replica`` saw bytes) its rest
    in pieces, then ``more``."""
    yield body[:4096]
    await asyncio.wait_for(replica.first_bytes.wait(), SEEN_WITHIN_S)  # read-whole code never gets past
    for at in range(4096, len(body), 64 * 1024):
        yield body[at : at + 64 * 1024]
    if more:
        yield more


async def never_more(body: bytes) -> AsyncIterator[bytes]:
    """``body``, then nothing, ever: the gateway must answer without the rest."""
    yield body
    await asyncio.Event().wait()


async def start(
    aiohttp_server: Any, start_gateway: StartGateway, *replicas: StreamingReplica | str, **settings: Any
) -> TestClient[Any, Any]:
    """The gateway over one vLLM model, ``whisper``, whose replicas are ``replicas`` (or URLs)."""
    urls = [
        r if isinstance(r, str) else str((await aiohttp_server(r.app())).make_url("")).rstrip("/")
        for r in replicas
    ]
    table = table_of(("whisper", (), urls))
    models = tuple(dataclasses.replace(m, engine="vllm") for m in table.models)
    gateway: TestClient[Any, Any] = await start_gateway(EndpointTable(1, models), **settings)
    return gateway


def in_flight(gateway: TestClient[Any, Any], count: int) -> int:
    return sum(gateway.app[BALANCER].in_flight(f"whisper-{i}") for i in range(count))


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_the_replica_gets_the_upload_while_the_client_still_sends_it_byte_for_byte(
    aiohttp_server: Any, start_gateway: StartGateway, framing: str
) -> None:
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica)
    body = body_of()
    headers = {**FORM, "Content-Length": str(len(body))} if framing == "length" else FORM
    resp = await gateway.post(PATH, data=held_back(body, replica), headers=headers)
    assert (resp.status, await resp.json()) == (200, {"text": "heard by one"})
    expected = Upload(FORM["Content-Type"], framing, hashlib.sha256(body).hexdigest(), len(body))
    assert replica.uploads == [expected]  # same bytes, same boundary, framed as the client framed it
    assert in_flight(gateway, 1) == 0


async def test_the_gateway_holds_a_bounded_buffer_of_an_upload_never_the_file(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    """A 20 MiB upload passes through while the memory allocated at once (client, gateway and
    replica together: one process) stays a small part of it; read whole, it was twice the file."""
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica, max_audio_bytes=32 << 20)
    body = body_of(AUDIO * 200)  # 20 MiB
    headers = {**FORM, "Content-Length": str(len(body))}
    tracemalloc.start()
    try:
        resp = await gateway.post(PATH, data=pieces(body), headers=headers)
        assert resp.status == 200
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert replica.uploads[0].sha256 == hashlib.sha256(body).hexdigest()
    assert peak < 4 << 20, f"{peak} bytes allocated at once for a {len(body)}-byte upload"


async def pieces(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at : at + size]


async def test_a_small_upload_that_came_whole_is_forwarded_as_any_body(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica)
    body = body_of(b"RIFF")
    resp = await gateway.post(PATH, data=body, headers=FORM)
    assert resp.status == 200
    assert replica.uploads == [
        Upload(FORM["Content-Type"], "length", hashlib.sha256(body).hexdigest(), len(body))
    ]


async def test_a_content_length_over_the_limit_is_413_before_anything_is_read_or_forwarded(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica, max_audio_bytes=500_000)
    head = body_of()[:4096]
    headers = {**FORM, "Content-Length": "500001"}
    resp = await gateway.post(PATH, data=never_more(head), headers=headers)  # the rest never comes
    assert resp.status == 413
    error = (await resp.json())["error"]
    assert error["code"] == "request_too_large" and "500000 bytes" in error["message"]
    assert replica.uploads == []


async def test_a_chunked_upload_that_passes_the_limit_is_cut_with_413_and_the_replicas_request_aborted(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica, max_audio_bytes=500_000)
    resp = await gateway.post(PATH, data=held_back(body_of(), replica), headers=FORM)  # 1 MB, chunked
    assert resp.status == 413
    error = (await resp.json())["error"]
    assert error["code"] == "request_too_large" and "500000 bytes" in error["message"]
    await eventually(lambda: len(replica.uploads) == 1 and replica.uploads[0].aborted)
    assert replica.uploads[0].size <= 500_000
    await eventually(lambda: in_flight(gateway, 1) == 0)


async def test_a_client_that_leaves_mid_upload_aborts_the_replicas_request_and_frees_its_slot(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica)
    body = body_of()
    headers = {**FORM, "Content-Length": str(len(body))}
    upload = asyncio.create_task(gateway.post(PATH, data=never_more(body[:200_000]), headers=headers))
    await asyncio.wait_for(replica.first_bytes.wait(), SEEN_WITHIN_S)
    assert in_flight(gateway, 1) == 1
    upload.cancel()  # the client hangs up mid-body
    with pytest.raises(asyncio.CancelledError):
        await upload
    await eventually(lambda: len(replica.uploads) == 1 and replica.uploads[0].aborted)
    await eventually(lambda: in_flight(gateway, 1) == 0)
    labels = {"api": "openai", "model": "whisper", "status": "499", "replica": "none"}  # no answer came
    await eventually_sample(gateway, "modelctl_gateway_requests_total", 1, **labels)


async def test_a_body_that_stops_coming_is_408_and_the_replicas_request_aborted(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica, body_timeout_s=0.5)
    body = body_of()
    headers = {**FORM, "Content-Length": str(len(body))}
    resp = await gateway.post(PATH, data=never_more(body[:200_000]), headers=headers)
    assert resp.status == 408
    assert "did not arrive within 0.5 seconds" in (await resp.json())["error"]["message"]
    await eventually(lambda: len(replica.uploads) == 1 and replica.uploads[0].aborted)
    await eventually(lambda: in_flight(gateway, 1) == 0)


async def test_a_refused_connect_is_retried_on_another_replica_with_the_body_intact(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    replica = StreamingReplica("two")
    gateway = await start(aiohttp_server, start_gateway, refused_url(), replica)  # the refused one first
    body = body_of()
    resp = await gateway.post(PATH, data=held_back(body, replica), headers=FORM)
    assert (resp.status, await resp.json()) == (200, {"text": "heard by two"})
    assert [(u.sha256, u.size) for u in replica.uploads] == [(hashlib.sha256(body).hexdigest(), len(body))]
    assert sample(await scrape(gateway), "modelctl_gateway_retries_total", model="whisper") == 1


async def test_a_connection_lost_once_bytes_went_is_502_without_a_retry(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    closing, url = await start_closing_server()  # reads the request's head, hangs up
    other = StreamingReplica("two")
    try:
        gateway = await start(aiohttp_server, start_gateway, url, other)
        body = body_of()
        resp = await gateway.post(PATH, data=never_more(body[:200_000]), headers=FORM)
        assert resp.status == 502
        error = (await resp.json())["error"]
        assert error["code"] == "upstream_error" and "cannot be sent again" in error["message"]
        assert other.uploads == []
        await eventually(lambda: in_flight(gateway, 2) == 0)
    finally:
        closing.close()


async def test_a_replicas_503_to_a_streamed_body_is_relayed_not_retried(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    busy, other = StreamingReplica("one", status=503), StreamingReplica("two")
    gateway = await start(aiohttp_server, start_gateway, busy, other)
    resp = await gateway.post(PATH, data=held_back(body_of(), busy), headers=FORM)
    assert (resp.status, await resp.json()) == (503, {"text": "heard by one"})  # the replica's own answer
    assert other.uploads == []


async def test_a_replica_that_answers_before_the_body_ends_has_its_answer_relayed_and_its_connection_closed(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    """The connection is left mid-body: the gateway closes it rather than pool it for another request."""
    early = EarlyReplica()
    server = await asyncio.start_server(early.serve, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        gateway = await start(aiohttp_server, start_gateway, url, upstream_keepalive_s=60.0)
        body = body_of()
        resp = await gateway.post(PATH, data=held_back_until(body, early.answered), headers=FORM)
        assert (resp.status, await resp.json()) == (401, {"error": {"message": "early"}})
        await asyncio.wait_for(early.closed.wait(), SEEN_WITHIN_S)  # by the gateway, not after 60 s idle
        assert b"POST" not in early.after_answer  # nothing else was sent on it
        await eventually(lambda: in_flight(gateway, 1) == 0)
    finally:
        server.close()


class EarlyReplica:
    """A replica that answers 401 (keep-alive) once it has a request's head, then reads what comes."""

    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.closed = asyncio.Event()
        self.after_answer = b""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        answer = b'{"error": {"message": "early"}}'
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n%b" % (len(answer), answer))
        await writer.drain()
        self.answered.set()
        self.after_answer = await reader.read()  # until the gateway closes the connection
        self.closed.set()
        writer.close()


async def held_back_until(body: bytes, event: asyncio.Event) -> AsyncIterator[bytes]:
    """``body``'s head, then the rest once ``event`` is set."""
    yield body[:4096]
    await asyncio.wait_for(event.wait(), SEEN_WITHIN_S)
    yield body[4096:]


@pytest.mark.parametrize(
    ("fields", "file_first", "message"),
    [
        ([("model", "whisper")], True, "put the model field before the file"),
        ([("language", "en")], False, "put the model field before the file"),
        ([("pad", "x" * 70_000), ("model", "whisper")], False, "No model field in the first 64 KiB"),
    ],
)
async def test_a_form_without_its_model_first_is_400_without_waiting_for_the_rest(
    aiohttp_server: Any,
    start_gateway: StartGateway,
    fields: list[tuple[str, str]],
    file_first: bool,
    message: str,
) -> None:
    replica = StreamingReplica("one")
    gateway = await start(aiohttp_server, start_gateway, replica)
    body = form(fields, FILE, file_first=file_first)
    headers = {**FORM, "Content-Length": str(len(body))}
    resp = await gateway.post(PATH, data=never_more(body[:100_000]), headers=headers)
    assert resp.status == 400
    assert message in (await resp.json())["error"]["message"]
    assert replica.uploads == []


def test_the_form_head_is_found_however_the_body_is_cut() -> None:
    """The scan goes on from where it stopped: the fields found are the same for every cut."""
    body = form([("language", "en"), ("model", "whisper")], AUDIO[:2000])
    mark = BOUNDARY.encode()
    for step in (1, 2, 3, 7, 64, 1000):
        scan = FormHead(mark)
        found = None
        for end in range(step, len(body) + step, step):
            found = scan.scan(body[:end], complete=end >= len(body))
            if found is not None:
                break
        assert found == {"language": "en", "model": "whisper"}, step
        assert end < len(body)  # decided before the file's end


def test_a_form_trickled_in_is_scanned_in_linear_time() -> None:
    """A field as long as the scan's limit, a byte at a time: each byte is searched a few times, not
    once per byte that came after it."""
    body = form([("pad", "x" * (FIELD_SCAN_BYTES - 200)), ("model", "whisper")], b"")
    scan, head = FormHead(BOUNDARY.encode()), Counted()
    for at in range(len(body)):
        head += body[at : at + 1]
        if scan.scan(head, complete=at == len(body) - 1) is not None:
            break
    assert scan.fields["model"] == "whisper"
    assert head.searched < 2 * len(body) * len(
        b"\r\n--" + BOUNDARY.encode()
    )  # each search: its pattern's length


class Counted(bytearray):
    """A growing head that counts the bytes its ``find`` calls cover."""

    searched = 0

    def find(self, sub: Any, start: Any = 0, end: Any = None) -> int:
        self.searched += max(0, min(len(self) if end is None else end, len(self)) - start)
        return super().find(sub, start, end)


async def eventually_sample(gateway: TestClient[Any, Any], name: str, value: float, **labels: str) -> None:
    for _ in range(500):
        if sample(await scrape(gateway), name, **labels) == value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name}{labels} never became {value}")
