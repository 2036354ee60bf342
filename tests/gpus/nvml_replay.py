"""A stand-in for the pynvml module that answers from the recorded H200 snapshot, for every test that
reads GPUs through the real adapter (``controller.gpus.nvml.read_inventory``).

Same function names, handles and NVMLError classes (with NVML's own messages) as pynvml; recorded
dicts come back as ctypes-like structs. The snapshot (tests/fixtures/nvml, a copy of
../shared/fixtures/nvml) was recorded without nvmlDeviceGetTotalEnergyConsumption: the replay
answers it NotSupported, as NVML does on a GPU without the counter, and a test that needs the
counter puts one in the device record, e.g. ``EnergyCounter`` (advances on every read) or
``Answers`` (a scripted series: resets, errors). ``device``, ``machine`` and ``synthetic`` build
multi-GPU and MIG machines from the recorded one.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# Copies of ../shared/fixtures/nvml (recorded on a real H200), so a fresh clone tests the same bytes.
NVML_FIXTURES = Path(os.environ.get("MODELCTL_NVML_FIXTURES", REPO / "tests" / "fixtures" / "nvml"))
SNAPSHOT = NVML_FIXTURES / "h200-nvml-snapshot.json"
SMI_CSV = NVML_FIXTURES / "h200-nvidia-smi-query.csv"
GiB = 1024**3
# Device functions the recording did not call; NotSupported is what NVML says for a missing counter.
NOT_RECORDED = ("nvmlDeviceGetTotalEnergyConsumption",)
NOT_SUPPORTED = "NVMLError_NotSupported: Not Supported"


class NVMLError(Exception):
    """Like pynvml.NVMLError: one subclass per NVML error, str() is NVML's message."""


def error_class(name: str) -> type[NVMLError]:
    return type(name, (NVMLError,), {})


ERRORS = {
    name: error_class(name)
    for name in (
        "NVMLError_NotSupported",
        "NVMLError_NotFound",
        "NVMLError_LibraryNotFound",
        "NVMLError_DriverNotLoaded",
        "NVMLError_NoPermission",
        "NVMLError_Unknown",
    )
}


def as_error(recorded: str) -> NVMLError:
    """'NVMLError_NotSupported: Not Supported' -> that error, as pynvml raises it."""
    name, _, message = recorded.partition(": ")
    return ERRORS.get(name, ERRORS["NVMLError_Unknown"])(message)


def as_struct(value: Any) -> Any:
    """Recorded dicts come back as ctypes-like structs (attributes), lists element by element."""
    if isinstance(value, dict):
        return SimpleNamespace(**value)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [SimpleNamespace(**v) for v in value]
    return value


class EnergyCounter:
    """nvmlDeviceGetTotalEnergyConsumption of a GPU drawing ``watts``: each read is ``seconds`` after
    the one before, so the counter (millijoules) advances by watts x seconds x 1000 between reads."""

    def __init__(self, start_mj: int, watts: float, seconds: float) -> None:
        self.next_mj, self.step_mj = start_mj, round(watts * seconds * 1000)

    def __call__(self) -> int:
        value, self.next_mj = self.next_mj, self.next_mj + self.step_mj
        return value


