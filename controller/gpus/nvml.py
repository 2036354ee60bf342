"""NVML access (nvidia-ml-py, module ``pynvml``): the one place modelctl asks the driver about its
GPUs, turning the answers into an ``Inventory`` (``inventory``).

Never invent a value. No library, no driver, or an NVMLError from nvmlInit gives an empty Inventory
whose ``reason`` says why; a single query that fails (e.g. NotSupported) leaves that value None and
adds a note; NotSupported for power or the energy counter (GPUs before Volta have no counter) is an
answer, None without a note. ``read_inventory`` never raises for an NVML problem, and always calls
nvmlShutdown after a successful nvmlInit. The NVML module is a parameter, so tests replay recorded
output through the same code path a real GPU takes.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import replace
from typing import Any

from controller.gpus.inventory import Gpu, GpuProcess, Inventory, MigDevice, MigMode, Usage


def read_inventory(nvml: Any = None) -> Inventory:
    """Read every GPU's facts and usage. ``nvml``: the pynvml module or a stand-in (default: import
    pynvml). Returns an empty Inventory with ``reason`` when NVML cannot start; never raises for NVML.
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return Inventory(
                reason="NVML unavailable: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            )
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return Inventory(reason=f"NVML unavailable: {init_problem(nvml, exc)}")
    try:
        return read_initialised(nvml)
    finally:
        with contextlib.suppress(nvml.NVMLError):  # best effort once the values are read
            nvml.nvmlShutdown()


def init_problem(nvml: Any, exc: Exception) -> str:
    """The reason nvmlInit failed, in the words a user can act on."""
    if isinstance(exc, getattr(nvml, "NVMLError_LibraryNotFound", ())):
        return "libnvidia-ml.so.1 not found"
    if isinstance(exc, getattr(nvml, "NVMLError_DriverNotLoaded", ())):
        return "the NVIDIA driver is not loaded"
    return str(exc)


class Reader:
    """One inventory read: calls NVML, turns a failed query into None plus a note."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.notes: list[str] = []

    def query(self, where: str, function: str, *args: Any) -> Any:
        try:
            call = getattr(self.nvml, function)
        except AttributeError:
            self.notes.append(f"{where}: {function}: not in this nvidia-ml-py")
            return None
        try:
            return call(*args)
        except self.nvml.NVMLError as exc:
            self.notes.append(f"{where}: {function}: {exc}")
            return None

    def optional(self, where: str, function: str, *args: Any) -> Any:
        """Like ``query``, but NotSupported is an answer (None, no note): the device has no such value."""
        call = getattr(self.nvml, function, None)
        if call is None:
            self.notes.append(f"{where}: {function}: not in this nvidia-ml-py")
            return None
        try:
            return call(*args)
        except self.nvml.NVMLError as exc:
            if not isinstance(exc, getattr(self.nvml, "NVMLError_NotSupported", ())):
                self.notes.append(f"{where}: {function}: {exc}")
        return None


def read_initialised(nvml: Any) -> Inventory:
    reader = Reader(nvml)
    count = reader.query("system", "nvmlDeviceGetCount")
    gpus: list[Gpu] = []
    usage: list[Usage] = []
    for index in range(count or 0):
        handle = reader.query(f"GPU {index}", "nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            continue
        gpu, mig_handles = read_gpu(reader, index, handle)
        if gpu is None:
            continue
        gpus.append(gpu)
        where = f"GPU {index}"
        usage.append(with_power(reader, where, read_usage(reader, where, gpu.uuid, handle), handle))
        for mig, mig_handle in zip(gpu.mig_devices, mig_handles, strict=True):
            usage.append(read_usage(reader, f"MIG {index}/{mig.index}", mig.uuid, mig_handle))
    return Inventory(
        gpus=tuple(gpus),
        usage=tuple(usage),
        driver_version=text(reader.query("system", "nvmlSystemGetDriverVersion")),
        cuda_driver_version=reader.query("system", "nvmlSystemGetCudaDriverVersion_v2"),
        reason="" if gpus else no_gpu_reason(count),
        notes=tuple(reader.notes),
    )


def no_gpu_reason(count: int | None) -> str:
    return "NVML reports no GPUs" if count == 0 else "no GPU could be read (see notes)"


def read_gpu(reader: Reader, index: int, handle: Any) -> tuple[Gpu | None, list[Any]]:
    """The static facts of one GPU and the handles of its MIG devices; None without a UUID."""
    where = f"GPU {index}"
    uuid = text(reader.query(where, "nvmlDeviceGetUUID", handle))
    if uuid is None:
        return None, []  # a device without an identity cannot be placed or reported reliably
    memory = reader.query(where, "nvmlDeviceGetMemoryInfo", handle)
    capability = reader.query(where, "nvmlDeviceGetCudaComputeCapability", handle)
    mig_mode = read_mig_mode(reader, where, handle)
    migs = read_mig_devices(reader, index, handle) if mig_mode == "enabled" else []
    gpu = Gpu(
        index=index,
        uuid=uuid,
        name=text(reader.query(where, "nvmlDeviceGetName", handle)),
        memory_total=memory.total if memory is not None else None,
        compute_capability=(int(capability[0]), int(capability[1])) if capability else None,
        mig_mode=mig_mode,
        mig_devices=tuple(mig for mig, _ in migs),
    )
    return gpu, [h for _, h in migs]


def read_mig_mode(reader: Reader, where: str, handle: Any) -> MigMode | None:
    """NotSupported is an answer (this GPU has no MIG), not a failure."""
    try:
        current, _pending = reader.nvml.nvmlDeviceGetMigMode(handle)
    except reader.nvml.NVMLError as exc:
        if isinstance(exc, getattr(reader.nvml, "NVMLError_NotSupported", ())):
            return "unsupported"
        reader.notes.append(f"{where}: nvmlDeviceGetMigMode: {exc}")
        return None
    return "enabled" if current == 1 else "disabled"


def read_mig_devices(reader: Reader, parent: int, handle: Any) -> list[tuple[MigDevice, Any]]:
    """Every MIG device of a MIG-enabled GPU; an empty slot (NotFound) is skipped, not noted."""
    found: list[tuple[MigDevice, Any]] = []
    slots = reader.query(f"GPU {parent}", "nvmlDeviceGetMaxMigDeviceCount", handle) or 0
    for slot in range(slots):
        try:
            mig_handle = reader.nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except reader.nvml.NVMLError as exc:
            if not isinstance(exc, getattr(reader.nvml, "NVMLError_NotFound", ())):
                reader.notes.append(f"GPU {parent}: MIG slot {slot}: {exc}")
            continue
        mig = read_mig_device(reader, parent, slot, mig_handle)
        if mig is not None:
            found.append((mig, mig_handle))
    return found


def read_mig_device(reader: Reader, parent: int, slot: int, handle: Any) -> MigDevice | None:
    where = f"MIG {parent}/{slot}"
    uuid = text(reader.query(where, "nvmlDeviceGetUUID", handle))
    if uuid is None:
        return None
    memory = reader.query(where, "nvmlDeviceGetMemoryInfo", handle)
    return MigDevice(
        uuid=uuid,
        parent_index=parent,
        index=slot,
        name=text(reader.query(where, "nvmlDeviceGetName", handle)),
        memory_total=memory.total if memory is not None else None,
    )


def read_usage(reader: Reader, where: str, uuid: str, handle: Any) -> Usage:
    """Live memory, utilisation and processes of one GPU or MIG device (about 13 us on an H200)."""
    memory = reader.query(where, "nvmlDeviceGetMemoryInfo", handle)
    rates = reader.query(where, "nvmlDeviceGetUtilizationRates", handle)
    return Usage(
        uuid=uuid,
        memory_free=memory.free if memory is not None else None,
        memory_used=memory.used if memory is not None else None,
        utilization=rates.gpu if rates is not None else None,
        processes=read_processes(reader, where, handle),
    )


def with_power(reader: Reader, where: str, usage: Usage, handle: Any) -> Usage:
    """``usage`` with the GPU's power draw (NVML: milliwatts) and energy counter (millijoules)."""
    milliwatts = reader.optional(where, "nvmlDeviceGetPowerUsage", handle)
    energy = reader.optional(where, "nvmlDeviceGetTotalEnergyConsumption", handle)
    return replace(
        usage,
        power_w=None if milliwatts is None else int(milliwatts) / 1000,
        energy_mj=None if energy is None else int(energy),
    )


def read_processes(reader: Reader, where: str, handle: Any) -> tuple[GpuProcess, ...]:
    """Compute and graphics processes, one entry per pid (a process can be both)."""
    by_pid: dict[int, GpuProcess] = {}
    for function in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in reader.query(where, function, handle) or ():
            by_pid.setdefault(int(proc.pid), GpuProcess(int(proc.pid), proc.usedGpuMemory))
    return tuple(sorted(by_pid.values(), key=lambda p: p.pid))


def text(value: Any) -> str | None:
    """NVML strings: str in current pynvml, bytes in old versions."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
