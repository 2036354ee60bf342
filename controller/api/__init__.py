"""The controller's small internal HTTP API: the endpoint table for the gateway, and status.

It is the only channel between control plane and data plane, so the gateway needs no Docker socket:
the gateway reads the endpoint table here and reports its demand (``POST /v1/demand``, see
``controller.endpoints.demand``), which is how a request for a scaled-to-zero model starts it.
``GET /v1/endpoints?epoch=E&after=N&wait=S`` long-polls: it answers when the table is not version N of
epoch E (another epoch: at once, the controller restarted), or after S seconds with the unchanged
table. ``GET /v1/status`` is what ``modelctl status`` shows; every route reads the control loop's
published report (``reconcile.report``), and gives it commands only through
``reconcile.controls.Controls`` (a demand report, a replica's log, the manifests to preview);
``GET /metrics`` the control plane's Prometheus metrics (``telemetry.metrics``). ``GET /v1/events``
(``reconcile.events``) and ``GET /v1/replicas/{container}/logs`` serve the console (docs/console.md).

Keys, for when someone publishes the API beyond the host's loopback: by default it answers anyone
who can reach it (compose publishes it on 127.0.0.1 only; on the compose network only the gateway
calls it). With ``MODELCTL_CONTROLLER_KEYS_FILE`` (the gateway's keys file format) every ``/v1/*``
route wants ``Authorization: Bearer <key>``, the gateway's own calls included
(``MODELCTL_CONTROLLER_KEY`` on the gateway). What carries no data stays open: ``/healthz``,
``/metrics`` (as on the gateway), and the console's page and files (``/``, ``/console/...``), which
ask for a key in the browser. Keys are compared in constant time by the gateway's ``KeyCheck`` and
never logged. ``MODELCTL_METRICS_REQUIRE_KEY=true`` makes ``/metrics`` want a key too.

What it accepts, whoever asks (``guard_middleware``, then each route's typed body):

- a Host header it serves: loopback names (``localhost``, ``*.localhost``), IP addresses, the
  compose service name ``controller``, ``MODELCTL_API_HOST`` and ``MODELCTL_API_ALLOWED_HOSTS``;
  any other name gets 421, so a web page cannot reach the API through DNS rebinding (a name the
  page's site controls, resolved to 127.0.0.1). An address cannot be rebound: no check is needed.
- for a method other than GET/HEAD/OPTIONS, no ``Origin`` header, or the API's own origin (the
  console's page): a cross-site browser request gets 403.
- request bodies of ``application/json`` only (415; the cross-site ``text/plain`` a page may send
  without asking is refused), at most ``MAX_BODY`` bytes (413).
- bodies parsed into typed models with bounds (``DemandReport.parse``, ``api.plan``): a bad one
  gets 400 and a JSON error naming the field. Demand for names that are no model (or alias) the
  controller knows now is ignored and counted (``modelctl_demand_unknown_models_total``).

Every refusal is JSON (``{"error": ...}``), counted in ``modelctl_api_refused_total{status}``.
"""

from controller.api.app import create_api
from controller.api.control import replica_named
from controller.api.guard import key_middleware

__all__ = ["create_api", "key_middleware", "replica_named"]
