"""Fixtures that start real servers: fake replicas, the gateway over a StaticTable."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from gateway_fakes import FakeLlamaServer, StartGateway, StartUpstream

from controller.endpoints.table import EndpointTable
from controller.gateway import GatewaySettings, StaticTable, create_app


@pytest.fixture
def start_upstream(aiohttp_server: Any) -> StartUpstream:
    """Start a FakeLlamaServer; return it and its base URL."""

    async def start(name: str, **options: Any) -> tuple[FakeLlamaServer, str]:
        fake = FakeLlamaServer(name, **options)
        server = await aiohttp_server(fake.app())
        return fake, str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture
def start_gateway(aiohttp_client: Any) -> StartGateway:
    """Start the gateway over a fixed table; return a client for it (``.app`` is the app)."""

    async def start(table: EndpointTable, **settings: Any) -> TestClient[Any, Any]:
        app = create_app(StaticTable(table), GatewaySettings(**settings))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return start
