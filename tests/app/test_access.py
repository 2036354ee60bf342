"""Keys on the controller's API: /v1/* wants one; health, metrics and the page's files do not."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from controller.api import key_middleware
from controller.cli import main

KEYS = "console: sk-console-1\ngateway: sk-gateway-2\n"


def app_with_keys(keys_file: Path) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application(middlewares=[key_middleware(keys_file)])
    for path in ("/", "/healthz", "/metrics", "/console/app.js", "/v1/status", "/v1/endpoints"):
        app.router.add_get(path, ok)
    return app


async def test_v1_routes_want_a_key_and_say_how_to_send_one(aiohttp_client: Any, tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text(KEYS)
    client: TestClient[Any, Any] = await aiohttp_client(app_with_keys(tmp_path / "keys.yaml"))
    refused = await client.get("/v1/status")
    assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in (await refused.json())["error"]
    wrong = await client.get("/v1/status", headers={"Authorization": "Bearer sk-nope"})
    assert wrong.status == 401 and "not one of" in (await wrong.json())["error"]
    for key in ("sk-console-1", "sk-gateway-2"):
        passed = await client.get("/v1/endpoints", headers={"Authorization": f"Bearer {key}"})
        assert passed.status == 200


async def test_what_carries_no_data_stays_open(aiohttp_client: Any, tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text(KEYS)
    client: TestClient[Any, Any] = await aiohttp_client(app_with_keys(tmp_path / "keys.yaml"))
    for path in ("/", "/healthz", "/metrics", "/console/app.js"):
        assert (await client.get(path)).status == 200, path


async def test_a_key_added_to_the_file_works_without_a_restart(aiohttp_client: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(KEYS)
    client: TestClient[Any, Any] = await aiohttp_client(app_with_keys(keys))
    assert (await client.get("/v1/status", headers={"Authorization": "Bearer sk-new-3"})).status == 401
    keys.write_text(KEYS + "newcomer: sk-new-3\n")

    for _ in range(30):  # the file is looked at once a second
        resp = await client.get("/v1/status", headers={"Authorization": "Bearer sk-new-3"})
        if resp.status == 200:
            break
        await asyncio.sleep(0.1)
    assert resp.status == 200


async def test_modelctl_status_sends_the_key_and_says_when_it_is_missing(
    aiohttp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keys.yaml").write_text(KEYS)

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"replicas": [], "models": [], "manifest_errors": [], "notes": []})

    app = web.Application(middlewares=[key_middleware(tmp_path / "keys.yaml")])
    app.router.add_get("/v1/status", status)
    server = await aiohttp_server(app)
    url = str(server.make_url(""))
    monkeypatch.delenv("MODELCTL_CONTROLLER_KEY", raising=False)
    assert await asyncio.to_thread(main, ["status", "--controller-url", url]) == 1
    err = capsys.readouterr().err
    assert "answered 401: no API key" in err and "(set MODELCTL_CONTROLLER_KEY)" in err
    assert "Traceback" not in err
    monkeypatch.setenv("MODELCTL_CONTROLLER_KEY", "sk-console-1")
    assert await asyncio.to_thread(main, ["status", "--controller-url", url]) == 0
