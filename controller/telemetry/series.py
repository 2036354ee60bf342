"""The console's charts and last requests: the gateway's figures, scraped into 15-minute series.

The gateway faces clients and holds no socket to the controller's internals, so the controller
reads it as Prometheus would: every ``step_s`` it GETs the gateway's ``/metrics`` (text exposition)
and ``/metrics/requests`` (the last requests per model, ``gateway/telemetry/recent.py``) over the internal
network, and keeps per model a ring of ``window_s / step_s`` points (180 by default: 15 minutes).
The page reads them at ``GET /v1/console/series`` and ``GET /v1/console/requests``; nothing is
stored anywhere else, so a restarted controller starts its charts empty.

Per point and model:
- ``requests_per_s``, ``errors_per_s``: deltas of ``modelctl_gateway_requests_total`` over the step.
  An error is an answer with status >= 400, except 499 (the client went away: nobody was failed).
  429 and 503 (overload, no replica) are errors: a client was refused.
- ``ttft_p50_s``, ``ttft_p95_s``: quantiles of the step's observations of
  ``modelctl_gateway_time_to_first_byte_seconds`` (the bucket deltas, interpolated within a bucket
  as Prometheus' ``histogram_quantile`` does); None when the step saw no first byte.
- ``output_tokens_per_s``: delta of ``modelctl_gateway_tokens_total{kind="completion"}``.
- ``queue_depth``, ``in_flight``: the gauges as scraped (in flight summed over replicas).
- ``joules_per_token``: asked of the energy meter, when the app gives one.

A counter that went down, or whose ``_created`` time changed, was reset (the gateway restarted):
its delta is then its whole new value, never negative. The first scrape, and every failed one,
gives a point with no rates (the chart shows a gap); the scrape after a failure measures over the
whole time since the last good one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

STEP_S = 5.0
WINDOW_S = 900.0
_P = "modelctl_gateway_"
UNROUTED = "none"  # the gateway's model label for requests that named no served model
CLIENT_LEFT = 499
FIELDS = (
    "requests_per_s",
    "errors_per_s",
    "ttft_p50_s",
    "ttft_p95_s",
    "output_tokens_per_s",
    "queue_depth",
    "in_flight",
    "joules_per_token",
)

Labels = tuple[tuple[str, str], ...]
# (unix seconds, then one value per FIELDS name)
Point = tuple[float | None, ...]
OnTokens = Callable[[float, str, float], None]
JoulesPerToken = Callable[[str], float | None]


def is_error(status: str) -> bool:
    """True for a status the charts count as an error: >= 400, but not 499 (the client left)."""
    code = int(status) if status.isdigit() else 0
    return code >= 400 and code != CLIENT_LEFT


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(upper bound, count)`` buckets (ascending, +Inf last), as
    Prometheus' ``histogram_quantile`` interpolates it; None when the buckets counted nothing."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    below_bound, below_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):  # in the open bucket: the largest finite bound is all we know
                return below_bound
            return below_bound + (bound - below_bound) * (rank - below_count) / (count - below_count)
        below_bound, below_count = bound, count
    return below_bound


@dataclass(frozen=True, slots=True)
class Scrape:
    """One /metrics document, its samples keyed by (sample name, sorted labels)."""

    t: float
    values: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, t: float, text: str) -> Scrape:
        """Raises ValueError when ``text`` is not a Prometheus text exposition."""
        values = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return cls(t, values)

    def samples(self, name: str) -> Iterable[tuple[dict[str, str], Labels, float]]:
        """(labels as a dict, labels as a key, value) of each sample called ``name``."""
        for (sample, labels), value in self.values.items():
            if sample == name:
                yield dict(labels), labels, value


def _without_le(labels: Labels) -> Labels:
    return tuple(pair for pair in labels if pair[0] != "le")


def _reset(cur: Scrape, prev: Scrape, base: str, labels: Labels, count: str) -> bool:
    """True if series ``base{labels}`` started again between the scrapes (its ``count`` sample
    went down, or its ``_created`` time changed)."""
    series = _without_le(labels)
    created = (base + "_created", series)
    if created in prev.values and created in cur.values and cur.values[created] != prev.values[created]:
        return True
    return cur.values.get((count, series), 0.0) < prev.values.get((count, series), 0.0)


def _delta(cur: Scrape, prev: Scrape, name: str, labels: Labels, base: str, count: str) -> float:
    """How much sample ``name{labels}`` grew since ``prev``; a reset series' whole value."""
    now = cur.values[(name, labels)]
    if _reset(cur, prev, base, labels, count):
        return now
    return max(0.0, now - prev.values.get((name, labels), 0.0))


