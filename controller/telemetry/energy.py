"""Energy per GPU, attributed to the replicas that own it, and joules per output token per model.

NVML's cumulative energy counter (``Usage.energy_mj``, millijoules since the driver loaded) gives the
joules a GPU used between two samples exactly; where a GPU has no counter, its power reading times
the seconds between samples stands in, and ``basis`` says so. A GPU one replica owns gives it all
its joules ("exclusive"); a GPU several replicas share gives each an equal part, and a model's
figure says which share of which GPU it got ("shared: 1/2 of GPU 0"): NVML cannot tell apart the
energy of two processes on one GPU, so the split is a stated convention, not a measurement. A GPU
with no replica of ours is not attributed to anyone. A counter that went backwards (driver reload,
wrap) gives no joules for that interval, never negative ones.

Joules per token: joules attributed to a model's replicas over a window (5 min) divided by the
output tokens the gateway counted in the same window (``modelctl_gateway_tokens_total{kind=
"completion"}``, handed over cumulative by the console's scraper through ``EnergyMeter.tokens``).
No tokens in the window: None, never a division by zero or a guess. No GPU: no figures at all,
``available`` false and NVML's reason.

``run_energy`` samples every few seconds beside the reconciler; ``controller.api.gpus`` serves
``/v1/gpus``;
``EnergyCollector`` adds ``modelctl_energy_joules_total{model,replica,gpu}`` and
``modelctl_energy_joules_per_token{model}`` to the controller's /metrics. Times are the caller's
clock (unix seconds by default); the meter only subtracts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.errors import ModelctlError
from controller.gpus.inventory import Gpu, Inventory, Usage
from controller.runtime.observed import ObservedContainer

if TYPE_CHECKING:
    from controller.reconcile.report import ReportStore

log = logging.getLogger(__name__)

WINDOW_S = 300.0  # joules per token over the last 5 minutes
INTERVAL_S = 5.0  # between samples
NOT_YET = "no GPU reading yet (the first sample is a few seconds after the controller starts)"


@dataclass(frozen=True, slots=True)
class Owner:
    """A replica on a GPU: its container, model, replica index and host PIDs (what NVML lists)."""

    container: str
    model: str
    replica: int
    pids: tuple[int, ...] = ()


Owners = Mapping[str, Sequence[Owner]]  # Docker device ID (GPU index, GPU or MIG UUID) -> replicas
Slot = tuple[str, int]


def owners_of(observed: Iterable[ObservedContainer], host_pids: Callable[[str], tuple[int, ...]]) -> Owners:
    """The replicas on each device their GPU request names, from the running containers."""
    found: dict[str, list[Owner]] = {}
    for c in observed:
        if not (c.running and c.gpus):
            continue
        owner = Owner(c.name, c.model, c.replica, host_pids(c.id))
        for device in c.gpus:
            found.setdefault(device, []).append(owner)
    return found


def owners_seen(observed: Iterable[ObservedContainer], pids: Mapping[Slot, frozenset[int]]) -> Owners:
    """``owners_of`` the containers and GPU processes (by slot) a reconcile pass read: the meter
    reuses the pass's Docker reads instead of listing containers and their processes again."""
    listed = list(observed)
    slot_of = {c.id: c.slot for c in listed}
    return owners_of(listed, lambda cid: tuple(sorted(pids.get(slot_of[cid], ()))))


def pass_owners(reports: ReportStore) -> Owners:
    """The owners as the reconciler's last pass saw them (its published report); none before its
    first pass."""
    seen = reports.current().snapshot
    return owners_seen(seen.observed, seen.pids) if seen is not None else {}


def devices_of(gpu: Gpu) -> set[str]:
    """Every device ID Docker may name this GPU by: its index, its UUID, its MIG devices' UUIDs."""
    return {str(gpu.index), gpu.uuid, *(m.uuid for m in gpu.mig_devices)}


