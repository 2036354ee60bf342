"""Prometheus metrics for the data plane, in a registry of the app's own (never the global one).

Several gateway apps live in one test process, and a library must not write into the process-wide
default registry, so each app gets a ``CollectorRegistry`` and ``GET /metrics`` renders only that one.
Counters and histograms are plain dicts keyed by label tuples (``_Counter``, ``_Histogram``: one
dict update per observation, no lock, since the event loop is the only writer), rendered through
prometheus_client's text format at scrape time; prometheus_client's own label children cost several
times more per request. In-flight requests, queue depths and ready replicas are read from the
balancer, the admission queues and the table at scrape time, which costs the hot path nothing.

Metrics (prefix ``modelctl_gateway_``): ``requests_total{model,replica,status,api}`` (replica "none"
when the gateway answered itself; model "none" when the request named no served model, and a LoRA
adapter's own name for a request naming it, however it was named; ``api`` the
API the client spoke: openai, anthropic, responses, ollama, decided once per request from its path),
``request_duration_seconds{model}`` (to the last byte), ``time_to_first_byte_seconds{model}``,
``retries_total{model}``, ``tokens_total{model,kind,api}`` (from ``usage``: non-streamed JSON, the
last SSE chunk of a stream that asked ``stream_options.include_usage``, of every Messages and
Responses stream), ``key_requests_total{key,status}`` and ``key_tokens_total{key,kind}`` (per API
key *name*, only with named keys; never the key), ``cold_starts_total{model}``
(requests that found no ready replica and were held), ``held_seconds{model}`` (how long those were
held, until a replica took them or they were refused), ``in_flight{model,replica}``,
``queue_depth{model}``, ``ready_replicas{model}``.

With several worker processes (``workers.py``) each keeps its own figures; ``snapshot`` gives them as
plain JSON data and ``render(others)`` answers for the whole gateway: counters, histograms, in-flight
and queue depths summed over the processes, ready replicas the largest any process sees (each follows
the same table, so summing would multiply them), plus ``workers`` (processes counted). ``peers.py``
fetches the other processes' snapshots at scrape time. The snapshot also carries the last requests
per model (``recent.py``, under ``recent.SNAPSHOT_KEY``), so ``GET /metrics/requests`` answers for
all processes the same way.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_go_float

from controller.gateway.errors import ANTHROPIC, OPENAI, RESPONSES
from controller.gateway.tables.source import TableSource
from controller.gateway.telemetry.recent import SNAPSHOT_KEY, Recent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_REPLICA = "none"
UNROUTED = "none"  # the model label of requests that named no served model (400, 404)
# Seconds, from a cached prompt (milliseconds) to a long generation on a slow model (minutes); finer
# where LLM answers fall (time to first token 0.05-3 s): the console's p50/p95 are
# interpolated inside a bucket, and 0.1 -> 0.25 -> 0.5 -> 1 -> 2.5 was too coarse to tell 120 ms from 240.
_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5,
    2, 2.5, 3, 4, 5, 7.5, 10, 15, 30, 60, 120, 300, 600,
)  # fmt: skip
_USAGE = re.compile(rb'"usage"\s*:\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}')
# OpenAI's names, then Anthropic's and Responses' (whose prompt may be split into cached and not).
_PROMPT = re.compile(
    rb'"(?:prompt_tokens|input_tokens|cache_read_input_tokens|cache_creation_input_tokens)"\s*:\s*(\d+)'
)
_COMPLETION = re.compile(rb'"(?:completion_tokens|output_tokens)"\s*:\s*(\d+)')
_STATUS = {code: str(code) for code in range(100, 600)}

# The event that ends each API's streams (the APIs: ``errors.api_of``): a client that hangs up once
# it has that event was served (``relay.Relay._settle_left``).
STREAM_ENDS: dict[str, bytes] = {
    OPENAI: b"data: [DONE]",
    ANTHROPIC: b"event: message_stop",
    RESPONSES: b"event: response.completed",
}

# One process's figures as plain JSON data: per metric name, one row per label set, [labels, value,
# created] for counters, [labels, counts per bucket + sum, created] for histograms, [labels, value]
# for gauges. Same code on both ends, so the shapes agree.
Snapshot = dict[str, list[list[Any]]]

# Prometheus' own rendering of a bucket bound ("0.5", "1.0", "+Inf"); the library leaves it unannotated.
go_float: Callable[[float], str] = _untyped_go_float


class TokenSink(Protocol):
    """Who else counts a request's tokens (its API key's usage, ``auth.KeyUse``)."""

    def tokens(self, prompt: int, completion: int) -> None: ...


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
    prompts = _PROMPT.findall(match.group(1))
    completion = _COMPLETION.search(match.group(1))
    if not prompts and completion is None:
        return None
    return (sum(int(p) for p in prompts), int(completion.group(1)) if completion else 0)


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

    def dump(self) -> list[list[Any]]:
        return [[list(labels), value, self.created[labels]] for labels, value in self.values.items()]

    def merge(self, rows: Iterable[list[Any]]) -> None:
        """Add another process's series (from ``dump``); a series starts when it first did anywhere."""
        for labels, value, created in rows:
            key = tuple(labels)
            self.values[key] = self.values.get(key, 0.0) + value
            self.created[key] = min(self.created.get(key, created), created)

    def empty(self) -> _Counter:
        return _Counter(self.name, self.documentation, self.labelnames)

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

    def dump(self) -> list[list[Any]]:
        return [[list(labels), counts, self.created[labels]] for labels, counts in self.series.items()]

    def merge(self, rows: Iterable[list[Any]]) -> None:
        """Add another process's series (from ``dump``) bucket by bucket."""
        for labels, counts, created in rows:
            key = tuple(labels)
            mine = self.series.get(key)
            if mine is None:
                self.series[key] = list(counts)
                self.created[key] = created
                continue
            for i, count in enumerate(counts):
                mine[i] += count
            self.created[key] = min(self.created[key], created)

    def empty(self) -> _Histogram:
        return _Histogram(self.name, self.documentation, self.labelnames, self.bounds)

    def family(self, with_created: bool) -> Metric:
        family = Metric(self.name, self.documentation, "histogram")
        les = [*(go_float(b) for b in self.bounds), "+Inf"]
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


