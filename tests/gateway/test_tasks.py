"""A model's task decides which APIs reach it (``doors.tasks``): one 400 naming the model and its task
in each API's shape, the bare ``/rerank`` on the replica's ``/v1/rerank``, and the audio APIs'
multipart bodies routed by their form's model field (``doors.audio``), forwarded byte for byte."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, StartUpstream, table_of, with_tasks
from test_metrics import sample, scrape

from controller.endpoints.table import EndpointTable

CHAT = {"model": "e", "messages": [{"role": "user", "content": "hi"}]}


async def tasked_gateway(start_gateway: StartGateway, start_upstream: StartUpstream) -> tuple[Any, Any]:
    fake, url = await start_upstream("a")
    table = table_of(("m", (), [url]), ("e", ("e2",), [url]), ("r", (), [url]))
    return fake, await start_gateway(with_tasks(table, e="embed", r="rerank"))


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/v1/chat/completions", CHAT, lambda d: d["error"]["message"]),
        ("/v1/responses", {"model": "e", "input": "hi"}, lambda d: d["error"]["message"]),
        ("/v1/messages", {**CHAT, "max_tokens": 5}, lambda d: d["error"]["message"]),  # Anthropic's shape
        ("/api/chat", CHAT, lambda d: d["error"]),  # Ollama's
    ],
)
async def test_a_generate_api_to_an_embed_model_is_one_400_naming_model_and_task(
    start_gateway: StartGateway, start_upstream: StartUpstream, path: str, body: dict[str, Any], error: Any
) -> None:
    fake, gateway = await tasked_gateway(start_gateway, start_upstream)
    resp = await gateway.post(path, json=body)
    assert resp.status == 400
    document = await resp.json()
    assert error(document) == f"model e is served for embed; {path} needs a model with task: generate"
    if path == "/v1/messages":
        assert document["type"] == "error" and document["error"]["type"] == "invalid_request_error"
    assert fake.requests == []  # never forwarded


async def test_embeddings_to_a_generator_and_chat_by_alias_are_refused_naming_the_task(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, gateway = await tasked_gateway(start_gateway, start_upstream)
    resp = await gateway.post("/v1/embeddings", json={"model": "m", "input": "a"})
    assert resp.status == 400
    assert (await resp.json())["error"]["message"] == (
        "model m is served for generate; /v1/embeddings needs a model with task: embed"
    )
    resp = await gateway.post("/api/embed", json={"model": "r", "input": "a"})
    assert (resp.status, (await resp.json())["error"]) == (
        400,
        "model r is served for rerank; /api/embed needs a model with task: embed",
    )
    resp = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "e2"})  # an alias: its model
    assert "model e is served for embed" in (await resp.json())["error"]["message"]
    assert fake.requests == []
    # What fits goes through: embeddings to e, scores to e and r.
    assert (await gateway.post("/v1/embeddings", json={"model": "e", "input": ["a"]})).status == 200
    for model in ("e", "r"):  # forwarded (the fake serves no /v1/score: its 404)
        resp = await gateway.post("/v1/score", json={"model": model, "text_1": "a", "text_2": "b"})
        assert resp.headers["X-Modelctl-Replica"] == f"{model}-0"
    assert [r.path for r in fake.requests] == ["/v1/embeddings"]


async def test_bare_rerank_reaches_the_replicas_v1_rerank(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    seen: list[tuple[str, bytes]] = []

    async def rerank(request: web.Request) -> web.Response:
        seen.append((request.path, await request.read()))
        return web.json_response({"results": [{"index": 1, "relevance_score": 0.9}]})

    app = web.Application()
    app.router.add_post("/v1/rerank", rerank)
    server = await aiohttp_server(app)
    gateway = await start_gateway(table_of(("r", (), [str(server.make_url("")).rstrip("/")]), task="rerank"))
    body = {"model": "r", "query": "q", "documents": ["a", "b"]}
    for path in ("/rerank", "/v1/rerank"):
        resp = await gateway.post(path, json=body)
        assert resp.status == 200
        assert (await resp.json())["results"][0]["relevance_score"] == 0.9
    assert [path for path, _ in seen] == ["/v1/rerank", "/v1/rerank"]
    resp = await gateway.post("/rerank", json={**body, "model": "nope"})
    assert resp.status == 404


def test_a_table_without_tasks_serves_every_model_for_generate_and_an_unknown_task_is_malformed() -> None:
    old = {"version": 3, "models": [{"name": "m", "replicas": []}]}
    assert EndpointTable.from_json(old).models[0].task == "generate"
    table = EndpointTable.from_json({**old, "models": [{"name": "m", "task": "rerank"}]})
    assert EndpointTable.from_json(table.to_json()).models[0].task == "rerank"
    with pytest.raises(ValueError, match="unknown task 'classify'"):
        EndpointTable.from_json({**old, "models": [{"name": "m", "task": "classify"}]})


# Audio: multipart bodies, routed by their form's model field.


class AudioReplica:
    """A replica that serves transcriptions: it records each body's sha256 and Content-Type."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, str, str]] = []  # (path, content type, sha256 of the body)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            app.router.add_post(path, self.transcribe)
        return app

    async def transcribe(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.path, request.headers["Content-Type"], hashlib.sha256(body).hexdigest()))
        return web.json_response({"text": f"heard by {self.name}"})


