"""Placement: which GPUs (or MIG devices) each replica owns, or why it must wait.

A pure function over plain data (requests, an ``Inventory``, the current assignments), so every case
is a row in a table test and the same input always gives the same output. The reconciler builds the
requests, reads the inventory, and hands each placed replica's device IDs to its engine.

The rules:
- A replica asking for ``num_gpus: N`` gets N distinct devices of this machine, each with the asked
  memory free. MIG devices (on a GPU with MIG on) are units of their own, instead of their parent,
  and only for 1-device replicas: CUDA shows one MIG device per process, so no tensor parallel.
- Never oversubscribe. A unit offers its live free memory, plus what processes modelctl manages use
  (their memory is counted through their claims instead), minus every claim placed on it. Memory
  of processes modelctl does not manage (and the driver's reservation) stays taken, and a Pending
  reason names those processes. Without the managed pids, running replicas count twice:
  conservative, never over.
- Current assignments are kept in place while still valid (devices exist, right count, the claims
  fit the device's total). Kept replicas are already running, so live free memory is not held
  against them.
- The rest are placed largest first (GPUs, then bytes). Replicas of one model spread: each new
  replica prefers units on a physical GPU none of its siblings (the model's other replicas, kept or
  placed) uses, then units no sibling uses (another MIG device of a sibling's GPU shares its
  failure domain and bandwidth), and packs beside a sibling only when nothing else fits. Within
  that order, the best fit: the units with the least memory left after it, ties to the lowest
  index. So different models pack, which leaves whole GPUs for big models.
- vLLM preallocates ``--gpu-memory-utilization`` x total on each of its GPUs, so its claim is
  exactly that and the utilisation it gets matches its share; llama.cpp claims what it needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from controller.gpus.inventory import Gpu, GpuProcess, Inventory
from controller.placement.memory import GiB, gpu_need

if TYPE_CHECKING:
    from controller.manifests.model import LoadedModel

Slot = tuple[str, int]  # (model name, replica index)


@dataclass(frozen=True, slots=True)
class ReplicaRequest:
    """One replica that needs GPUs. ``memory`` is per GPU: bytes (int) or a fraction of it (float)."""

    model: str
    replica: int
    num_gpus: int
    memory: int | float
    engine: str = "llamacpp"

    def __post_init__(self) -> None:
        if self.num_gpus < 1:
            raise ValueError(f"replica {self.model}-{self.replica}: num_gpus must be >= 1 to place it")
        fraction = isinstance(self.memory, float)
        if self.memory <= 0 or (fraction and self.memory > 1):
            raise ValueError(f"replica {self.model}-{self.replica}: memory {self.memory} is not a size")

    @property
    def slot(self) -> Slot:
        return (self.model, self.replica)


@dataclass(frozen=True, slots=True)
class Current:
    """What runs now: each slot's device IDs, and the pids of the engine processes modelctl manages."""

    assignments: Mapping[Slot, tuple[str, ...]] = field(default_factory=dict)
    managed_pids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Assignment:
    model: str
    replica: int
    devices: tuple[str, ...]  # Docker DeviceRequest IDs: GPU index ("0") or MIG UUID
    memory: tuple[int, ...]  # bytes claimed on each device, in the order of ``devices``
    gpu_memory_utilization: float | None  # vLLM only: its --gpu-memory-utilization
    kept: bool  # True when the replica keeps the devices it already had

    @property
    def slot(self) -> Slot:
        return (self.model, self.replica)

    @property
    def memory_per_gpu(self) -> int:
        return max(self.memory)


@dataclass(frozen=True, slots=True)
class Pending:
    model: str
    replica: int
    reason: str

    @property
    def slot(self) -> Slot:
        return (self.model, self.replica)


@dataclass(frozen=True, slots=True)
class UnitState:
    """One placeable device after placement, for tables."""

    device: str
    label: str
    total: int
    available: int  # what it offered before this placement's claims
    claimed: int


@dataclass(frozen=True, slots=True)
class Placement:
    assignments: tuple[Assignment, ...] = ()
    pending: tuple[Pending, ...] = ()
    units: tuple[UnitState, ...] = ()
    notes: tuple[str, ...] = ()  # devices left out, assignments not kept, and why

    def assignment(self, slot: Slot) -> Assignment | None:
        return next((a for a in self.assignments if a.slot == slot), None)

    def reason(self, slot: Slot) -> str | None:
        return next((p.reason for p in self.pending if p.slot == slot), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True, slots=True)
