"""What every answered request leaves behind, whichever API it came in: its metrics (status,
duration, time to first byte), its key's usage, a row among the model's last requests (never a
body), and a debug line. One place, so the OpenAI and Ollama surfaces count alike."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from controller.gateway.auth import KEY_USE
from controller.gateway.call import Call
from controller.gateway.telemetry.metrics import NO_REPLICA, UNROUTED, GatewayMetrics

log = logging.getLogger(__name__)


def record(
    metrics: GatewayMetrics,
    request: web.Request,
    call: Call | None,
    status: int,
    started: float,
    api: str,
    *,
    keyed: bool = True,
) -> None:
    """Count the answer to ``request`` (``call`` None: the gateway answered before resolving a model).

    ``keyed``: keys are configured, so the request may carry a ``KeyUse`` to record into."""
    elapsed = time.monotonic() - started
    # Labels only carry served model and adapter names: a client's unknown name would grow the series.
    model = call.model if call is not None else UNROUTED
    replica = call.replica if call is not None else NO_REPLICA
    metrics.request(model, replica, status, elapsed, api)
    if call is not None and call.first_byte_s is not None:
        metrics.first_byte(model, call.first_byte_s)
    user = request.get(KEY_USE) if keyed else None
    if user is not None:
        user.record(status)
    if call is not None:  # the last requests of a served model (a body never)
        key = user.name if user is not None else None
        metrics.recent.add(model, api, status, call.tokens, elapsed, call.first_byte_s, replica, key)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s model=%s -> %d in %.3fs", request.method, request.path, model, status, elapsed)