class Answers:
    """A scripted series of answers, one per read (the last repeats): values or recorded errors."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)

    def __call__(self) -> Any:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Handle:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record


class NvmlReplay:
    """Stands in for the pynvml module, answering from a recorded snapshot."""

    NVMLError = NVMLError

    def __init__(self, snapshot: dict[str, Any], *, init_error: str | None = None) -> None:
        self.snapshot = snapshot
        self.init_error = init_error
        self.calls: list[str] = []
        for name, cls in ERRORS.items():
            setattr(self, name, cls)

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error:
            raise as_error(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        return Handle(self.snapshot["devices"][index])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, index: int) -> Handle:
        migs = handle.record.get("nvmlDeviceGetMigDeviceHandleByIndex") or []
        if index >= len(migs) or migs[index] is None:
            raise as_error("NVMLError_NotFound: Not Found")
        return Handle(migs[index])

    def __getattr__(self, name: str) -> Any:
        if name in self.snapshot["calls"]:
            return lambda: self.answer(self.snapshot["calls"][name])
        if name.startswith("nvmlDevice"):
            return lambda handle, *_: self.answer(self.recorded(handle, name))
        raise AttributeError(name)

    def recorded(self, handle: Handle, name: str) -> Any:
        if name in NOT_RECORDED:
            return handle.record.get(name, NOT_SUPPORTED)
        return handle.record[name]  # a KeyError: the adapter asked for something never recorded

    def answer(self, recorded: Any) -> Any:
        if isinstance(recorded, Callable):  # type: ignore[arg-type]
            recorded = recorded()
        if isinstance(recorded, str) and recorded.startswith("NVMLError"):
            raise as_error(recorded)
        return as_struct(recorded)


# --- synthetic machines, made from the recorded H200 ---------------------------------------------------


def load_snapshot() -> dict[str, Any]:
    if not SNAPSHOT.is_file():
        pytest.skip(f"NVML snapshot not found at {SNAPSHOT} (set MODELCTL_NVML_FIXTURES)")
    data: dict[str, Any] = json.loads(SNAPSHOT.read_text())
    return data


def device(base: dict[str, Any], index: int, *, used: int = 0, procs: list[Any] | None = None) -> Any:
    """A copy of the recorded device as GPU ``index``: its own UUID, ``used`` more bytes in use."""
    record = copy.deepcopy(base)
    record["nvmlDeviceGetUUID"] = base["nvmlDeviceGetUUID"][:-4] + f"{index:04x}"
    record["nvmlDeviceGetMinorNumber"] = index
    memory = record["nvmlDeviceGetMemoryInfo"]
    memory["used"] += used
    memory["free"] -= used
    record["nvmlDeviceGetComputeRunningProcesses"] = procs or []
    return record


def machine(snapshot: dict[str, Any], devices: list[Any]) -> dict[str, Any]:
    data = copy.deepcopy(snapshot)
    data["devices"] = devices
    data["calls"]["nvmlDeviceGetCount"] = len(devices)
    return data


def proc(pid: int, gib: float) -> dict[str, int]:
    return {"pid": pid, "usedGpuMemory": int(gib * GiB)}


def mig_device(base: dict[str, Any], gi: int, profile: str, gib: float, used: int = 0) -> dict[str, Any]:
    total = int(gib * GiB)
    return {
        "nvmlDeviceGetUUID": f"MIG-5e2b1c1a-0d6f-5c7e-9a41-8f3b2c1d{gi:04x}",
        "nvmlDeviceGetName": f"{base['nvmlDeviceGetName']} MIG {profile}",
        "nvmlDeviceGetMemoryInfo": {"total": total, "free": total - used, "used": used},
        "nvmlDeviceGetUtilizationRates": "NVMLError_NotSupported: Not Supported",  # as on MIG devices
        "nvmlDeviceGetComputeRunningProcesses": [],
        "nvmlDeviceGetGraphicsRunningProcesses": [],
    }


def synthetic(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Recorded-snapshot-shaped machines: 4 and 8 H200s, foreign processes, MIG on."""
    base = snapshot["devices"][0]
    mig_gpu = device(base, 0)
    mig_gpu["nvmlDeviceGetMigMode"] = [1, 1]
    mig_gpu["nvmlDeviceGetMaxMigDeviceCount"] = 7
    mig_gpu["nvmlDeviceGetMigDeviceHandleByIndex"] = [
        mig_device(base, 0, "3g.71gb", 71.0),
        None,  # an empty slot: NVML answers NotFound
        mig_device(base, 2, "2g.35gb", 35.0, used=int(20 * GiB)),
        mig_device(base, 3, "1g.18gb", 17.75),
    ]
    return {
        "h200": snapshot,
        "h200x4": machine(snapshot, [device(base, i, used=i * 256 * 1024**2) for i in range(4)]),
        "h200x8": machine(
            snapshot,
            [
                device(base, i, used=int(i * 10 * GiB), procs=[proc(1000 + i, i * 10)] if i else [])
                for i in range(8)
            ],
        ),
        "h200x2-foreign": machine(
            snapshot,
            [
                device(base, 0, used=int(100 * GiB), procs=[proc(4242, 100)]),
                device(base, 1, used=int(8 * GiB), procs=[{"pid": 777, "usedGpuMemory": None}]),
            ],
        ),
        "h200-mig": machine(snapshot, [mig_gpu, device(base, 1)]),
    }