async def audio_gateway(
    aiohttp_server: Any, start_gateway: StartGateway, **settings: Any
) -> tuple[AudioReplica, AudioReplica, TestClient[Any, Any]]:
    one, two = AudioReplica("one"), AudioReplica("two")
    urls = [str((await aiohttp_server(r.app())).make_url("")).rstrip("/") for r in (one, two)]
    table = table_of(("whisper-a", (), [urls[0]]), ("whisper-b", (), [urls[1]]), ("gguf", (), [urls[0]]))
    engines = {"whisper-a": "vllm", "whisper-b": "vllm", "gguf": "llamacpp"}
    models = tuple(dataclasses.replace(m, engine=engines[m.name]) for m in table.models)
    return one, two, await start_gateway(dataclasses.replace(table, models=models), **settings)


BOUNDARY = "x-modelctl-test-boundary"


def form(fields: list[tuple[str, str]], audio: bytes, *, file_first: bool = False) -> bytes:
    """A multipart/form-data body: the text ``fields`` and the file (after them, unless ``file_first``)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    file_part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + b"\r\n"
    )
    parts = [file_part, *parts] if file_first else [*parts, file_part]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
AUDIO = bytes(range(256)) * 400  # 100 KiB of every byte value, CR and LF and "--" among them


async def test_a_transcription_goes_by_its_form_field_to_that_models_replica_byte_for_byte(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    one, two, gateway = await audio_gateway(aiohttp_server, start_gateway, max_body_bytes=1000)
    body = form([("model", "whisper-b"), ("language", "en")], AUDIO)
    resp = await gateway.post("/v1/audio/transcriptions", data=body, headers=FORM)
    assert (resp.status, await resp.json()) == (200, {"text": "heard by two"})
    assert two.seen == [("/v1/audio/transcriptions", FORM["Content-Type"], hashlib.sha256(body).hexdigest())]
    assert one.seen == []  # over max_body_bytes, under max_audio_bytes: audio's own limit
    resp = await gateway.post(
        "/v1/audio/translations", data=form([("model", "whisper-a")], AUDIO), headers=FORM
    )
    assert (resp.status, await resp.json()) == (200, {"text": "heard by one"})
    samples = await scrape(gateway)
    for model in ("whisper-a", "whisper-b"):
        labels = {"api": "openai", "model": model, "status": "200"}
        replica = f"{model}-0"
        assert sample(samples, "modelctl_gateway_requests_total", replica=replica, **labels) == 1


async def test_the_official_client_transcribes_through_the_gateway(
    aiohttp_server: Any, start_gateway: StartGateway
) -> None:
    _, two, gateway = await audio_gateway(aiohttp_server, start_gateway)
    base_url = str(gateway.make_url("/v1"))

    def transcribe() -> str:
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10) as client:
            audio = io.BytesIO(AUDIO)
            audio.name = "a.wav"
            return client.audio.transcriptions.create(model="whisper-b", file=audio).text

    assert await asyncio.to_thread(transcribe) == "heard by two"
    assert len(two.seen) == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (form([("language", "en")], AUDIO), FORM, 400, "put the model field before the file"),
        (
            form([("model", "whisper-a")], AUDIO, file_first=True),
            FORM,
            400,
            "put the model field before the file",
        ),
        (
            form([("pad", "x" * 70_000), ("model", "whisper-a")], b""),
            FORM,
            400,
            "No model field in the first 64 KiB",
        ),
        (form([("model", "")], AUDIO), FORM, 400, "You must provide a model parameter"),
        (b'{"model": "whisper-a"}', {"Content-Type": "application/json"}, 400, "multipart/form-data"),
        (b"--other\r\n\r\n", FORM, 400, "not the multipart form its Content-Type announces"),
        (form([("model", "gguf")], AUDIO), FORM, 400, "llama.cpp serves no transcription API"),
        (form([("model", "nope")], AUDIO), FORM, 404, "The model 'nope' does not exist"),
        (
            form([("model", "whisper-a")], AUDIO * 3),
            FORM,
            413,
            "larger than the gateway's limit of 200000 bytes",
        ),
    ],
)
async def test_audio_that_cannot_be_routed_is_refused_before_any_replica(
    aiohttp_server: Any,
    start_gateway: StartGateway,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    one, two, gateway = await audio_gateway(aiohttp_server, start_gateway, max_audio_bytes=200_000)
    resp = await gateway.post("/v1/audio/transcriptions", data=body, headers=headers)
    assert resp.status == status
    assert message in (await resp.json())["error"]["message"]
    assert one.seen == two.seen == []