class Unit:
    device: str  # the Docker device ID
    uuid: str
    label: str  # "GPU 0", "MIG 0/1"
    total: int
    available: int  # live free + managed processes' memory, before any claim
    mig: bool
    order: tuple[int, int]  # (physical GPU index, MIG slot or -1)
    foreign: tuple[GpuProcess, ...] = ()  # processes on it that modelctl does not manage


class Ledger:
    """Claims per unit during one placement, and which units and GPUs each model's replicas hold."""

    def __init__(self, units: Sequence[Unit]) -> None:
        self.units = list(units)
        self.claimed = {u.device: 0 for u in units}
        self.devices: dict[str, set[str]] = {}  # model -> devices its replicas hold
        self.gpus: dict[str, set[int]] = {}  # model -> physical GPU indices its replicas use

    def free(self, unit: Unit) -> int:
        return unit.available - self.claimed[unit.device]

    def claim(self, model: str, units: Sequence[Unit], amounts: Sequence[int]) -> None:
        for unit, amount in zip(units, amounts, strict=True):
            self.claimed[unit.device] += amount
            self.devices.setdefault(model, set()).add(unit.device)
            self.gpus.setdefault(model, set()).add(unit.order[0])

    def overlap(self, model: str, unit: Unit) -> int:
        """0: no replica of ``model`` on this unit's GPU; 1: one on another MIG device of it;
        2: one on this unit. Lower spreads the model's replicas further."""
        if unit.device in self.devices.get(model, ()):
            return 2
        return 1 if unit.order[0] in self.gpus.get(model, ()) else 0


def place(
    requests: Sequence[ReplicaRequest], inventory: Inventory, current: Current | None = None
) -> Placement:
    """Assign devices to every request that fits; the rest are Pending with a one-line reason.
    Deterministic; raises ValueError only for two requests with the same slot."""
    current = current or Current()
    check_unique(requests)
    units, notes = placeable_units(inventory, current.managed_pids)
    ledger = Ledger(units)
    assignments: list[Assignment] = []
    pending: list[Pending] = []
    for request in sorted(requests, key=lambda r: r.slot):
        if request.slot in current.assignments:
            kept = keep(request, current.assignments[request.slot], ledger, notes)
            if kept is not None:
                assignments.append(kept)
    placed = {a.slot for a in assignments}
    for request in sorted((r for r in requests if r.slot not in placed), key=lambda r: size_key(r, units)):
        result = place_one(request, ledger, inventory)
        if isinstance(result, Assignment):
            assignments.append(result)
        else:
            pending.append(result)
    return Placement(
        assignments=tuple(sorted(assignments, key=lambda a: a.slot)),
        pending=tuple(sorted(pending, key=lambda p: p.slot)),
        units=tuple(
            UnitState(u.device, u.label, u.total, u.available, ledger.claimed[u.device]) for u in units
        ),
        notes=tuple(notes),
    )


def check_unique(requests: Sequence[ReplicaRequest]) -> None:
    slots = [r.slot for r in requests]
    if len(set(slots)) != len(slots):
        raise ValueError("two placement requests for the same replica")


def size_key(request: ReplicaRequest, units: Sequence[Unit]) -> tuple[int, float, str, int]:
    """Largest first: more GPUs, then more bytes (a fraction counts against the largest unit)."""
    largest = max((u.total for u in units), default=0)
    nominal = request.memory * largest if isinstance(request.memory, float) else request.memory
    return (-request.num_gpus, -nominal, request.model, request.replica)


# --- units ----------------------------------------------------------------------------------------


def placeable_units(inventory: Inventory, managed_pids: frozenset[int]) -> tuple[list[Unit], list[str]]:
    """Every device a replica can own, with what it offers; notes for devices left out."""
    units: list[Unit] = []
    notes: list[str] = []
    for gpu in inventory.gpus:
        if gpu.mig_mode is None:
            notes.append(f"GPU {gpu.index}: MIG mode unknown, not placed on")
            continue
        for unit_id in unit_ids(gpu):
            unit = make_unit(inventory, gpu, *unit_id, managed_pids)
            if isinstance(unit, str):
                notes.append(unit)
            else:
                units.append(unit)
    return units, notes


