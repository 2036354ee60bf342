"""The data plane: one OpenAI-compatible endpoint (and Ollama's, Anthropic's, Responses') in front of
every ready replica.

It knows only the endpoint table (``controller.endpoints.table``), never Docker or the reconciler
(tests/test_layers.py keeps it so). Entry points: ``create_app`` (an aiohttp app over any
``TableSource``) and ``run_gateway`` (serve in a process of its own, following the controller).

Sub-packages by concern, top down (pyproject.toml's import contracts keep the arrows pointing down):

- ``serving/``: the gateway as a process (server, worker processes, loop and GC, access log);
- ``app``: the wiring of one app (its single middleware: keys, CORS, errors as JSON);
- ``doors/``: the front doors. One request pipeline (``doors.pipeline``) that every API's calls
  take (body under deadlines, model, key, admission, forwarding, answer, outcome), with a thin
  adapter per API that parses and translates in and out;
- ``forward/``: one admitted request to a replica and its answer back (HTTP client, retries, relay,
  deadlines, stream mends, usage, headers);
- ``admission/``: which replica takes a request, now or after a bounded wait (queues, balancer,
  prefix affinity, demand);
- ``telemetry/``: what the gateway counts and keeps (Prometheus metrics, last requests, peers);
- ``tables/``: where the endpoint table comes from (the controller, DNS, a fixed table);
- beside them, what every layer shares: ``call`` (one request on its way), ``auth`` (API keys and
  their limits), ``cors`` (allowed origins), ``errors`` (the one refusal exception and the API error
  shapes) and ``settings``.
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
