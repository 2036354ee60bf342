"""Only the API paths are forwarded, exactly as listed: an engine's admin endpoints (llama-server's
``/slots``, ``/props``, LoRA adapters) are never reachable through the gateway, however the path is
spelled. Sent as raw bytes over a socket: a client library would normalise the path first."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from gateway_fakes import StartGateway, completion, table_of

from controller.gateway.doors.openai import API_PATHS

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

# What an attacker (or a careless client) may send; none of it may reach the replica.
HOSTILE = [
    "/v1/../slots/0?action=erase",
    "/v1/chat/completions/../../slots/0?action=erase",
    "/v1/%2e%2e/slots/0?action=erase",
    "/v1/..%2fslots/0",
    "/v1/%2E%2E%2Fslots%2F0",
    "/v1/./chat/completions",
    "/v1//chat/completions",
    "//v1/chat/completions",
    "/v1/chat%2Fcompletions",
    "/v1/chat/completions%00",
    "/v1/chat/completions/",
    "/v1/chat/completions?action=erase",
    "/v1/chat/completions#x",
    "/v1/messages?beta=true&x=1",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/v1/lora-adapters",
    "/lora-adapters",
    "/slots/0?action=erase",
    "/props",
    "/v1/props",
    "/v1/metrics",
    "/v1/",
    "/v1",
    "http://replica:8080/slots/0?action=erase",
]


class Recorder:
    """A replica that records every request whatever its path, and answers a chat completion."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        await request.read()
        return web.json_response(completion("a", "m"))


async def raw_post(client: TestClient[Any, Any], target: str, body: bytes = BODY) -> tuple[int, bytes]:
    """POST ``target`` byte for byte as written; return the status and the body."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        f"POST {target} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    try:
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture
async def recorded(aiohttp_server: Any, start_gateway: StartGateway) -> tuple[Recorder, TestClient[Any, Any]]:
    recorder = Recorder()
    server: TestServer = await aiohttp_server(recorder.app())
    url = str(server.make_url("")).rstrip("/")
    table = table_of(("m", (), [url]))
    embed, rerank = table_of(("e", (), [url]), task="embed"), table_of(("r", (), [url]), task="rerank")
    models = (*table.models, *embed.models, *rerank.models)
    gateway = await start_gateway(dataclasses.replace(table, models=models))
    return recorder, gateway


# The model of the right task for each API path (``doors.tasks``), and where the replica gets it.
MODEL_FOR = {"/v1/embeddings": "e", "/v1/rerank": "r", "/rerank": "r", "/v1/score": "r"}


@pytest.mark.parametrize("target", HOSTILE)
async def test_a_path_that_is_no_api_path_never_reaches_the_replica(
    recorded: tuple[Recorder, TestClient[Any, Any]], target: str
) -> None:
    recorder, gateway = recorded
    status, body = await raw_post(gateway, target)
    assert status in (400, 404), body
    if status == 404:  # the API's own error shape (Anthropic's on its paths)
        error = json.loads(body)["error"]
        assert isinstance(error, dict) and error["type"] in ("invalid_request_error", "not_found_error")
    assert recorder.paths == []
    # ... and the gateway serves on.
    assert await raw_post(gateway, "/v1/chat/completions") == (200, json.dumps(completion("a", "m")).encode())
    assert recorder.paths == ["/v1/chat/completions"]


@pytest.mark.parametrize("path", sorted(API_PATHS))
async def test_each_api_path_reaches_the_replica_as_sent(
    recorded: tuple[Recorder, TestClient[Any, Any]], path: str
) -> None:
    recorder, gateway = recorded
    body = json.dumps({"model": MODEL_FOR.get(path, "m"), "input": "hi", "messages": []}).encode()
    status, _ = await raw_post(gateway, path, body)
    assert status == 200
    assert recorder.paths == ["/v1/rerank" if path == "/rerank" else path]  # the engines' own path


async def test_the_anthropic_clients_beta_query_is_kept(
    recorded: tuple[Recorder, TestClient[Any, Any]],
) -> None:
    recorder, gateway = recorded
    assert (await raw_post(gateway, "/v1/messages?beta=true"))[0] == 200
    assert recorder.paths == ["/v1/messages?beta=true"]


async def test_an_unknown_path_gets_openais_unknown_url_error(
    recorded: tuple[Recorder, TestClient[Any, Any]],
) -> None:
    _, gateway = recorded
    resp = await gateway.post("/v1/images/generations", json={"model": "m"})
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert error["code"] == "unknown_url" and "/v1/images/generations" in error["message"]
