"""A gateway following a controller whose API wants keys: it sends MODELCTL_CONTROLLER_KEY."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gateway_fakes import FakeController, table_of

from controller.api import key_middleware
from controller.gateway.serving.server import serve
from controller.gateway.settings import GatewaySettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def served_models(key: str | None, tmp_path: Path) -> tuple[list[str], FakeController]:
    """The models a gateway serves after following a keyed controller for a moment, with ``key``."""
    (tmp_path / "keys.yaml").write_text("gateway: sk-gateway-key\n")
    controller = FakeController(table_of(("m", (), ["http://10.0.0.1:8080"])))
    app = controller.app()
    app.middlewares.append(key_middleware(tmp_path / "keys.yaml"))
    server = TestServer(app)
    await server.start_server()
    port = free_port()
    settings = GatewaySettings(
        host="127.0.0.1", port=port, controller_url=str(server.make_url("")), controller_key=key
    )
    task = asyncio.create_task(serve(settings, reuse_port=False, announce=False))
    names: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def listed() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/v1/models") as resp:
                        names[:] = [m["id"] for m in (await resp.json())["data"]]
                except aiohttp.ClientError:
                    return False
                return bool(names)

            for _ in range(20):
                if await listed():
                    break
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.close()
    return names, controller


async def test_with_the_key_the_gateway_gets_the_table(tmp_path: Path) -> None:
    names, controller = await served_models("sk-gateway-key", tmp_path)
    assert names == ["m"] and controller.polls >= 1


async def test_without_it_the_controller_answers_nothing_and_the_log_says_what_to_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.gateway.tables.source"):
        names, controller = await served_models(None, tmp_path)
    assert names == [] and controller.polls == 0, "the key middleware refused before the handler"
    assert any(
        "HTTP 401" in r.getMessage() and "MODELCTL_CONTROLLER_KEY" in r.getMessage() for r in caplog.records
    )


def test_the_key_comes_from_the_environment_and_stays_out_of_repr() -> None:
    settings = GatewaySettings.from_env({"MODELCTL_CONTROLLER_KEY": " sk-secret \n"})
    assert settings.controller_key == "sk-secret" and "sk-secret" not in repr(settings)
