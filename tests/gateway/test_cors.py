"""CORS is the gateway's: engines' CORS headers never reach clients; allowed origins are settings.

The replica here answers as llama-server does, with CORS headers of its own (an empty
``Access-Control-Allow-Origin``); the gateway drops them and says only what its settings allow.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, completion, sse, table_of

from controller.gateway import GatewaySettings, SettingsError

PAGE = "https://chat.example.com"
OTHER = "https://evil.example.net"
KEY = "sk-cors"
ENGINE_CORS = {
    "Access-Control-Allow-Origin": "",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Allow-Methods": "GET, POST",
}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def engine_app() -> web.Application:
    """A replica that sends its own CORS headers with every answer, JSON and streamed."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(completion("r", body["model"]), headers=ENGINE_CORS)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **ENGINE_CORS})
        await resp.prepare(request)
        await resp.write(sse({"choices": [{"index": 0, "delta": {"content": "hi"}}]}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture
async def engine_url(aiohttp_server: Any) -> str:
    server = await aiohttp_server(engine_app())
    return str(server.make_url("")).rstrip("/")


def cors_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


async def post(client: TestClient[Any, Any], origin: str | None, *, stream: bool = False) -> Any:
    headers = {"Authorization": f"Bearer {KEY}"}
    if origin is not None:
        headers["Origin"] = origin
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=headers)
    await resp.read()
    return resp


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_by_default_no_cors_header_reaches_a_client(
    start_gateway: StartGateway, engine_url: str, stream: bool
) -> None:
    client = await start_gateway(table_of(("m", (), [engine_url])), api_keys=(KEY,))
    resp = await post(client, PAGE, stream=stream)
    assert resp.status == 200
    assert cors_headers(resp.headers) == {}  # the engine's empty Access-Control-Allow-Origin is gone
    options = await client.options("/v1/chat/completions", headers=preflight(PAGE))
    assert options.status != 204 and cors_headers(options.headers) == {}  # no preflight answered


@pytest.mark.parametrize("stream", [False, True])
async def test_an_allowed_origin_is_named_and_others_are_not(
    start_gateway: StartGateway, engine_url: str, stream: bool
) -> None:
    client = await start_gateway(table_of(("m", (), [engine_url])), api_keys=(KEY,), cors_origins=(PAGE,))
    resp = await post(client, PAGE, stream=stream)
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Origin" in resp.headers.getall("Vary")
    assert "Access-Control-Allow-Credentials" not in resp.headers  # the engine's "true" is dropped
    assert "X-Modelctl-Replica" in resp.headers["Access-Control-Expose-Headers"]
    for origin in (OTHER, None):
        resp = await post(client, origin, stream=stream)
        assert resp.status == 200 and cors_headers(resp.headers) == {}


async def test_a_preflight_from_an_allowed_origin_is_answered_before_keys(
    start_gateway: StartGateway, engine_url: str
) -> None:
    client = await start_gateway(table_of(("m", (), [engine_url])), api_keys=(KEY,), cors_origins=(PAGE,))
    resp = await client.options("/v1/chat/completions", headers=preflight(PAGE))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-stainless-os"
    refused = await client.options("/v1/chat/completions", headers=preflight(OTHER))
    assert refused.status == 401 and cors_headers(refused.headers) == {}  # not answered: keys apply
    # The real request still needs its key; the page may read the 401 (its origin is named).
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={"Origin": PAGE})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE


async def test_a_preflight_asking_for_malformed_headers_is_not_echoed(
    start_gateway: StartGateway, engine_url: str
) -> None:
    client = await start_gateway(table_of(("m", (), [engine_url])), cors_origins=(PAGE,))
    headers = {**preflight(PAGE), "Access-Control-Request-Headers": "a b, (c)"}
    resp = await client.options("/v1/chat/completions", headers=headers)
    assert resp.status == 204
    assert "Access-Control-Allow-Headers" not in resp.headers


async def test_any_origin_only_when_said(start_gateway: StartGateway, engine_url: str) -> None:
    client = await start_gateway(table_of(("m", (), [engine_url])), cors_origins=("*",))
    resp = await post(client, OTHER, stream=True)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in resp.headers
    ollama = await client.get("/api/tags", headers={"Origin": OTHER})  # every door, every answer
    assert ollama.headers["Access-Control-Allow-Origin"] == "*"


def test_origins_come_from_the_environment_and_bad_ones_are_named() -> None:
    env = {"MODELCTL_GATEWAY_CORS_ORIGINS": f" {PAGE} , http://localhost:3000,"}
    assert GatewaySettings.from_env(env).cors_origins == (PAGE, "http://localhost:3000")
    assert GatewaySettings.from_env({}).cors_origins == ()
    for bad in ("chat.example.com", "https://chat.example.com/", "https://x.example/app", "ftp://x.example"):
        with pytest.raises(SettingsError, match="cors_origins") as info:
            GatewaySettings.from_env({"MODELCTL_GATEWAY_CORS_ORIGINS": bad})
        assert repr(bad) in str(info.value)
