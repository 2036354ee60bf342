"""The data plane: one OpenAI-compatible endpoint in front of every ready replica.

It knows only the endpoint table (``controller.endpoints.table``), never Docker or the reconciler
(tests/test_layers.py keeps it so). Entry points: ``create_app`` (an aiohttp app over any
``TableSource``) and ``run_gateway`` (serve in a process of its own, following the controller).

Modules, top down: ``server`` (the serving process) over ``workers`` (SO_REUSEPORT processes) and
``process`` (event loop, GC); ``app`` (wiring) over ``routes`` (the HTTP surface) over ``ollama``
(Ollama's API: ``ollama_translate``, ``ollama_models``) over ``proxy`` (forwarding, streaming) over
``upstream`` (the HTTP/1.1 client to replicas) and ``deadlines``;
``admission`` (replica slots, bounded queues, 429/503) over ``balancer`` (which replica),
``prefix`` and ``hashring`` (prefix affinity) and ``demand`` (load per model, reported to the
controller for scaling on demand); ``table`` (where the table comes from); ``auth``
(optional API keys), ``metrics`` and ``peers`` (Prometheus, across workers), ``settings`` and
``errors`` (OpenAI error JSON) at the bottom, and ``events`` (SSE events cut from a replica's
stream, each capped) below them.
"""

from controller.gateway.app import create_app
from controller.gateway.serving.server import run_gateway
from controller.gateway.settings import GatewaySettings, SettingsError
from controller.gateway.tables.source import ControllerTable, StaticTable, TableSource

__all__ = [
    "ControllerTable",
    "GatewaySettings",
    "SettingsError",
    "StaticTable",
    "TableSource",
    "create_app",
    "run_gateway",
]