class _Model:
    """One model's ring of points and its reset-proof count of output tokens."""

    __slots__ = ("output_tokens", "points")

    def __init__(self, size: int) -> None:
        self.points: deque[Point] = deque(maxlen=size)
        self.output_tokens: float | None = None  # cumulative, never going backwards

    def empty(self) -> bool:
        return all(value is None for point in self.points for value in point[1:])


class SeriesBook:
    """Per model, the points computed from successive scrapes (pure: the clock and text come in)."""

    def __init__(
        self,
        *,
        step_s: float = STEP_S,
        window_s: float = WINDOW_S,
        on_tokens: OnTokens | None = None,
        joules_per_token: JoulesPerToken | None = None,
    ) -> None:
        if step_s <= 0 or window_s < step_s:
            raise ValueError(f"need 0 < step_s <= window_s, got step_s={step_s} window_s={window_s}")
        self.step_s = step_s
        self.window_s = window_s
        self._size = round(window_s / step_s)
        self._on_tokens = on_tokens
        self._joules_per_token = joules_per_token
        self._models: dict[str, _Model] = {}
        self._last: Scrape | None = None  # the last good scrape

    def add(self, scrape: Scrape) -> None:
        """Add the point of ``scrape`` for every model it names or the book already holds."""
        prev = self._last
        names = self._names(scrape)
        for name in names:
            self._model(name)
        for name, model in list(self._models.items()):
            point = self._point(scrape, prev, name, model) if name in names else None
            self._append(name, model, point or self._gap(scrape.t, name))
        self._last = scrape

    def missed(self, t: float) -> None:
        """A scrape at ``t`` failed: every model gets a point without figures."""
        for name, model in list(self._models.items()):
            self._append(name, model, self._gap(t, name))

    def to_json(self) -> dict[str, dict[str, list[float | None]]]:
        """``models`` of docs/console.md's ``/v1/console/series``."""
        shown: dict[str, dict[str, list[float | None]]] = {}
        for name, model in sorted(self._models.items()):
            columns = list(zip(*model.points, strict=True))
            shown[name] = {"t": list(columns[0])} | {
                field: [_rounded(v) for v in column]
                for field, column in zip(FIELDS, columns[1:], strict=True)
            }
        return shown

    def _names(self, scrape: Scrape) -> set[str]:
        names = {
            labels["model"]
            for metric in (_P + "requests_total", _P + "ready_replicas", _P + "queue_depth")
            for labels, _, _ in scrape.samples(metric)
        }
        names.discard(UNROUTED)
        return names

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model(self._size)
        return model

    def _append(self, name: str, model: _Model, point: Point) -> None:
        model.points.append(point)
        if model.empty():  # nothing known of it for a whole window: it is gone
            del self._models[name]

    def _gap(self, t: float, name: str) -> Point:
        return (t, *([None] * (len(FIELDS) - 1)), self._energy(name))

    def _energy(self, name: str) -> float | None:
        return self._joules_per_token(name) if self._joules_per_token is not None else None

    def _point(self, cur: Scrape, prev: Scrape | None, name: str, model: _Model) -> Point:
        queue = _gauge(cur, _P + "queue_depth", name)
        in_flight = _gauge(cur, _P + "in_flight", name)
        self._count_tokens(cur, prev, name, model)
        if prev is None:
            rates: tuple[float | None, ...] = (None,) * 5
        else:
            rates = self._rates(cur, prev, name)
        return (cur.t, *rates, queue, in_flight, self._energy(name))

    def _rates(self, cur: Scrape, prev: Scrape, name: str) -> tuple[float | None, ...]:
        dt = cur.t - prev.t
        if dt <= 0:
            return (None,) * 5
        requests = errors = 0.0
        for labels, key, _ in cur.samples(_P + "requests_total"):
            if labels["model"] == name:
                d = _delta(cur, prev, _P + "requests_total", key, _P + "requests", _P + "requests_total")
                requests += d
                errors += d if is_error(labels.get("status", "")) else 0.0
        tokens = self._completion_delta(cur, prev, name)
        buckets = self._ttft_buckets(cur, prev, name)
        p50, p95 = quantile(0.5, buckets), quantile(0.95, buckets)
        return (requests / dt, errors / dt, p50, p95, tokens / dt)

    def _completion_delta(self, cur: Scrape, prev: Scrape, name: str) -> float:
        metric = _P + "tokens_total"
        return sum(
            _delta(cur, prev, metric, key, _P + "tokens", metric)
            for labels, key, _ in cur.samples(metric)
            if labels["model"] == name and labels.get("kind") == "completion"
        )

    def _ttft_buckets(self, cur: Scrape, prev: Scrape, name: str) -> list[tuple[float, float]]:
        base = _P + "time_to_first_byte_seconds"
        counts: dict[float, float] = {}
        for labels, key, _ in cur.samples(base + "_bucket"):
            if labels["model"] == name:
                grew = _delta(cur, prev, base + "_bucket", key, base, base + "_count")
                bound = float(labels["le"])
                counts[bound] = counts.get(bound, 0.0) + grew
        return sorted(counts.items())

    def _count_tokens(self, cur: Scrape, prev: Scrape | None, name: str, model: _Model) -> None:
        """Keep the model's output tokens counted across resets; hand them to ``on_tokens``."""
        metric = _P + "tokens_total"
        if prev is None or model.output_tokens is None:
            total = sum(
                v
                for labels, _, v in cur.samples(metric)
                if labels["model"] == name and labels.get("kind") == "completion"
            )
            model.output_tokens = total
        else:
            model.output_tokens += self._completion_delta(cur, prev, name)
        if self._on_tokens is not None:
            self._on_tokens(cur.t, name, model.output_tokens)


