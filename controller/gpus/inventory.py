"""What GPUs one machine has, as data: static facts (index, UUID, name, total memory, compute
capability, MIG mode and MIG devices) kept apart from live usage (free/used memory, utilisation,
processes, power, the energy counter). Facts change only when the machine does, usage every second.

Placement (``controller.placement.place``) reads both; the console's energy meter reads power and
the energy counter of each physical GPU. ``nvml`` reads an Inventory from the driver;
``Inventory.to_json`` / ``from_json`` save one (``modelctl gpus --json``) and plan against it
(``modelctl plan --inventory``). Never invent a value: what NVML cannot tell is None.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MigMode = Literal["enabled", "disabled", "unsupported"]


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG instance of a GPU: a placeable unit of its own (Docker takes its UUID as device ID)."""

    uuid: str
    parent_index: int
    index: int  # slot on the parent GPU, as nvmlDeviceGetMigDeviceHandleByIndex numbers them
    name: str | None
    memory_total: int | None  # bytes


@dataclass(frozen=True, slots=True)
class Gpu:
    """Static facts about one physical GPU."""

    index: int
    uuid: str
    name: str | None
    memory_total: int | None  # bytes
    compute_capability: tuple[int, int] | None
    mig_mode: MigMode | None  # None: the query failed (see Inventory.notes)
    mig_devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    used_memory: int | None  # bytes; None where NVML cannot tell (e.g. without permission)


@dataclass(frozen=True, slots=True)
class Usage:
    """Live usage of one device (a GPU or a MIG device), keyed by its UUID."""

    uuid: str
    memory_free: int | None  # bytes
    memory_used: int | None  # bytes, the driver's own reservation included
    utilization: int | None  # percent of time a kernel ran, over the driver's last sample period
    processes: tuple[GpuProcess, ...] = ()
    # Physical GPUs only (None on MIG devices): the board's draw now, and its cumulative energy since
    # the driver loaded (nvmlDeviceGetTotalEnergyConsumption, millijoules). None: NVML cannot tell.
    power_w: float | None = None
    energy_mj: int | None = None


@dataclass(frozen=True, slots=True)
class Inventory:
    """The GPUs of one machine: facts, live usage, and why anything is missing."""

    gpus: tuple[Gpu, ...] = ()
    usage: tuple[Usage, ...] = ()
    driver_version: str | None = None
    cuda_driver_version: int | None = None  # e.g. 13000 for CUDA 13.0
    reason: str = ""  # set when there are no GPUs to show, saying why
    notes: tuple[str, ...] = field(default=())  # per-query failures, one line each

    def usage_of(self, uuid: str) -> Usage | None:
        return next((u for u in self.usage if u.uuid == uuid), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Inventory:
        """Parse what ``to_json`` wrote. Raises ValueError on a malformed document."""
        try:
            return inventory_from_dict(json.loads(text))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not an inventory document: {exc!r}") from exc


def inventory_from_dict(data: dict[str, Any]) -> Inventory:
    gpus = tuple(gpu_from_dict(g) for g in data.get("gpus", ()))
    usage = tuple(
        Usage(**{**u, "processes": tuple(GpuProcess(**p) for p in u.get("processes", ()))})
        for u in data.get("usage", ())
    )
    return Inventory(
        gpus=gpus,
        usage=usage,
        driver_version=data.get("driver_version"),
        cuda_driver_version=data.get("cuda_driver_version"),
        reason=data.get("reason", ""),
        notes=tuple(data.get("notes", ())),
    )


def gpu_from_dict(data: dict[str, Any]) -> Gpu:
    capability = data.get("compute_capability")
    return Gpu(
        **{
            **data,
            "compute_capability": tuple(capability) if capability else None,
            "mig_devices": tuple(MigDevice(**m) for m in data.get("mig_devices", ())),
        }
    )