class _Gauge:
    """A labelled gauge read at scrape time; ``summed`` says how processes combine (sum, else max)."""

    __slots__ = ("documentation", "labelnames", "name", "summed", "values")

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], *, summed: bool) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.summed = summed
        self.values: dict[tuple[str, ...], float] = {}

    def dump(self) -> list[list[Any]]:
        return [[list(labels), value] for labels, value in self.values.items()]

    def merge(self, rows: Iterable[list[Any]]) -> None:
        """Combine another process's values (from ``dump``): summed, or the larger one."""
        for labels, value in rows:
            key = tuple(labels)
            mine = self.values.get(key)
            if mine is None:
                self.values[key] = value
            else:
                self.values[key] = mine + value if self.summed else max(mine, value)

    def empty(self) -> _Gauge:
        return _Gauge(self.name, self.documentation, self.labelnames, summed=self.summed)

    def family(self, with_created: bool) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


_Instrument = _Counter | _Histogram | _Gauge


class _Families(Collector):
    """Exposes instruments at scrape time; ``instruments`` is called on each scrape."""

    def __init__(self, instruments: Callable[[], Iterable[_Instrument]]) -> None:
        self._instruments = instruments

    def collect(self) -> Iterator[Metric]:
        with_created = getattr(prometheus_client.metrics, "_use_created", True)
        for instrument in self._instruments():
            yield instrument.family(with_created)


