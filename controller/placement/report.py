"""Plain-text tables and JSON for the CLI's ``modelctl gpus`` and ``modelctl plan``.

Kept plain (no rich): the output goes to terminals, logs and CI alike, and a value NVML did not give
is shown as "-", never filled in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from controller.gpus.inventory import Gpu, Inventory, MigDevice, Usage
from controller.placement.memory import MemoryEstimate
from controller.placement.place import Assignment, Pending, Placement, UnitState

GiB = 1024**3
MiB = 1024**2
MISSING = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, trailing spaces trimmed."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [headers, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def gib(value: int | None) -> str:
    return MISSING if value is None else f"{value / GiB:.1f} GiB"


def shown(value: object) -> str:
    return MISSING if value is None else str(value)


# --- modelctl gpus -------------------------------------------------------------------------------

GPU_HEADERS = ("GPU", "NAME", "UUID", "MEMORY", "FREE", "USED", "UTIL", "CC", "MIG", "PROCESSES")


def gpus_table(inventory: Inventory) -> str:
    """One row per GPU and one per MIG device under it, then the driver, then notes."""
    if not inventory.gpus:
        return f"No GPUs: {inventory.reason or 'none found'}" + notes_text(inventory.notes)
    rows: list[list[str]] = []
    for gpu in inventory.gpus:
        rows.append(gpu_row(gpu, inventory.usage_of(gpu.uuid)))
        rows.extend(mig_row(gpu, mig, inventory.usage_of(mig.uuid)) for mig in gpu.mig_devices)
    driver = f"driver {shown(inventory.driver_version)}, CUDA {cuda_version(inventory.cuda_driver_version)}"
    return table(GPU_HEADERS, rows) + f"\n{driver}" + notes_text(inventory.notes)


def gpu_row(gpu: Gpu, usage: Usage | None) -> list[str]:
    capability = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else MISSING
    head = [str(gpu.index), shown(gpu.name), gpu.uuid, gib(gpu.memory_total)]
    return [*head, *usage_cells(usage), capability, shown(gpu.mig_mode), processes_cell(usage)]


def mig_row(gpu: Gpu, mig: MigDevice, usage: Usage | None) -> list[str]:
    head = [f"{gpu.index}/{mig.index}", shown(mig.name), mig.uuid, gib(mig.memory_total)]
    return [*head, *usage_cells(usage), "", "instance", processes_cell(usage)]


def usage_cells(usage: Usage | None) -> list[str]:
    if usage is None:
        return [MISSING, MISSING, MISSING]
    util = MISSING if usage.utilization is None else f"{usage.utilization}%"
    return [gib(usage.memory_free), gib(usage.memory_used), util]


def processes_cell(usage: Usage | None) -> str:
    """'pid 4242 (100.0 GiB), pid 777 (-)'; '' for none; '-' when usage is unknown."""
    if usage is None:
        return MISSING
    return ", ".join(f"pid {p.pid} ({gib(p.used_memory)})" for p in usage.processes)


def cuda_version(value: int | None) -> str:
    return MISSING if value is None else f"{value // 1000}.{value % 1000 // 10}"


def notes_text(notes: Sequence[str]) -> str:
    return "".join(f"\nnote: {n}" for n in notes)


def gpus_json(inventory: Inventory) -> str:
    return inventory.to_json()


# --- modelctl plan -------------------------------------------------------------------------------

PLAN_HEADERS = ("REPLICA", "STATE", "DEVICES", "MEMORY/GPU", "VLLM UTIL", "REASON")
DEVICE_HEADERS = ("DEVICE", "ID", "TOTAL", "OFFERED", "CLAIMED", "LEFT")


def plan_table(placement: Placement, *, pending: Sequence[Pending] = ()) -> str:
    """Replicas (placed, kept or Pending with the reason), then each device's memory, then notes.
    ``pending``: replicas that never reached placement (e.g. requests_for could not size them)."""
    rows = [assignment_row(a) for a in placement.assignments]
    rows += [pending_row(p) for p in (*pending, *placement.pending)]
    rows.sort(key=lambda r: r[0])
    text = table(PLAN_HEADERS, rows) if rows else "Nothing to place on GPUs."
    if placement.units:
        text += "\n\n" + table(DEVICE_HEADERS, [device_row(u) for u in placement.units])
    return text + notes_text(placement.notes)


def assignment_row(a: Assignment) -> list[str]:
    util = MISSING if a.gpu_memory_utilization is None else f"{a.gpu_memory_utilization:.4g}"
    state = "Kept" if a.kept else "Placed"
    return [f"{a.model}-{a.replica}", state, ",".join(a.devices), gib(a.memory_per_gpu), util, ""]


def pending_row(p: Pending) -> list[str]:
    return [f"{p.model}-{p.replica}", "Pending", MISSING, MISSING, MISSING, p.reason]


def device_row(unit: UnitState) -> list[str]:
    left = unit.available - unit.claimed
    return [unit.label, unit.device, gib(unit.total), gib(unit.available), gib(unit.claimed), gib(left)]


def plan_json(
    placement: Placement,
    *,
    pending: Sequence[Pending] = (),
    estimates: Mapping[str, MemoryEstimate] | None = None,
) -> str:
    """The placement as JSON; ``estimates``: each model's memory by part, in bytes (``estimates``)."""
    data = asdict(placement)
    data["pending"] = sorted(
        [*data["pending"], *(asdict(p) for p in pending)], key=lambda p: (p["model"], p["replica"])
    )
    if estimates is not None:
        data["estimates"] = {name: asdict(found) for name, found in sorted(estimates.items())}
    return json.dumps(data, indent=2)


# The parts of a replica's memory, in the order a reader adds them up; the files beside the weights
# get a column only when some model has them.
ESTIMATE_PARTS = (
    ("WEIGHTS", "weights"),
    ("KV CACHE", "kv_cache"),
    ("PROJECTOR", "projector"),
    ("DRAFT", "draft"),
    ("ADAPTERS", "adapters"),
    ("OVERHEAD", "overhead"),
    ("TOTAL", "total"),
)
OPTIONAL_PARTS = ("projector", "draft", "adapters")


def estimates_table(estimates: Mapping[str, MemoryEstimate]) -> str:
    """One row per model: the memory one replica needs, by part (``memory.MemoryEstimate``:
    overhead is per GPU, or the process's for a CPU replica; total counts it once)."""
    found = sorted(estimates.items())
    parts = [
        (header, attr)
        for header, attr in ESTIMATE_PARTS
        if attr not in OPTIONAL_PARTS or any(getattr(e, attr) for _, e in found)
    ]
    rows = [[name, *(size(getattr(e, attr)) for _, attr in parts)] for name, e in found]
    return table(("MODEL", *(header for header, _ in parts)), rows)


def size(value: int) -> str:
    """Bytes as people read them: '1.5 GiB', '92.1 MiB', '0 B'."""
    if value >= GiB:
        return f"{value / GiB:.1f} GiB"
    return f"{value / MiB:.1f} MiB" if value else "0 B"
