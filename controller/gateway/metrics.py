"""Prometheus metrics for the data plane, in a registry of the app's own (never the global one).

Several gateway apps live in one test process, and a library must not write into the process-wide
default registry, so each app gets a ``CollectorRegistry`` and ``GET /metrics`` renders only that one.
Counters and histograms are recorded on the request path through cached label children (one dict
lookup each); in-flight requests, queue depths and ready replicas are read from the balancer, the
admission queues and the table at scrape time, which costs the hot path nothing.

Metrics (prefix ``modelctl_gateway_``): ``requests_total{model,replica,status}`` (replica "none" when
the gateway answered itself; model "none" when the request named no served model),
``request_duration_seconds{model}`` (to the last byte), ``time_to_first_byte_seconds{model}``,
``retries_total{model}``, ``tokens_total{model,kind}`` (from ``usage``: non-streamed JSON, and the
last SSE chunk of a stream that asked ``stream_options.include_usage``), ``in_flight{model,replica}``,
``queue_depth{model}``, ``ready_replicas{model}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.gateway.table import TableSource

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_REPLICA = "none"
UNROUTED = "none"  # the model label of requests that named no served model (400, 404)
# From a cached prompt (milliseconds) to a long generation on a slow model (minutes).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_USAGE = re.compile(rb'"usage"\s*:\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def usage_tokens(tail: bytes) -> tuple[int, int] | None:
    """Return (prompt, completion) tokens of the last ``"usage": {...}`` object in ``tail``, or None.

    ``tail`` is the end of a JSON body or of an event stream; a null usage counts as none. The key
    cannot hide inside a JSON string (its quotes would be escaped there).
    """
    start = tail.rfind(b'"usage"')
    if start < 0:
        return None
    match = _USAGE.match(tail, start)
    if match is None:
        return None
    prompt = _PROMPT.search(match.group(1))
    completion = _COMPLETION.search(match.group(1))
    if prompt is None and completion is None:
        return None
    return (int(prompt.group(1)) if prompt else 0, int(completion.group(1)) if completion else 0)


class GatewayMetrics:
    """The app's registry and the instruments the request path records into."""

    def __init__(
        self,
        source: TableSource,
        in_flight: Callable[[str], int],
        queue_depth: Callable[[str], int],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        prefix = "modelctl_gateway_"
        self._requests = Counter(
            prefix + "requests",
            "Requests answered, by model, replica and HTTP status.",
            ["model", "replica", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            prefix + "request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["model"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._ttfb = Histogram(
            prefix + "time_to_first_byte_seconds",
            "Time from request to the first byte of the replica's answer sent to the client.",
            ["model"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._retries = Counter(
            prefix + "retries",
            "Tries moved to another replica before the first byte.",
            ["model"],
            registry=self.registry,
        )
        self._tokens = Counter(
            prefix + "tokens",
            "Tokens reported in the replicas' usage, by kind (prompt, completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(source, in_flight, queue_depth))
        self._children: dict[tuple[Any, ...], Any] = {}

    def render(self) -> bytes:
        """Return the text exposition of this app's metrics."""
        return generate_latest(self.registry)

    def request(self, model: str, replica: str, status: int, duration_s: float) -> None:
        self._child(self._requests, model, replica, str(status)).inc()
        self._child(self._duration, model).observe(duration_s)

    def first_byte(self, model: str, ttfb_s: float) -> None:
        self._child(self._ttfb, model).observe(ttfb_s)

    def retry(self, model: str) -> None:
        self._child(self._retries, model).inc()

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self._child(self._tokens, model, "prompt").inc(prompt)
        self._child(self._tokens, model, "completion").inc(completion)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class _LiveCollector(Collector):
    """Gauges read at scrape time from the table, the balancer and the admission queues."""

    def __init__(
        self, source: TableSource, in_flight: Callable[[str], int], queue_depth: Callable[[str], int]
    ) -> None:
        self._source = source
        self._in_flight = in_flight
        self._queue_depth = queue_depth

    def collect(self) -> Iterator[Metric]:
        prefix = "modelctl_gateway_"
        in_flight = GaugeMetricFamily(
            prefix + "in_flight", "Requests in flight, by model and replica.", labels=["model", "replica"]
        )
        queued = GaugeMetricFamily(
            prefix + "queue_depth", "Requests waiting for a replica slot, by model.", labels=["model"]
        )
        ready = GaugeMetricFamily(prefix + "ready_replicas", "Ready replicas, by model.", labels=["model"])
        for model in self._source.current().models:
            for replica in model.replicas:
                in_flight.add_metric([model.name, replica.id], self._in_flight(replica.id))
            queued.add_metric([model.name], self._queue_depth(model.name))
            ready.add_metric([model.name], len(model.replicas))
        yield in_flight
        yield queued
        yield ready