class GatewayMetrics:
    """The app's registry and the instruments the request path records into.

    Counters and histograms are plain dicts and lists written by the event loop (one writer, no
    locks, no label-child lookups) and turned into Prometheus families when scraped; the exposition
    is the one prometheus_client's Counter and Histogram give (``_total``, ``_bucket``, ``_count``,
    ``_sum``, ``_created``). In-flight requests, queue depths and ready replicas are read from the
    balancer, the admission queues and the table at scrape time.
    """

    def __init__(
        self,
        source: TableSource,
        in_flight: Callable[[str], int],
        queue_depth: Callable[[str], int],
    ) -> None:
        self._source = source
        self._in_flight = in_flight
        self._queue_depth = queue_depth
        self.registry = CollectorRegistry(auto_describe=True)
        self.recent = Recent()  # the last requests per model, beside the counters
        prefix = "modelctl_gateway_"
        self._requests = _Counter(
            prefix + "requests",
            "Requests answered, by model, replica, HTTP status and client API.",
            ("model", "replica", "status", "api"),
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
            "Tokens reported in the replicas' usage, by kind (prompt, completion) and client API.",
            ("model", "kind", "api"),
        )
        self._key_requests = _Counter(
            prefix + "key_requests",
            "Requests by API key name (never the key) and HTTP status.",
            ("key", "status"),
        )
        self._key_tokens = _Counter(
            prefix + "key_tokens",
            "Tokens in the replicas' usage, by API key name and kind (prompt, completion).",
            ("key", "kind"),
        )
        self._cold_starts = _Counter(
            prefix + "cold_starts",
            "Requests that found no ready replica of their model and were held for one.",
            ("model",),
        )
        self._held = _Histogram(
            prefix + "held_seconds",
            "Time requests that found no ready replica were held, until a replica took them or "
            "they were refused.",
            ("model",),
            _BUCKETS,
        )
        self._recorded = (
            self._requests,
            self._duration,
            self._ttfb,
            self._retries,
            self._tokens,
            self._cold_starts,
            self._held,
            self._key_requests,
            self._key_tokens,
        )
        self.registry.register(_Families(self._instruments))

    def render(self, others: Sequence[Snapshot] = ()) -> bytes:
        """Return the text exposition of this app's metrics, with ``others``' figures merged in.

        ``others`` are other worker processes' ``snapshot()``s; with any, the answer also carries
        ``modelctl_gateway_workers`` (the processes whose figures it holds).
        """
        if not others:
            return generate_latest(self.registry)
        merged = [instrument.empty() for instrument in self._instruments()]
        for snapshot in (self.snapshot(), *others):
            for instrument in merged:
                instrument.merge(snapshot.get(instrument.name, ()))
        workers = _Gauge(
            "modelctl_gateway_workers", "Worker processes whose figures this answer holds.", (), summed=True
        )
        workers.values[()] = 1 + len(others)
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Families(lambda: (*merged, workers)))
        return generate_latest(registry)

    def snapshot(self) -> Snapshot:
        """Return this process's figures as plain JSON data, for another worker's ``render``
        (and its last requests, for another worker's ``recent.merged``)."""
        figures = {instrument.name: instrument.dump() for instrument in self._instruments()}
        figures[SNAPSHOT_KEY] = self.recent.dump()
        return figures

    def request(self, model: str, replica: str, status: int, duration_s: float, api: str = OPENAI) -> None:
        self._requests.inc((model, replica, _STATUS.get(status) or str(status), api))
        self._duration.observe((model,), duration_s)

    def key_request(self, name: str, status: int) -> None:
        self._key_requests.inc((name, _STATUS.get(status) or str(status)))

    def first_byte(self, model: str, ttfb_s: float) -> None:
        self._ttfb.observe((model,), ttfb_s)

    def retry(self, model: str) -> None:
        self._retries.inc((model,))

    def cold_start(self, model: str) -> None:
        self._cold_starts.inc((model,))

    def held(self, model: str, held_s: float) -> None:
        self._held.observe((model,), held_s)

    def tokens(self, model: str, api: str, prompt: int, completion: int) -> None:
        self._tokens.inc((model, "prompt", api), prompt)
        self._tokens.inc((model, "completion", api), completion)

    def key_tokens(self, name: str, prompt: int, completion: int) -> None:
        self._key_tokens.inc((name, "prompt"), prompt)
        self._key_tokens.inc((name, "completion"), completion)

    def _instruments(self) -> tuple[_Instrument, ...]:
        return (*self._recorded, *self._live())

    def _live(self) -> tuple[_Gauge, _Gauge, _Gauge]:
        """The gauges, read now from the table, the balancer and the admission queues."""
        prefix = "modelctl_gateway_"
        in_flight = _Gauge(
            prefix + "in_flight",
            "Requests in flight, by model and replica.",
            ("model", "replica"),
            summed=True,
        )
        queued = _Gauge(
            prefix + "queue_depth", "Requests waiting for a replica slot, by model.", ("model",), summed=True
        )
        ready = _Gauge(prefix + "ready_replicas", "Ready replicas, by model.", ("model",), summed=False)
        for model in self._source.current().models:
            for replica in model.replicas:
                in_flight.values[(model.name, replica.id)] = self._in_flight(replica.id)
            queued.values[(model.name,)] = self._queue_depth(model.name)
            ready.values[(model.name,)] = len(model.replicas)
        return in_flight, queued, ready
