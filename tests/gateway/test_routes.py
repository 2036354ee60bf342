"""The gateway's own answers: model list, health, routing by name/alias, and every error shape."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, StartUpstream, table_of

from controller.endpoints.table import EndpointTable

CHAT = "/v1/chat/completions"


def assert_openai_error(document: dict[str, Any], type_: str, code: str | None) -> str:
    """Check the error shape; return its message."""
    error = document["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (type_, None, code)
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


@pytest.fixture
async def gateway(start_gateway: StartGateway, start_upstream: StartUpstream) -> TestClient:
    _, url = await start_upstream("up")
    table = table_of(("smollm2", ("smollm", "small"), [url]), ("qwen", (), []))
    return await start_gateway(table, max_body_bytes=1024, cold_start_wait_s=0.05)


async def test_models_lists_every_name_and_alias(gateway: TestClient) -> None:
    resp = await gateway.get("/v1/models")
    assert resp.status == 200
    document = await resp.json()
    assert document["object"] == "list"
    assert [m["id"] for m in document["data"]] == ["smollm2", "smollm", "small", "qwen"]
    assert document["data"][0] == {
        "id": "smollm2",
        "object": "model",
        "created": 1764120000,
        "owned_by": "modelctl",
    }


async def test_model_retrieve_by_alias_and_unknown(gateway: TestClient) -> None:
    assert (await (await gateway.get("/v1/models/small")).json())["id"] == "small"
    resp = await gateway.get("/v1/models/nope")
    assert resp.status == 404
    assert_openai_error(await resp.json(), "invalid_request_error", "model_not_found")


@pytest.mark.parametrize("name", ["smollm2", "smollm"])
async def test_routes_by_name_or_alias_with_body_unchanged(gateway: TestClient, name: str) -> None:
    raw = b'{"model": "%s",  "messages": [{"role": "user", "content": "hi"}]}' % name.encode()
    resp = await gateway.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    document = await resp.json()
    assert document["model"] == name
    assert document["usage"]["total_tokens"] == 9
    assert resp.headers["X-Served"] == "1"


async def test_unknown_model_is_404_naming_it_and_the_available_ones(gateway: TestClient) -> None:
    resp = await gateway.post(CHAT, json={"model": "gpt-9", "messages": []})
    assert resp.status == 404
    message = assert_openai_error(await resp.json(), "invalid_request_error", "model_not_found")
    assert "gpt-9" in message
    assert "smollm2" in message and "qwen" in message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"model": "smollm2", ', id="truncated JSON"),
        pytest.param(b"\xff\xfe not utf-8", id="not UTF-8"),
        pytest.param(b"[1, 2]", id="not an object"),
        pytest.param(b'{"messages": []}', id="no model"),
        pytest.param(b'{"model": 7}', id="model not a string"),
        pytest.param(b'{"model": ""}', id="empty model"),
        pytest.param(b"", id="empty body"),
    ],
)
async def test_bad_body_is_400(gateway: TestClient, body: bytes) -> None:
    resp = await gateway.post(CHAT, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_openai_error(await resp.json(), "invalid_request_error", None)


async def test_body_over_limit_is_413_with_or_without_length(gateway: TestClient) -> None:
    big = b'{"model": "smollm2", "prompt": "' + b"x" * 2000 + b'"}'
    resp = await gateway.post("/v1/completions", data=big)
    assert resp.status == 413
    assert_openai_error(await resp.json(), "invalid_request_error", "request_too_large")

    async def chunked() -> Any:
        for start in range(0, len(big), 256):
            yield big[start : start + 256]

    resp = await gateway.post("/v1/completions", data=chunked())
    assert resp.status == 413


async def test_model_without_ready_replica_is_503_with_retry_after(gateway: TestClient) -> None:
    resp = await gateway.post(CHAT, json={"model": "qwen", "messages": []})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert_openai_error(await resp.json(), "server_error", "model_unavailable")


async def test_no_table_yet_is_503_not_404(start_gateway: StartGateway) -> None:
    client = await start_gateway(EndpointTable(), cold_start_wait_s=0.05)
    resp = await client.post(CHAT, json={"model": "smollm2"})
    assert resp.status == 503
    assert "Retry-After" in resp.headers


async def test_health_and_readiness(start_gateway: StartGateway, gateway: TestClient) -> None:
    assert (await gateway.get("/healthz")).status == 200
    health = await gateway.get("/health")  # what llama-server answers: tools (guidellm) probe it
    assert health.status == 200 and (await health.json())["status"] == "ok"
    resp = await gateway.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["ready_models"] == ["smollm2"]
    idle = await start_gateway(table_of(("qwen", (), [])))
    assert (await idle.get("/healthz")).status == 200
    assert (await idle.get("/readyz")).status == 503


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v2/nothing", 404), ("GET", CHAT, 405), ("DELETE", "/v1/models", 405)],
)
async def test_unknown_routes_answer_openai_json(
    gateway: TestClient, method: str, path: str, status: int
) -> None:
    resp = await gateway.request(method, path)
    assert resp.status == status
    assert_openai_error(await resp.json(), "invalid_request_error", None)
