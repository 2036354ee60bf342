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
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from controller.gateway.table import TableSource

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_REPLICA = "none"
UNROUTED = "none"  # the model label of requests that named no served model (400, 404)
# From a cached prompt (milliseconds) to a long generation on a slow model (minutes).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_USAGE = re.compile(rb'"usage"\s*:\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_STATUS = {code: str(code) for code in range(100, 600)}


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


class _Counter:
    """A labelled counter kept in a plain dict: the event loop is the only writer, so no lock."""

    __slots__ = ("created", "documentation", "labelnames", "name", "values")

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        if labels in values:
            values[labels] += amount
        else:
            values[labels] = amount
            self.created[labels] = time.time()

    def family(self, with_created: bool) -> Metric:
        family = Metric(self.name, self.documentation, "counter")
        for labels, value in self.values.items():
            named = dict(zip(self.labelnames, labels, strict=True))
            family.add_sample(self.name + "_total", named, value)
            if with_created:
                family.add_sample(self.name + "_created", named, self.created[labels])
        return family


class _Histogram:
    """A labelled histogram: per label set one count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "created", "documentation", "labelnames", "name", "series")

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = bounds  # upper bounds, ascending, without +Inf
        self.series: dict[tuple[str, ...], list[float]] = {}  # counts per bucket, +Inf, then the sum
        self.created: dict[tuple[str, ...], float] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self.series.get(labels)
        if counts is None:
            counts = self.series[labels] = [0.0] * (len(self.bounds) + 2)
            self.created[labels] = time.time()
        counts[bisect_left(self.bounds, value)] += 1  # the first bucket with value <= le
        counts[-1] += value

    def family(self, with_created: bool) -> Metric:
        family = Metric(self.name, self.documentation, "histogram")
        les = [*(floatToGoString(b) for b in self.bounds), "+Inf"]
        for labels, counts in self.series.items():
            named = dict(zip(self.labelnames, labels, strict=True))
            total = 0.0
            for le, count in zip(les, counts, strict=False):
                total += count
                family.add_sample(self.name + "_bucket", {**named, "le": le}, total)
            family.add_sample(self.name + "_count", named, total)
            family.add_sample(self.name + "_sum", named, counts[-1])
            if with_created:
                family.add_sample(self.name + "_created", named, self.created[labels])
        return family


class _Recorded(Collector):
    """Exposes the request path's counters and histograms at scrape time."""

    def __init__(self, metrics: tuple[_Counter | _Histogram, ...]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        with_created = getattr(prometheus_client.metrics, "_use_created", True)
        for metric in self._metrics:
            yield metric.family(with_created)


class GatewayMetrics:
    """The app's registry and the instruments the request path records into.

    Counters and histograms are plain dicts and lists written by the event loop (one writer, no
    locks, no label-child lookups) and turned into Prometheus families when scraped; the exposition
    is the one prometheus_client's Counter and Histogram give (``_total``, ``_bucket``, ``_count``,
    ``_sum``, ``_created``).
    """

    def __init__(
        self,
        source: TableSource,
        in_flight: Callable[[str], int],
        queue_depth: Callable[[str], int],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        prefix = "modelctl_gateway_"
        self._requests = _Counter(
            prefix + "requests",
            "Requests answered, by model, replica and HTTP status.",
            ("model", "replica", "status"),
        )
        self._duration = _Histogram(
            prefix + "request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ("model",),
            _BUCKETS,
        )
        self._ttfb = _Histogram(
            prefix + "time_to_first_byte_seconds",
            "Time from request to the first byte of the replica's answer sent to the client.",
            ("model",),
            _BUCKETS,
        )
        self._retries = _Counter(
            prefix + "retries", "Tries moved to another replica before the first byte.", ("model",)
        )
        self._tokens = _Counter(
            prefix + "tokens",
            "Tokens reported in the replicas' usage, by kind (prompt, completion).",
            ("model", "kind"),
        )
        recorded = (self._requests, self._duration, self._ttfb, self._retries, self._tokens)
        self.registry.register(_Recorded(recorded))
        self.registry.register(_LiveCollector(source, in_flight, queue_depth))

    def render(self) -> bytes:
        """Return the text exposition of this app's metrics."""
        return generate_latest(self.registry)

    def request(self, model: str, replica: str, status: int, duration_s: float) -> None:
        self._requests.inc((model, replica, _STATUS.get(status) or str(status)))
        self._duration.observe((model,), duration_s)

    def first_byte(self, model: str, ttfb_s: float) -> None:
        self._ttfb.observe((model,), ttfb_s)

    def retry(self, model: str) -> None:
        self._retries.inc((model,))

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self._tokens.inc((model, "prompt"), prompt)
        self._tokens.inc((model, "completion"), completion)


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
