"""The last requests the gateway answered, per model: what the console's "last requests" table shows.

``GatewayMetrics`` counts requests; this keeps the last few of each model as they were: when, which
API, the status, the tokens the replica's usage reported, latency, time to first byte, the replica
and the name of the API key (never the key; None when the gateway is open). Request and answer
bodies are never kept, and there is no switch to keep them: a body is the client's data, not a
figure. Recording is one ``deque.append`` of a tuple on a ring of ``KEPT`` per model, so the request
path pays nothing it would notice; rows become JSON only when ``GET /metrics/requests`` asks.

With several worker processes each keeps its own rings; ``dump`` gives them as plain data inside
the metrics snapshot the workers already exchange (``peers.py``), and ``merged`` answers for the
whole gateway, newest first.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

KEPT = 50  # rows per model, per process and in the merged answer
# The snapshot key the rows travel under between workers (not a metric: ``render`` ignores it).
SNAPSHOT_KEY = "recent_requests"

# (time, api, status, prompt tokens, output tokens, latency s, ttfb s, replica, key name)
Row = tuple[float, str, int, int | None, int | None, float, float | None, str, str | None]


class Recent:
    """Per model, a ring of the last ``KEPT`` finished requests (event loop only: no lock)."""

    __slots__ = ("_rings",)

    def __init__(self) -> None:
        self._rings: dict[str, deque[Row]] = {}

    def add(
        self,
        model: str,
        api: str,
        status: int,
        tokens: tuple[int, int] | None,
        latency_s: float,
        ttfb_s: float | None,
        replica: str,
        key: str | None,
    ) -> None:
        """Record one finished request of ``model`` (a served name); the oldest row of its ring goes."""
        ring = self._rings.get(model)
        if ring is None:
            ring = self._rings[model] = deque(maxlen=KEPT)
        prompt, output = tokens if tokens is not None else (None, None)
        ring.append((time.time(), api, status, prompt, output, latency_s, ttfb_s, replica, key))

    def dump(self) -> list[list[Any]]:
        """This process's rows as plain JSON data: one ``[model, *row]`` each, oldest first per model."""
        return [[model, *row] for model, ring in self._rings.items() for row in ring]

    def merged(self, others: Iterable[Sequence[Sequence[Any]]] = ()) -> dict[str, list[dict[str, Any]]]:
        """Per model the newest ``KEPT`` rows of this process and ``others`` (their ``dump``s), as JSON."""
        rows: dict[str, list[Row]] = {model: list(ring) for model, ring in self._rings.items()}
        for dumped in others:
            for model, *row in dumped:
                rows.setdefault(model, []).append(tuple(row))
        return {model: _newest(found) for model, found in sorted(rows.items())}


def _newest(rows: list[Row]) -> list[dict[str, Any]]:
    """The newest ``KEPT`` of ``rows`` as JSON, newest first; of rows with the same time (the clock's
    resolution), the one added later first."""
    newest = heapq.nlargest(KEPT, enumerate(rows), key=lambda at: (at[1][0], at[0]))
    return [as_json(row) for _, row in newest]


def as_json(row: Row) -> dict[str, Any]:
    """One row in the shape of docs/console.md's ``/v1/console/requests``."""
    when, api, status, prompt, output, latency_s, ttfb_s, replica, key = row
    return {
        "time": rfc3339(when),
        "api": api,
        "status": status,
        "prompt_tokens": prompt,
        "output_tokens": output,
        "latency_s": round(latency_s, 6),
        "ttfb_s": None if ttfb_s is None else round(ttfb_s, 6),
        "replica": replica,
        "key": key,
    }


def rfc3339(unix_s: float) -> str:
    """``unix_s`` as an RFC 3339 UTC time with milliseconds (``2026-12-02T00:41:06.123Z``)."""
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
