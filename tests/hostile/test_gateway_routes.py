"""Hostile input at every gateway route: random and malformed bodies, headers and paths (hypothesis)
against a real gateway over a fake engine, over real sockets.

For every answer: never a 500 (502/503 only where an upstream state means them), never an
unhandled exception in the log, an error body in the API's own shape (OpenAI's, Anthropic's on
/v1/messages*, Ollama's on /api/*) whenever the gateway answered itself; and after each batch a
normal request is still served. The gateway and the engine run on a loop in a thread of their own
for the whole module (hypothesis runs each example as a plain call).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica
from controller.gateway import GatewaySettings, StaticTable, create_app

T = TypeVar("T")
KEY = "sk-hostile-0123"
REPLICA_HEADER = "X-Modelctl-Replica"
HOSTILE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

OPENAI_PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/score",
    "/rerank",
]
AUDIO_PATHS = ["/v1/audio/transcriptions", "/v1/audio/translations"]
ANTHROPIC_PATHS = ["/v1/messages", "/v1/messages/count_tokens"]
RESPONSES_PATHS = ["/v1/responses"]
OLLAMA_PATHS = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"]


class Engine:
    """An engine that answers whatever reaches it the way llama-server would: JSON, SSE (usage when
    asked), or a 400 for a body it cannot use. It never fails itself, so a 5xx is the gateway's."""

    def __init__(self) -> None:
        self.seen = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        try:
            body = json.loads(await request.read())
            model = str(body["model"])
            stream = body.get("stream") is True
            usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        except Exception as exc:  # the engine's own 400
            return web.json_response({"error": {"code": 400, "message": repr(exc)[:80]}}, status=400)
        if not stream:
            return web.json_response(
                {
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                    "data": [{"embedding": [0.5], "index": 0}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delta = {"index": 0, "delta": {"content": "ok"}}
        piece = {"object": "chat.completion.chunk", "model": model, "choices": [delta]}
        await resp.write(b"data: " + json.dumps(piece).encode() + b"\n\n")
        if usage:
            last = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3}}
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


class Stack:
    """The gateway (with a keys file) and the engine, served on a loop in a thread of their own."""

    def __init__(self, keys_file: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hostile-stack", daemon=True)
        self._thread.start()
        self.engine = Engine()
        self._runners: list[web.AppRunner] = []
        self.url = self.run(self._start(keys_file))
        self.session: aiohttp.ClientSession = self.run(self._session())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        server = runner.server
        assert server is not None and runner.addresses
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _start(self, keys_file: Path) -> str:
        engine = await self._serve(self.engine.app())
        replica = Replica("m-0", engine, 8)
        table = EndpointTable(
            version=1,
            models=(
                ModelEndpoints(name="m", aliases=("m:latest",), created=1, replicas=(replica,)),
                # A llama.cpp model with adapters and no vision, and an embedding model: the
                # adapter routing, the lora list, the image checks and the task check meet the
                # same hostile bodies.
                ModelEndpoints(
                    name="lm",
                    replicas=(Replica("lm-0", engine, 8),),
                    engine="llamacpp",
                    adapters=("a1", "a2"),
                    vision=False,
                ),
                ModelEndpoints(name="e", replicas=(Replica("e-0", engine, 8),), engine="vllm", task="embed"),
            ),
        )
        gateway = GatewaySettings(api_keys_file=keys_file, max_body_bytes=64 * 1024, queue_timeout_s=5)
        return await self._serve(create_app(StaticTable(table), gateway))

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False)

    def close(self) -> None:
        async def stop() -> None:
            await self.session.close()
            for runner in reversed(self._runners):
                await runner.cleanup()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class Errors(logging.Handler):
    """Every log record at ERROR or above, or with a traceback, while the module runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.unparsed = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and not record.exc_info:
            return
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code == 400:
            # aiohttp's parser refusing a request line it cannot parse (400 before any route): it
            # logs each with a traceback at ERROR. Counted apart: the request never reached us.
            self.unparsed += 1
            return
        self.records.append(record)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys.write_text(f"hostile: {{key: {KEY}, max_concurrent_requests: 64}}\n")
    stack = Stack(keys)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def errors() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.fixture(autouse=True)
def no_unhandled_error_and_still_serving(stack: Stack, errors: Errors) -> Iterator[None]:
    yield
    unhandled = [f"{r.name}: {r.getMessage()}" for r in errors.records]
    errors.records.clear()
    assert unhandled == [], "an exception reached the log"
    status, _, body = stack.run(post(stack, "/v1/chat/completions", json.dumps(NORMAL).encode(), AUTH))
    assert status == 200 and json.loads(body)["choices"], "a normal request is served afterwards"


NORMAL = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


async def post(
    stack: Stack, path: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    async with stack.session.request(method, stack.url + path, data=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def check_answer(path: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """No 500; an error the gateway gave itself is in the path's API's shape."""
    assert status < 500 or status in (502, 503), (path, status, body[:300])
    if status < 400 or REPLICA_HEADER in headers:  # served, or the engine's own error passed through
        return
    if (
        status == 417
    ):  # aiohttp's answer to an Expect it does not know, before any route: HTTP's, not an API's
        return
    document = json.loads(body)
    if path.startswith("/api/"):
        assert isinstance(document, dict) and isinstance(document.get("error"), str), body
    elif path.split("?")[0] in ANTHROPIC_PATHS:
        assert document["type"] == "error" and isinstance(document["error"]["message"], str), body
        assert isinstance(document["error"]["type"], str)
    else:
        assert isinstance(document["error"]["message"], str) and isinstance(document["error"]["type"], str)


# JSON values of every kind, nested a little; documents that look almost right; raw bytes.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | st.text(max_size=5)},
        optional={"content": values, "images": values, "tool_calls": values},
    ),
    max_size=3,
)
documents = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "m:latest", "nope", "", "lm", "a1", "lm:a2", "lm:nope", "e"]) | values},
    optional={
        "messages": messages | values,
        "prompt": st.text(max_size=30) | values,
        "input": st.text(max_size=30) | values,
        "system": values,
        "instructions": values,
        "stream": st.booleans() | values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": values}) | values,
        "max_tokens": values,
        "keep_alive": st.sampled_from(["5m", "-1", "0", "1e400h", "nan"]) | values,
        "options": values,
        "format": values,
        "documents": values,
        "query": values,
        "tools": values,
        "lora": values,
        "images": values,
    },
)
bodies = (
    documents.map(lambda d: json.dumps(d).encode())
    | values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=300)
)
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
headers = st.dictionaries(
    st.sampled_from(
        ["authorization", "x-api-key", "content-type", "accept-encoding", "accept", "cookie", "expect"]
    )
    | header_names.filter(lambda n: n not in ("content-length", "transfer-encoding", "host", "connection")),
    header_values,
    max_size=5,
)
DEEP = b'{"model": "m", "stream": true, "messages": ' + b"[" * 20000 + b"]" * 20000 + b"}"


def hostile_round(stack: Stack, path: str, body: bytes, extra: dict[str, str], keyed: bool) -> None:
    sent = dict(extra)
    if keyed:
        sent.update(AUTH)
    status, got, answer = stack.run(post(stack, path, body, sent))
    check_answer(path, status, got, answer)


@HOSTILE
@given(path=st.sampled_from(OPENAI_PATHS), body=bodies, extra=headers, keyed=st.booleans())
@example(path="/v1/chat/completions", body=DEEP, extra={}, keyed=True)
@example(path="/v1/chat/completions", body=b"[{}" + b",{}" * 20000 + b"]", extra={}, keyed=True)
@example(path="/v1/completions", body=b'{"model": "m", "stream": true, "prompt": "x"}', extra={}, keyed=True)
@example(path="/v1/embeddings", body='{"model": "m"}'.encode("utf-16"), extra={}, keyed=True)
def test_openai_routes(stack: Stack, path: str, body: bytes, extra: dict[str, str], keyed: bool) -> None:
    hostile_round(stack, path, body, extra, keyed)


@HOSTILE
@given(
    path=st.sampled_from(ANTHROPIC_PATHS + RESPONSES_PATHS), body=bodies, extra=headers, keyed=st.booleans()
)
@example(path="/v1/messages", body=b'{"model": "m", "stream": true, "messages": []}', extra={}, keyed=True)
@example(path="/v1/messages", body=b"{}", extra={"x-api-key": KEY}, keyed=False)
def test_anthropic_and_responses_routes(
    stack: Stack, path: str, body: bytes, extra: dict[str, str], keyed: bool
) -> None:
    hostile_round(stack, path, body, extra, keyed)


@HOSTILE
@given(path=st.sampled_from(OLLAMA_PATHS), body=bodies, extra=headers, keyed=st.booleans())
@example(
    path="/api/chat",
    body=b'{"model": "m", "messages": [{"role": "user"}], "stream": true}',
    extra={},
    keyed=True,
)
@example(
    path="/api/generate", body=b'{"model": "m", "prompt": "x", "keep_alive": 1e400}', extra={}, keyed=True
)
@example(path="/api/chat", body=DEEP, extra={}, keyed=True)
def test_ollama_routes(stack: Stack, path: str, body: bytes, extra: dict[str, str], keyed: bool) -> None:
    hostile_round(stack, path, body, extra, keyed)


def multipart(fields: list[tuple[str, bytes, bool]], mark: str) -> bytes:
    """A multipart/form-data body of ``fields`` (name, value, is a file) with boundary ``mark``."""
    out = b""
    for name, value, is_file in fields:
        filename = '; filename="a.wav"' if is_file else ""
        out += f'--{mark}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
        out += value + b"\r\n"
    return out + f"--{mark}--\r\n".encode()


form_fields_ = st.lists(
    st.tuples(
        st.sampled_from(["model", "file", "language", "stream", ""]) | st.text(max_size=8),
        st.sampled_from([b"m", b"lm", b"a1", b"e", b"nope", b""]) | st.binary(max_size=40),
        st.booleans(),
    ),
    max_size=5,
)
marks = st.sampled_from(["b0undary", "x", "a" * 70, "a" * 71]) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='";\\'), max_size=12
)


@HOSTILE
@given(
    path=st.sampled_from(AUDIO_PATHS),
    fields=form_fields_,
    mark=marks,
    said=marks,
    raw=st.none() | st.binary(max_size=200),
    content_type=st.sampled_from(["multipart/form-data", "multipart/mixed", "application/json", ""]),
)
@example(path=AUDIO_PATHS[0], fields=[("model", b"m", False), ("file", b"RIFF", True)], mark="b", said="b",
         raw=None, content_type="multipart/form-data")  # fmt: skip
@example(path=AUDIO_PATHS[0], fields=[("file", b"RIFF", True), ("model", b"m", False)], mark="b", said="b",
         raw=None, content_type="multipart/form-data")  # fmt: skip
def test_audio_routes(
    stack: Stack,
    path: str,
    fields: list[tuple[str, bytes, bool]],
    mark: str,
    said: str,
    raw: bytes | None,
    content_type: str,
) -> None:
    """Multipart forms, well made or not, with the boundary the Content-Type says or another."""
    body = raw if raw is not None else multipart(fields, mark)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": f"{content_type}; boundary={said}"}
    status, got, answer = stack.run(post(stack, path, body, headers))
    check_answer(path, status, got, answer)


path_pieces = st.sampled_from(
    ["v1", "api", "..", ".", "", "%2e%2e", "%2f", "slots", "0", "props", "chat", "completions", "metrics",
     "messages", "models", "lora-adapters", "load_lora_adapter", "%00", "%ff", "\u00e9", "tags", "show"]
)  # fmt: skip
paths = st.lists(path_pieces, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts)) | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=40
).map(lambda text: "/" + text)
queries = st.sampled_from(["", "?action=erase", "?beta=true", "?a=1&b", "?%zz"])


@HOSTILE
@given(path=paths, query=queries, method=st.sampled_from(["POST", "GET", "DELETE", "PUT", "HEAD"]))
@example(path="/v1/../slots/0", query="?action=erase", method="POST")
def test_paths_never_reach_the_engine_unless_listed(stack: Stack, path: str, query: str, method: str) -> None:
    target = path + query
    before = stack.engine.seen
    status, answer = stack.run(raw_request(stack, method, target, json.dumps(NORMAL).encode()))
    assert status < 500, (target, status, answer[:200])
    listed = [*OPENAI_PATHS, *ANTHROPIC_PATHS, *RESPONSES_PATHS, *(p + "?beta=true" for p in ANTHROPIC_PATHS)]
    reached = stack.engine.seen - before
    if method != "POST" or target not in listed:
        assert reached == 0 or target.startswith("/api/"), f"{method} {target} reached the engine"


async def raw_request(stack: Stack, method: str, target: str, body: bytes) -> tuple[int, bytes]:
    """Send ``target`` byte for byte (no client normalises it); return the status and what followed."""
    host, _, port = stack.url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("utf-8") + body)
    try:
        async with asyncio.timeout(30):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest
