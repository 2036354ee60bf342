"""Part 3, foreign memory: this process takes 4 GiB of the GPU torch calls cuda:0 between NVML
reads, and placement must see it as memory modelctl does not manage (a replica that needs nearly
all of the unit goes Pending naming it), and as ours once its pid is one of ours. Needs torch with
CUDA on a live GPU; skipped, saying why, otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from controller.gpus.inventory import Inventory
from controller.gpus.nvml import read_inventory
from controller.placement.place import Current, ReplicaRequest, place, placeable_units
from gpucheck.common import GiB, Result, cuda0_uuid, free_of, judged, only_unit, skipped

HOLD = 4 * GiB  # what the foreign-memory part allocates on GPU 0


def target_unit(inventory: Inventory, uuid: str | None) -> tuple[str, str, str]:
    """(Docker device ID, UUID, label) of torch's cuda:0 in the NVML inventory (default: GPU 0)."""
    for gpu in inventory.gpus:
        if uuid == gpu.uuid:
            return str(gpu.index), gpu.uuid, f"GPU {gpu.index}"
        for mig in gpu.mig_devices:
            if uuid == mig.uuid:
                return mig.uuid, mig.uuid, f"MIG {gpu.index}/{mig.index}"
    gpu = inventory.gpus[0]
    return str(gpu.index), gpu.uuid, f"GPU {gpu.index}"


def foreign_part(inventory: Inventory, *, live: bool) -> Result:
    if not live:
        return skipped("a recorded inventory: no GPU of this machine to allocate on")
    if not inventory.gpus:
        return skipped(f"no GPU ({inventory.reason or 'none found'})")
    try:
        import torch
    except ImportError:
        return skipped("torch is not installed")
    if not torch.cuda.is_available():
        return skipped("torch sees no CUDA device")
    return hold_and_measure(torch, inventory)


def hold_and_measure(torch: Any, inventory: Inventory) -> Result:
    """Allocate HOLD bytes on cuda:0 between inventory reads; place against each read."""
    torch.zeros(1, device="cuda:0")  # the CUDA context first, so the drop measured is the allocation
    torch.cuda.synchronize()
    device, uuid, label = target_unit(inventory, cuda0_uuid(torch))
    before = read_inventory()
    try:
        block = torch.empty(HOLD, dtype=torch.uint8, device="cuda:0")
        torch.cuda.synchronize()
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        return {"status": "failed", "why": f"torch could not take {HOLD / GiB:.0f} GiB: {exc}"}
    held = read_inventory()
    del block
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    after = read_inventory()
    usage = held.usage_of(uuid)
    processes = (
        [] if usage is None else [{"pid": p.pid, "used_memory": p.used_memory} for p in usage.processes]
    )
    drop, back = free_of(before, uuid) - free_of(held, uuid), free_of(after, uuid) - free_of(held, uuid)
    mine = next((p for p in processes if p["pid"] == os.getpid()), None)
    big = next((p for p in processes if (p["used_memory"] or 0) >= HOLD), None)
    print(f"== foreign memory: {HOLD / GiB:.0f} GiB held on cuda:0 = {label} by pid {os.getpid()}")
    print(f"free before {free_of(before, uuid) / GiB:.2f} GiB, holding {free_of(held, uuid) / GiB:.2f} GiB "
          f"(dropped {drop / GiB:.2f} GiB), freed {free_of(after, uuid) / GiB:.2f} GiB")  # fmt: skip
    print(f"GPU processes while holding: {processes or 'none listed'}; managed_pids: (empty)")
    if mine is None and big is not None:
        print(
            f"this process is not listed by its pid; pid {big['pid']} holds the memory "
            "(NVML shows another PID namespace's pids)"
        )
    nearly_all = nearly_all_placements(before, held, device, mine or big)
    for name, text in nearly_all.items():
        print(f"{name}: {text}")
    print()
    holder = mine or big
    checks = {
        "free dropped by ~4 GiB": abs(drop - HOLD) < GiB // 2,
        "the holder is listed as a GPU process": holder is not None,
        "placed before": nearly_all["before"].startswith("Placed"),
        "Pending while held, naming the foreign memory": "does not manage hold" in nearly_all["holding"],
        "free memory back after free": abs(back - drop) < GiB // 2,
    }
    if "holding, its pid as ours" in nearly_all:
        checks["placed when its pid is ours"] = nearly_all["holding, its pid as ours"].startswith("Placed")
    return judged(checks, device=label, drop=drop, back=back, processes=processes, placements=nearly_all)


def nearly_all_placements(
    before: Inventory, held: Inventory, device: str, holder: dict[str, Any] | None
) -> dict[str, str]:
    """A replica needing all but 1 GiB of what ``device`` offered before the hold, placed on it
    alone before, while holding, and while holding with the holder's pid as one of ours."""
    units, _ = placeable_units(only_unit(before, device), frozenset())
    need = max(u.available for u in units) - GiB
    request = [ReplicaRequest("nearly-all", 0, 1, need, "llamacpp")]
    runs = {"before": (before, frozenset[int]()), "holding": (held, frozenset[int]())}
    if holder is not None:
        runs["holding, its pid as ours"] = (held, frozenset({int(holder["pid"])}))
    out = {}
    for name, (inventory, managed) in runs.items():
        placement = place(request, only_unit(inventory, device), Current(managed_pids=managed))
        a = placement.assignment(("nearly-all", 0))
        out[name] = (
            f"Placed on {','.join(a.devices)}" if a else f"Pending: {placement.reason(('nearly-all', 0))}"
        )
    return {"need": f"{need / GiB:.2f} GiB", **out}
