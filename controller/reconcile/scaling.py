"""How many replicas each model should have now: fixed, scaled from zero, autoscaled, or idle.

The gateway reports demand (``controller.endpoints.demand``); this module turns it into a replica
count per model between the manifest's ``min_count`` and ``max_count``. The rules:

- a fixed model (``replicas: N``) always has N;
- a model with no replica and a request waiting gets one at once (scale from zero);
- more replicas when the load (in flight + waiting) averaged over ``up_window_s`` needs them at
  ``target`` requests per replica, up to ``max_count``;
- fewer only when the *peak* load over the longer ``down_window_s`` fits in fewer, never below one
  while the model has been used within ``idle_timeout``: scaling down is slower than up, so a
  bursty load does not flap;
- down to ``min_count`` (0 = scaled to zero) once nothing was in flight or waiting for
  ``idle_timeout``.

``desired_count`` is the pure rule, tested by tables, and ``scale`` applies it to what the scaler
knows of a model (its ``Load``); ``Scaler`` keeps the load samples and each model's current count
between passes: a pass ``sample``s the demand while it reads, ``decide`` (``reconcile.decide``)
runs ``scale`` without changing anything, and the count the pass applied is ``settle``d after.
``pick_victim`` chooses which idle model to stop when a wanted one does not fit
(``ondemand.make_room``). A restarted controller starts from what runs (clamped to the bounds), so
it neither duplicates nor drops replicas it adopts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from controller.endpoints.demand import ModelDemand
from controller.manifests.document import ModelManifest


@dataclass(frozen=True, slots=True)
class ScalingSettings:
    # Scale up on the load averaged over this window: a steady load, not a one-second burst.
    up_window_s: float = 5.0
    # Scale down only when the peak load over this window fits in fewer replicas.
    down_window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the manifest allows: replica counts, requests per replica, idle time before min."""

    low: int
    high: int
    target: int
    idle_timeout_s: float

    @classmethod
    def of(cls, manifest: ModelManifest) -> Bounds:
        return cls(manifest.min_count, manifest.max_count, manifest.target, manifest.idle_timeout_s)


@dataclass(frozen=True, slots=True)
class Decision:
    count: int
    reason: str  # one line for status and logs


def desired_count(
    bounds: Bounds, current: int, *, average: float, peak: float, waiting: int, idle_s: float
) -> Decision:
    """The replica count for a model that has ``current`` now.

    ``average`` and ``peak`` are the load (in flight + waiting) over the up and down windows,
    ``waiting`` the requests held right now, ``idle_s`` how long nothing was in flight or waiting.
    """
    if bounds.low == bounds.high:
        return Decision(bounds.low, "fixed")
    needed = math.ceil(average / bounds.target - 1e-9)
    if current == 0:
        if not waiting:  # only a request waiting now starts a model (not the load of minutes ago)
            return Decision(0, f"idle for {idle_s:.0f}s: scaled to zero")
        return Decision(min(max(needed, 1), bounds.high), f"{waiting} request(s) waiting: starting")
    if needed > current:
        count = min(needed, bounds.high)
        return Decision(count, f"load {average:.1f} needs {needed} at {bounds.target} per replica")
    idle = bounds.idle_timeout_s > 0 and idle_s >= bounds.idle_timeout_s and not waiting
    if idle and current > bounds.low:
        return Decision(bounds.low, f"idle for {idle_s:.0f}s")
    fits = max(math.ceil(peak / bounds.target - 1e-9), bounds.low, 1 if current else 0)
    if fits < current:
        return Decision(fits, f"peak load {peak:.1f} fits in {fits}")
    return Decision(max(current, bounds.low), "steady")


def kept_alive(bounds: Bounds, keep_alive_s: float | None) -> Bounds:
    """``bounds`` with a client's keep-alive as the idle timeout (Ollama's ``keep_alive``): -1 keeps
    the model for ever, 0 lets it go as soon as nothing is in flight; None keeps the manifest's."""
    if keep_alive_s is None:
        return bounds
    if keep_alive_s < 0:
        return replace(bounds, idle_timeout_s=0.0)  # 0 is "never" for the rule
    return replace(bounds, idle_timeout_s=max(keep_alive_s, 1e-9))


@dataclass(frozen=True, slots=True)
class Load:
    """What the scaler knows of one model when a pass decides: plain data for ``scale``."""

    count: int | None = None  # the count it holds now; None: not seen yet (it starts from what runs)
    average: float = 0.0  # load (in flight + waiting) averaged over the up window
    peak: float = 0.0  # the highest load over the down window
    full_window: bool = False  # a whole down window was seen (else the past load is unknown)
    idle_s: float = 0.0  # since nothing was in flight or waiting


def scale(bounds: Bounds, load: Load, demand: ModelDemand, *, running: int) -> Decision:
    """The replica count for a model from what the scaler knows (``load``), its demand now and the
    replicas that exist (``running``: where an unseen model starts from). Pure."""
    bounds = kept_alive(bounds, demand.keep_alive_s)
    held = running if load.count is None else load.count
    current = min(max(held, bounds.low), bounds.high)
    peak = load.peak if load.full_window else max(load.peak, current * bounds.target)
    return desired_count(
        bounds, current, average=load.average, peak=peak, waiting=demand.waiting, idle_s=load.idle_s
    )


@dataclass(slots=True)
class _Record:
    since: float  # first seen: until a whole down window has passed, the past load is unknown
    count: int | None = None  # the count the last pass applied
    samples: deque[tuple[float, int]] = field(default_factory=deque)  # (time, load)


class Scaler:
    """Each on-demand model's current count and recent load; ``clock`` is wall time (seconds)."""

    def __init__(
        self, settings: ScalingSettings | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or ScalingSettings()
        self.clock = clock
        self.started = clock()  # a model nobody asked for since we started is idle from here
        self._records: dict[str, _Record] = {}

    def decide(self, name: str, bounds: Bounds, demand: ModelDemand, running: int) -> Decision:
        """Record this pass's load for ``name`` and return how many replicas it should have (and
        hold that count): ``sample``, ``scale`` and ``settle`` in one.

        ``running`` (replicas that exist now) seeds the count the first time a model is seen, so a
        restarted controller continues from what it adopts."""
        decision = scale(bounds, self.sample(name, demand), demand, running=running)
        self.settle(name, decision.count)
        return decision

    def sample(self, name: str, demand: ModelDemand) -> Load:
        """Record this pass's load for ``name``; returns what the scaler knows of it now."""
        now = self.clock()
        record = self._records.get(name)
        if record is None:
            record = self._records[name] = _Record(now)
        samples = record.samples
        samples.append((now, demand.load))
        while samples and samples[0][0] < now - self.settings.down_window_s:
            samples.popleft()
        return self._load(record, demand, now)

    def view(self, name: str, demand: ModelDemand) -> Load:
        """What ``sample`` would return now, recording nothing (a preview asks this)."""
        now = self.clock()
        record = self._records.get(name) or _Record(now)
        kept = [(t, load) for t, load in record.samples if t >= now - self.settings.down_window_s]
        samples = deque([*kept, (now, demand.load)])
        return self._load(_Record(record.since, record.count, samples), demand, now)

    def _load(self, record: _Record, demand: ModelDemand, now: float) -> Load:
        samples = record.samples
        recent = [load for t, load in samples if t >= now - self.settings.up_window_s]
        last = max(demand.last_active, self.started)
        return Load(
            count=record.count,
            average=sum(recent) / len(recent),
            peak=max(load for _, load in samples),
            full_window=now - record.since >= self.settings.down_window_s,
            idle_s=0.0 if demand.load else now - last,
        )

    def settle(self, name: str, count: int) -> None:
        """Hold ``count`` for ``name``: what the pass applied (the rule's, or an eviction's). The
        rule goes on from there."""
        record = self._records.get(name)
        if record is not None:
            record.count = count

    def forget(self, names: set[str]) -> None:
        """Drop models that left the manifests."""
        for gone in set(self._records) - names:
            del self._records[gone]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model as eviction sees it: may its idle replicas go to make room for another?"""

    name: str
    on_demand: bool
    count: int  # replicas it has now
    low: int  # its min_count: never below
    priority: int
    load: int  # in flight + waiting
    last_active: float


def pick_victim(wanting: Candidate, candidates: list[Candidate]) -> Candidate | None:
    """The model whose idle replicas to stop so that ``wanting`` fits, or None.

    Only on-demand models above their min_count with nothing in flight or waiting, and of no
    higher priority than ``wanting``; the lowest priority first, then the least recently used.
    Always-on models (min = max) and busy replicas are never evicted."""
    able = [
        c
        for c in candidates
        if c.name != wanting.name
        and c.on_demand
        and c.count > c.low
        and c.load == 0
        and c.priority <= wanting.priority
    ]
    return min(able, key=lambda c: (c.priority, c.last_active, c.name), default=None)