def gpu_owners(gpu: Gpu, owners: Owners) -> list[Owner]:
    """The replicas on a physical GPU (on it whole or on one of its MIG devices), each once."""
    seen: dict[str, Owner] = {}
    for device in sorted(devices_of(gpu)):
        for owner in owners.get(device, ()):
            seen.setdefault(owner.container, owner)
    return sorted(seen.values(), key=lambda o: (o.model, o.replica, o.container))


@dataclass(frozen=True, slots=True)
class Reading:
    t: float
    energy_mj: int | None
    power_w: float | None


def read_of(now: float, usage: Usage | None) -> Reading:
    return Reading(now, None, None) if usage is None else Reading(now, usage.energy_mj, usage.power_w)


def joules_between(before: Reading | None, now: Reading) -> tuple[float, str] | None:
    """The joules a GPU used between two readings and how they were had ("counter" or "power");
    None for the first reading, a counter that went backwards, or nothing to measure with."""
    if before is None or now.t <= before.t:
        return None
    if before.energy_mj is not None and now.energy_mj is not None:
        delta = now.energy_mj - before.energy_mj
        return (delta / 1000, "counter") if delta >= 0 else None
    watts = [w for w in (before.power_w, now.power_w) if w is not None]
    if not watts:
        return None
    return sum(watts) / len(watts) * (now.t - before.t), "power"


def share_basis(gpu: Gpu, model: str, sharers: Sequence[Owner]) -> str:
    """How a model's part of one GPU is had: the whole GPU, or k of its n replicas' equal shares."""
    mine = sum(1 for o in sharers if o.model == model)
    return "exclusive" if mine == len(sharers) else f"shared: {mine}/{len(sharers)} of GPU {gpu.index}"


def model_basis(parts: Mapping[int, str], by_power: bool) -> str:
    """'exclusive', or each GPU's share ('shared: 1/2 of GPU 0; GPU 1 exclusive'); the power
    fallback named when a GPU had no energy counter."""
    if all(p == "exclusive" for p in parts.values()):
        text = "exclusive"
    else:
        text = "; ".join(p if p != "exclusive" else f"GPU {i} exclusive" for i, p in sorted(parts.items()))
    return f"{text} (power x time: no energy counter)" if by_power else text


@dataclass(slots=True)
class ModelEnergy:
    """One model's attributed joules and output tokens, as (time, amount) steps for the window."""

    joules: deque[tuple[float, float]] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    tokens_total: int | None = None  # the gateway's counter at its last reading
    tokens_since: float | None = None  # when tokens were first read: the window starts no earlier
    tokens_at: float | None = None  # the last token reading
    basis: str = ""

    def prune(self, before: float) -> None:
        for steps in (self.joules, self.tokens):
            while steps and steps[0][0] <= before:
                steps.popleft()


class EnergyMeter:
    """Cumulative joules per (model, replica, GPU) and windowed joules per token per model.

    ``sample`` and ``tokens`` are called from one event loop (the sampling task, the scraper);
    the readers (status, /v1/gpus, /metrics) only read what they left."""

    def __init__(self, *, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.inventory: Inventory | None = None  # the last sample's
        self.owners: Owners = {}
        self.now: float | None = None  # the last sample's or token reading's time
        self.readings: dict[str, Reading] = {}  # GPU UUID -> its last reading
        self.joules_total: dict[tuple[str, int, str], float] = {}  # (model, replica, GPU index)
        self.models: dict[str, ModelEnergy] = {}

    def sample(self, now: float, inventory: Inventory, owners: Owners) -> None:
        """Attribute what each GPU used since the last sample to the replicas on it now."""
        self.inventory, self.owners, self.now = inventory, owners, max(now, self.now or now)
        parts: dict[str, dict[int, str]] = {}
        by_power: set[str] = set()
        for gpu in inventory.gpus:
            reading = read_of(now, inventory.usage_of(gpu.uuid))
            used = joules_between(self.readings.get(gpu.uuid), reading)
            self.readings[gpu.uuid] = reading
            sharers = gpu_owners(gpu, owners)
            for owner in sharers:
                parts.setdefault(owner.model, {})[gpu.index] = share_basis(gpu, owner.model, sharers)
                if used is not None:
                    self.attribute(now, owner, gpu, used[0] / len(sharers))
                    if used[1] == "power":
                        by_power.add(owner.model)
        for model, shares in parts.items():
            self.model(model).basis = model_basis(shares, model in by_power)
        self.prune(now)

    def attribute(self, now: float, owner: Owner, gpu: Gpu, joules: float) -> None:
        key = (owner.model, owner.replica, str(gpu.index))
        self.joules_total[key] = self.joules_total.get(key, 0.0) + joules
        self.model(owner.model).joules.append((now, joules))

    def tokens(self, now: float, model: str, output_tokens_total: int | float) -> None:
        """The gateway's cumulative completion-token counter for ``model`` at ``now``. A counter
        lower than the last one (the gateway restarted) counts from zero again, like Prometheus."""
        entry = self.model(model)
        total = int(output_tokens_total)
        if entry.tokens_total is None:
            entry.tokens_since = now
        else:
            added = total - entry.tokens_total if total >= entry.tokens_total else total
            if added:
                entry.tokens.append((now, added))
        entry.tokens_total, entry.tokens_at = total, now
        self.now = max(now, self.now or now)

    def model(self, name: str) -> ModelEnergy:
        return self.models.setdefault(name, ModelEnergy())

    def prune(self, now: float) -> None:
        for entry in self.models.values():
            entry.prune(now - 2 * self.window_s)

    def window(self, model: str, now: float | None = None) -> tuple[float | None, int]:
        """(joules, output tokens) of ``model`` over the window. With token readings, the window
        ends at the last one and starts no earlier than the first, so both count the same seconds;
        without, it is the last ``window_s`` and the tokens are 0. Joules None: nothing measured."""
        entry = self.models.get(model)
        now = self.now if now is None else now
        if entry is None or now is None:
            return None, 0
        if entry.tokens_at is None or entry.tokens_since is None or entry.tokens_at <= now - self.window_s:
            start, end = now - self.window_s, now  # no counts from the gateway (or they stopped)
            tokens = 0
        else:
            end = entry.tokens_at
            start = max(end - self.window_s, entry.tokens_since)
            tokens = sum(n for t, n in entry.tokens if start < t <= end)
        steps = [j for t, j in entry.joules if start < t <= end]
        return (sum(steps) if steps else None), tokens

    def joules_per_token(self, model: str, now: float | None = None) -> float | None:
        """Joules per output token over the window; None without tokens or measured joules in it."""
        joules, tokens = self.window(model, now)
        return None if joules is None or tokens == 0 else joules / tokens

    def attributed(self, model: str) -> bool:
        return any(key[0] == model for key in self.joules_total) or model in self.on_gpus()

    def on_gpus(self) -> set[str]:
        return {o.model for owners in self.owners.values() for o in owners}

    def unavailable(self) -> str:
        """Why there are no energy figures; "" when there are."""
        inventory = self.inventory
        if inventory is None:
            return NOT_YET
        if not inventory.gpus:
            return f"no NVIDIA GPU ({inventory.reason or 'NVML lists none'})"
        usages = [inventory.usage_of(g.uuid) for g in inventory.gpus]
        if all(u is None or (u.energy_mj is None and u.power_w is None) for u in usages):
            return "NVML gives neither an energy counter nor a power reading for any GPU"
        return ""

    def status(self) -> dict[str, Any]:
        """The ``energy`` object of /v1/status (docs/console.md)."""
        missing = self.unavailable()
        rows = [] if missing else self.rows()
        reason = missing or ("" if rows else "no replica of this controller runs on a GPU")
        return {"available": not missing, "reason": reason, "window_s": self.window_s, "models": rows}

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for model in sorted(m for m in self.models if self.attributed(m)):
            joules, tokens = self.window(model)
            rows.append(
                {
                    "model": model,
                    "joules": round(joules or 0.0, 3),
                    "joules_per_token": self.joules_per_token(model),
                    "output_tokens": tokens,
                    "basis": self.models[model].basis,
                }
            )
        return rows

    def gpus(self) -> dict[str, Any]:
        """The /v1/gpus answer (docs/console.md): each GPU's memory (ours per replica, foreign,
        free), utilisation, power and energy counter, as of the last sample."""
        inventory = self.inventory
        if inventory is None or not inventory.gpus:
            reason = (
                NOT_YET if inventory is None else f"no NVIDIA GPU ({inventory.reason or 'NVML lists none'})"
            )
            return {"available": False, "reason": reason, "gpus": []}
        ours = {pid for owners in self.owners.values() for o in owners for pid in o.pids}
        return {
            "available": True,
            "reason": "",
            "gpus": [gpu_row(gpu, inventory, gpu_owners(gpu, self.owners), ours) for gpu in inventory.gpus],
        }


def gpu_row(gpu: Gpu, inventory: Inventory, owners: Sequence[Owner], ours: set[int]) -> dict[str, Any]:
    """One GPU of /v1/gpus. Memory per replica is NVML's per-process memory of its host PIDs on the
    GPU and its MIG devices; foreign is the processes no replica of ours has; None where unknown."""
    usage = inventory.usage_of(gpu.uuid)
    usages = [u for u in (usage, *(inventory.usage_of(m.uuid) for m in gpu.mig_devices)) if u is not None]
    processes = [p for u in usages for p in u.processes]
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "memory_total": gpu.memory_total,
        "memory_used": usage.memory_used if usage else None,
        "memory_free": usage.memory_free if usage else None,
        "foreign_bytes": sum(p.used_memory or 0 for p in processes if p.pid not in ours),
        "ours": [
            {
                "container": o.container,
                "model": o.model,
                "replica": o.replica,
                "bytes": memory_of(usages, set(o.pids)),
            }
            for o in owners
        ],
        "utilization_pct": usage.utilization if usage else None,
        "power_w": usage.power_w if usage else None,
        "energy_j": usage.energy_mj / 1000 if usage and usage.energy_mj is not None else None,
    }


def memory_of(usages: Sequence[Usage], pids: set[int]) -> int | None:
    """Bytes NVML lists for these PIDs; None when it lists them without their memory (or not at all)."""
    known = [p.used_memory for u in usages for p in u.processes if p.pid in pids]
    if not known or all(m is None for m in known):
        return None
    return sum(m or 0 for m in known)


async def run_energy(
    meter: EnergyMeter,
    read_inventory: Callable[[], Inventory],
    owners: Callable[[], Owners],
    interval_s: float = INTERVAL_S,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Sample until cancelled: NVML and the owners in a thread (both block), then ``meter.sample``.
    Owners that cannot be read (Docker away) attribute nothing for that interval, logged once."""
    last_error = ""
    while True:
        inventory = await asyncio.to_thread(read_inventory)
        found: Owners = {}
        if inventory.gpus:
            try:
                found = await asyncio.to_thread(owners)
                last_error = ""
            except ModelctlError as exc:
                if str(exc) != last_error:
                    log.warning("energy: cannot tell which replicas own the GPUs: %s", exc)
                last_error = str(exc)
        meter.sample(clock(), inventory, found)
        await asyncio.sleep(interval_s)


class EnergyCollector(Collector):
    """The meter's figures for the controller's /metrics; J/token only where it is known."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter

    def collect(self) -> Iterator[Metric]:
        joules = CounterMetricFamily(
            "modelctl_energy_joules",
            "GPU energy attributed to a replica (NVML's counter, or power x time without one; "
            "a shared GPU split equally among the replicas on it).",
            labels=["model", "replica", "gpu"],
        )
        for (model, replica, gpu), value in sorted(self.meter.joules_total.items()):
            joules.add_metric([model, str(replica), gpu], value)
        yield joules
        per_token = GaugeMetricFamily(
            "modelctl_energy_joules_per_token",
            f"GPU joules per output token over the last {self.meter.window_s:.0f} s.",
            labels=["model"],
        )
        for model in sorted(self.meter.models):
            ratio = self.meter.joules_per_token(model)
            if ratio is not None:
                per_token.add_metric([model], ratio)
        yield per_token
