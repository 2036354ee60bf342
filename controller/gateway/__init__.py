"""The data plane: one OpenAI-compatible endpoint in front of every ready replica.

It knows only the endpoint table (``controller.endpoints``), never Docker. Entry points:
``create_app`` (an aiohttp app over any ``TableSource``) and ``run_gateway`` (serve, following the
controller). Modules: ``table`` (where the table comes from), ``balancer`` (which replica),
``routes`` (the HTTP surface), ``proxy`` (forwarding and streaming), ``errors`` (OpenAI error JSON).
"""

from controller.gateway.app import GatewaySettings, create_app, run_gateway
from controller.gateway.table import ControllerTable, StaticTable, TableSource

__all__ = [
    "ControllerTable",
    "GatewaySettings",
    "StaticTable",
    "TableSource",
    "create_app",
    "run_gateway",
]