def unit_ids(gpu: Gpu) -> list[tuple[str, str, str, int | None, int]]:
    """(device ID, UUID, label, total, MIG slot) of the units a GPU offers."""
    if gpu.mig_mode == "enabled":
        return [
            (m.uuid, m.uuid, f"MIG {gpu.index}/{m.index}", m.memory_total, m.index) for m in gpu.mig_devices
        ]
    return [(str(gpu.index), gpu.uuid, f"GPU {gpu.index}", gpu.memory_total, -1)]


def make_unit(
    inventory: Inventory,
    gpu: Gpu,
    device: str,
    uuid: str,
    label: str,
    total: int | None,
    slot: int,
    managed_pids: frozenset[int],
) -> Unit | str:
    """A Unit, or a note saying why the device cannot be placed on (never guess its memory)."""
    usage = inventory.usage_of(uuid)
    if total is None or usage is None or usage.memory_free is None:
        return f"{label}: memory unknown, not placed on"
    managed = sum(p.used_memory or 0 for p in usage.processes if p.pid in managed_pids)
    available = min(total, usage.memory_free + managed)
    foreign = tuple(p for p in usage.processes if p.pid not in managed_pids)
    return Unit(
        device, uuid, label, total, available, mig=slot >= 0, order=(gpu.index, slot), foreign=foreign
    )


# --- claims ---------------------------------------------------------------------------------------


def need_bytes(request: ReplicaRequest, total: int) -> int:
    if isinstance(request.memory, float):
        return math.ceil(request.memory * total)
    return request.memory


def utilization(request: ReplicaRequest, totals: Sequence[int]) -> float:
    """vLLM's --gpu-memory-utilization: at least the need on every one of its GPUs, 4 decimals."""
    if isinstance(request.memory, float):
        return request.memory
    share = max(request.memory / total for total in totals)
    return math.ceil(round(share * 10_000, 6)) / 10_000


def claims(request: ReplicaRequest, units: Sequence[Unit]) -> tuple[tuple[int, ...], float | None]:
    """Bytes claimed on each unit, and vLLM's utilisation (None for other engines)."""
    if request.engine != "vllm":
        return tuple(need_bytes(request, u.total) for u in units), None
    util = utilization(request, [u.total for u in units])
    return tuple(math.ceil(util * u.total) for u in units), util


def fits(request: ReplicaRequest, units: Sequence[Unit], free: Callable[[Unit], int]) -> bool:
    amounts, _ = claims(request, units)
    return all(amount <= free(u) for u, amount in zip(units, amounts, strict=True))


# --- keeping and placing --------------------------------------------------------------------------


def keep(
    request: ReplicaRequest, devices: tuple[str, ...], ledger: Ledger, notes: list[str]
) -> Assignment | None:
    """The current assignment, if still valid; else None (placed again) and a note why."""
    name = f"{request.model}-{request.replica}"
    by_id = {key: u for u in ledger.units for key in (u.device, u.uuid)}
    units = [by_id[d] for d in devices if d in by_id]
    problem = keep_problem(request, devices, units, ledger)
    if problem:
        notes.append(f"{name}: {problem}; placed again")
        return None
    amounts, util = claims(request, units)
    ledger.claim(request.model, units, amounts)
    return Assignment(request.model, request.replica, tuple(u.device for u in units), amounts, util, True)


def keep_problem(request: ReplicaRequest, devices: tuple[str, ...], units: list[Unit], ledger: Ledger) -> str:
    if len(units) != len(devices):
        return f"device {', '.join(d for d in devices if d not in {u.device for u in units})} is gone"
    if len({u.device for u in units}) != len(units) or len(units) != request.num_gpus:
        return f"has {len(set(devices))} device(s), needs {request.num_gpus}"
    if request.num_gpus > 1 and any(u.mig for u in units):
        return "MIG devices cannot be combined"
    amounts, _ = claims(request, units)
    for unit, amount in zip(units, amounts, strict=True):
        if ledger.claimed[unit.device] + amount > unit.total:
            return f"{unit.label} cannot hold its {gib(amount)} beside the replicas already on it"
    return ""


