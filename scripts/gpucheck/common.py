"""What every part of the GPU check shares: a part's result (ok, skipped or failed, with why),
writing it under $OUT, and the few questions several parts ask of the NVML inventory and of torch
(narrow the inventory to one GPU or unit, free memory of a unit, the GPU torch calls cuda:0).

Kept apart so that each part's module holds only its own check, and a helper two parts need is
written once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from controller.gpus.inventory import Inventory

GiB = 1024**3
Result = dict[str, Any]  # {"status": "ok" | "skipped" | "failed", "why": ..., ...}


def skipped(why: str) -> Result:
    return {"status": "skipped", "why": why}


def judged(checks: dict[str, bool], **details: Any) -> Result:
    """ok when every check holds; failed naming the ones that do not."""
    failed = [name for name, good in checks.items() if not good]
    status = {"status": "failed", "why": f"failed: {', '.join(failed)}"} if failed else {"status": "ok"}
    return {**status, "checks": checks, **details}


def only_gpu(inventory: Inventory, index: int) -> Inventory:
    """``inventory`` with just GPU ``index`` (and its MIG devices), so placement can only use it."""
    gpu = next(g for g in inventory.gpus if g.index == index)
    uuids = {gpu.uuid, *(m.uuid for m in gpu.mig_devices)}
    return replace(inventory, gpus=(gpu,), usage=tuple(u for u in inventory.usage if u.uuid in uuids))


def only_unit(inventory: Inventory, device: str) -> Inventory:
    """``inventory`` with just the unit ``device`` (a GPU index, or one MIG device of its GPU)."""
    for gpu in inventory.gpus:
        if device == str(gpu.index):
            return only_gpu(inventory, gpu.index)
        mig = next((m for m in gpu.mig_devices if m.uuid == device), None)
        if mig is not None:
            usage = tuple(u for u in inventory.usage if u.uuid in (gpu.uuid, mig.uuid))
            return replace(inventory, gpus=(replace(gpu, mig_devices=(mig,)),), usage=usage)
    raise ValueError(f"no device {device} in the inventory")


def cuda0_uuid(torch: Any) -> str | None:
    """The NVML UUID of torch's cuda:0 ("GPU-..." or "MIG-..."), None where torch cannot say."""
    uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def free_of(inventory: Inventory, uuid: str) -> int:
    """NVML's free memory of the GPU or MIG device ``uuid``; -1 where it is not known."""
    usage = inventory.usage_of(uuid)
    return -1 if usage is None or usage.memory_free is None else usage.memory_free


def cuda_torch() -> Any:
    """torch when it is installed and sees a CUDA device, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def gpu_of(inventory: Inventory, uuid: str | None) -> Any:
    """The physical GPU that is, or holds the MIG device that is, ``uuid`` (default: the first)."""
    for gpu in inventory.gpus:
        if uuid in (gpu.uuid, *(m.uuid for m in gpu.mig_devices)):
            return gpu
    return inventory.gpus[0]


def write(out: str | None, name: str, text: str) -> None:
    """``text`` as the file ``name`` under ``out`` ($OUT), when it is set."""
    if out:
        Path(out, name).write_text(text + "\n")
