"""The data plane: one OpenAI-compatible endpoint in front of every ready replica.

It knows only the endpoint table (``controller.endpoints``), never Docker. Entry points:
``create_app`` (an aiohttp app over any ``TableSource``) and ``run_gateway`` (serve, following the
controller). Modules: ``table`` (where the table comes from), ``balancer`` (which replica),
``admission`` (replica slots, bounded queues, 429/503), ``prefix`` and ``hashring`` (prefix affinity),
``routes`` (the HTTP surface), ``proxy`` (forwarding and streaming), ``auth`` (optional API keys),
``metrics`` (Prometheus), ``settings``, ``workers`` (SO_REUSEPORT processes), ``errors`` (OpenAI error JSON).
"""

from controller.gateway.app import create_app, run_gateway
from controller.gateway.settings import GatewaySettings, SettingsError
from controller.gateway.table import ControllerTable, StaticTable, TableSource

__all__ = [
    "ControllerTable",
    "GatewaySettings",
    "SettingsError",
    "StaticTable",
    "TableSource",
    "create_app",
    "run_gateway",
]