def place_one(request: ReplicaRequest, ledger: Ledger, inventory: Inventory) -> Assignment | Pending:
    """The fitting units that spread ``request``'s model furthest, best fit among them; or Pending."""
    candidates = [u for u in ledger.units if request.num_gpus == 1 or not u.mig]
    ranked = sorted((rank(request, u, ledger), u) for u in candidates if fits(request, [u], ledger.free))
    fitting = [u for _, u in ranked]
    chosen = fitting[: request.num_gpus]
    if len(chosen) < request.num_gpus or not fits(request, chosen, ledger.free):
        reason = pending_reason(request, candidates, fitting, ledger, inventory)
        return Pending(request.model, request.replica, reason)
    chosen.sort(key=lambda u: u.order)
    amounts, util = claims(request, chosen)
    ledger.claim(request.model, chosen, amounts)
    return Assignment(request.model, request.replica, tuple(u.device for u in chosen), amounts, util, False)


def rank(request: ReplicaRequest, unit: Unit, ledger: Ledger) -> tuple[int, int, tuple[int, int]]:
    """Sort key of a fitting unit: spread from siblings first, then least memory left, then index."""
    (amount,), _ = claims(request, [unit])
    return (ledger.overlap(request.model, unit), ledger.free(unit) - amount, unit.order)


def pending_reason(
    request: ReplicaRequest, candidates: list[Unit], fitting: list[Unit], ledger: Ledger, inventory: Inventory
) -> str:
    """One line: what the replica needs and the best the machine offers."""
    n = request.num_gpus
    wanted = f"{n} GPU{'s' if n > 1 else ''}"
    if not ledger.units:
        return f"needs {wanted}; no GPU to place on ({inventory.reason or 'inventory empty'})"
    if len(candidates) < n:
        mig = " (MIG devices cannot be combined)" if any(u.mig for u in ledger.units) else ""
        return f"needs {wanted}; this machine has {len(candidates)}{mig}"
    others = sorted((u for u in candidates if u not in fitting), key=lambda u: (-ledger.free(u), u.order))
    if not others:  # every unit fits alone; only a mixed-size set failed
        return f"needs {wanted} of one size; the fitting GPUs differ in memory"
    best = others[0]
    (amount,), _ = claims(request, [best])
    need = f"needs {wanted} with {gib(amount)} free{' each' if n > 1 else ''}"
    offer = f"{best.label} with {gib(max(ledger.free(best), 0))} free{foreign_note(best)}"
    if fitting:
        return f"{need}; {len(fitting)} {'has' if len(fitting) == 1 else 'have'} it, next best is {offer}"
    return f"{need}; best is {offer}"


def foreign_note(unit: Unit) -> str:
    """'; processes modelctl does not manage hold 4.0 GiB there (pid 77)', or '' without any."""
    if not unit.foreign:
        return ""
    known = sum(p.used_memory or 0 for p in unit.foreign)
    unknown = any(p.used_memory is None for p in unit.foreign)
    held = gib(known) if not unknown else f"{gib(known)} and more" if known else "memory of unknown size"
    pids = ", ".join(str(p.pid) for p in unit.foreign[:3]) + (", ..." if len(unit.foreign) > 3 else "")
    return f"; processes modelctl does not manage hold {held} there (pid {pids})"


def gib(value: int) -> str:
    return f"{value / GiB:.1f} GiB"


# --- from manifests -------------------------------------------------------------------------------


def requests_for(
    models: Sequence[LoadedModel],
    *,
    need: Callable[[LoadedModel], int | float] = gpu_need,
    counts: Mapping[str, int] | None = None,
) -> tuple[list[ReplicaRequest], list[Pending]]:
    """Placement requests for every replica of every model with num_gpus > 0: ``counts[name]``
    replicas (default: the manifest's min_count). A model whose memory need cannot be known gives
    Pending replicas with the reason instead. Reads weight headers."""
    from controller.errors import ModelctlError

    requests: list[ReplicaRequest] = []
    pending: list[Pending] = []
    for model in models:
        manifest = model.manifest
        count = manifest.min_count if counts is None else counts.get(model.name, manifest.min_count)
        if not manifest.num_gpus or not count:
            continue
        try:
            memory = need(model)
        except (ModelctlError, ValueError) as exc:
            pending.extend(Pending(model.name, i, str(exc)) for i in range(count))
            continue
        engine = manifest.resolved_engine
        requests.extend(
            ReplicaRequest(model.name, i, manifest.num_gpus, memory, engine) for i in range(count)
        )
    return requests, pending