def _gauge(scrape: Scrape, metric: str, model: str) -> float | None:
    """The model's gauge summed over its series; None when the gateway has none (not in its table)."""
    values = [v for labels, _, v in scrape.samples(metric) if labels["model"] == model]
    return sum(values) if values else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class GatewayScraper:
    """Scrapes the gateway at ``url`` every ``step_s`` into a ``SeriesBook``; keeps its last requests.

    ``url`` may be set after construction (the app learns the in-process gateway's address once it
    listens); while it is None nothing is scraped and the console says why. ``on_tokens(now, model,
    total)`` gets each model's output tokens (cumulative, counted across gateway restarts) at every
    good scrape; ``joules_per_token(model)`` is asked once per point. Both come from the energy
    meter, when the app has one.
    """

    def __init__(
        self,
        url: str | None,
        *,
        step_s: float = STEP_S,
        window_s: float = WINDOW_S,
        on_tokens: OnTokens | None = None,
        joules_per_token: JoulesPerToken | None = None,
        clock: Callable[[], float] = time.time,
        key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.key = key  # sent as a bearer token: a gateway may want one on /metrics (never logged)
        self.book = SeriesBook(
            step_s=step_s, window_s=window_s, on_tokens=on_tokens, joules_per_token=joules_per_token
        )
        self._clock = clock
        self._series_error: str | None = None  # why the last scrape of /metrics failed
        self._requests_error: str | None = None
        self._requests: dict[str, Any] = {}
        self._scraped = False

    async def run(self) -> None:
        """Scrape every ``step_s`` until cancelled (a task beside the reconciler's)."""
        step = self.book.step_s
        timeout = aiohttp.ClientTimeout(total=max(1.0, step))
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                started = loop.time()
                await self.scrape(session)
                await asyncio.sleep(max(0.0, step - (loop.time() - started)))

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        """One scrape of both documents; a failure is remembered (and shown), never raised."""
        if self.url is None:
            return
        now = self._clock()
        try:
            text = await self._get(session, "/metrics", json=False)
            self.book.add(Scrape.parse(now, text))
            self._series_error = None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._series_error = self._failed("/metrics", exc)
            self.book.missed(now)
        try:
            document = await self._get(session, "/metrics/requests", json=True)
            self._requests = document["models"]
            self._requests_error = None
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            self._requests_error = self._failed("/metrics/requests", exc)
        self._scraped = True

    def series(self) -> dict[str, Any]:
        """The body of ``GET /v1/console/series`` (docs/console.md)."""
        reason = self._reason(self._series_error)
        return {
            "available": not reason,
            "reason": reason,
            "step_s": self.book.step_s,
            "window_s": self.book.window_s,
            "models": self.book.to_json(),
        }

    def requests(self) -> dict[str, Any]:
        """The body of ``GET /v1/console/requests`` (docs/console.md)."""
        reason = self._reason(self._requests_error)
        return {"available": not reason, "reason": reason, "models": self._requests}

    def _reason(self, error: str | None) -> str:
        if self.url is None:
            return "no gateway to scrape: MODELCTL_GATEWAY_URL is not set (compose sets http://gateway:8080)"
        if not self._scraped:
            return f"the gateway at {self.url} has not been scraped yet (every {self.book.step_s:g}s)"
        return error or ""

    async def _get(self, session: aiohttp.ClientSession, path: str, *, json: bool) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else None
        async with session.get(f"{self.url}{path}", headers=headers) as resp:
            if resp.status == 401:
                raise ValueError("HTTP 401: the gateway wants a key on /metrics; set MODELCTL_GATEWAY_KEY")
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            return await resp.json() if json else await resp.text()

    def _failed(self, path: str, exc: BaseException) -> str:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.debug("scraping %s%s failed: %s", self.url, path, reason)
        return f"scraping {self.url}{path} failed: {reason}"
