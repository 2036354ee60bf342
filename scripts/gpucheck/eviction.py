"""Part 4, eviction: the reconciler's own decision (``reconcile.decide``) and on-demand rule against
GPU 0's real inventory: an idle model (a stand-in holding the GPU, really with torch where it can)
is evicted for a wanted one when both do not fit, and the wanted one is placed once the idle one
is gone. Needs the manifest models (pydantic); skipped, saying so, without it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from controller.gpus.inventory import GpuProcess, Inventory
from controller.gpus.nvml import read_inventory
from controller.placement.place import placeable_units
from gpucheck.common import (
    GiB,
    Result,
    cuda0_uuid,
    cuda_torch,
    free_of,
    judged,
    only_gpu,
    only_unit,
    skipped,
)

SHARE = 0.6  # of a GPU, each of the eviction part's two models: they do not fit together
STAND_IN_PID = 999_999  # the idle replica's process where its memory is simulated


def eviction_part(inventory: Inventory, *, live: bool) -> Result:
    if not inventory.gpus:
        return skipped(f"no GPU ({inventory.reason or 'none found'})")
    try:
        from controller.reconcile.decide import Snapshot, decide
        from controller.reconcile.ondemand import OnDemand
        from controller.reconcile.scaling import Scaler
        from controller.runtime.observed import ObservedContainer
    except ImportError as exc:
        return skipped(f"{exc.name or exc} is not installed (the reconciler's manifests need it)")
    units, _ = placeable_units(only_gpu(inventory, inventory.gpus[0].index), frozenset())
    if not units:
        return skipped(f"GPU {inventory.gpus[0].index} offers no unit to place on")
    unit = max(units, key=lambda u: u.total)  # the GPU, or its largest MIG device
    amount = math.ceil(SHARE * unit.total)
    if unit.available < amount:
        return skipped(
            f"{unit.label} has {unit.available / GiB:.1f} GiB free; the check needs {SHARE:.0%} of it"
        )
    models, board = two_models()
    on_demand = OnDemand(demand=board, scaler=Scaler())
    idle = ObservedContainer(
        "id-idle-0", "c-idle-0", "idle", 0, "vllm", "h", "running",
        None, "10.0.0.2", 8000, "/health", 32, "", gpus=(unit.device,),
    )  # fmt: skip

    def reconcile_pass(machine: Inventory, observed: list[Any]) -> dict[str, Any]:
        """One pass's decision (``reconcile.decide``, as the controller makes it), then applied."""
        demand = board.current()
        snapshot = Snapshot(
            models=tuple(models),
            observed=tuple(observed),
            inventory=machine,
            demand=demand,
            loads=on_demand.loads(models, demand),
        )
        decision = decide(snapshot)
        on_demand.applied(decision.scaling, decision.evictions)
        desired = decision.desired
        return {
            "specs": {s.model: list(s.gpus.device_ids if s.gpus else ()) for s in desired.specs},
            "pending": [f"{r.model}-{r.replica}: {r.reason}" for r in desired.pending],
            "idle": on_demand.scaling["idle"].reason,
            "evictions": on_demand.evictions,
        }

    held, gone, how = idle_memory(inventory, unit.device, unit.uuid, amount, live=live)
    first = reconcile_pass(held, [idle])
    second = reconcile_pass(gone, [])
    print(f"== eviction on {unit.label} ({unit.device}): idle and wanted, {SHARE:.0%} of it each")
    print(f"the idle replica's memory: {how}")
    print(f"pass 1, idle running (a request waits for wanted): {json.dumps(first)}")
    print(f"pass 2, idle gone:                                 {json.dumps(second)}\n")
    checks = {
        "idle chosen for eviction": first["idle"] == "evicted for wanted" and first["evictions"] == 1,
        "wanted waits for it to leave": any("for stopped replicas to leave" in p for p in first["pending"]),
        "wanted placed once idle is gone": second["specs"] == {"wanted": [unit.device]},
        "one eviction in all": second["evictions"] == 1,
    }
    return judged(checks, device=unit.device, memory=how, passes=[first, second])


def two_models() -> tuple[list[Any], Any]:
    """Two on-demand vLLM models of SHARE of a GPU each, and the gateway's word: a request waits
    for "wanted", "idle" was last used long ago."""
    from controller.endpoints.demand import DemandReport, ModelDemand
    from controller.manifests.document import ModelManifest
    from controller.manifests.model import LoadedModel
    from controller.reconcile.demand import DemandBoard

    def model(name: str) -> LoadedModel:
        doc = {"name": name, "model": "hf://Qwen/Qwen2.5-0.5B-Instruct", "engine": "vllm", "num_gpus": 1,
               "gpu_memory": SHARE, "min_replicas": 0}  # fmt: skip
        return LoadedModel(ModelManifest.model_validate(doc), "gpu-check", 1, None)

    board = DemandBoard()
    demand = {"idle": ModelDemand(last_active=1.0), "wanted": ModelDemand(waiting=1)}
    board.record(DemandReport("gpu-check", demand))
    return [model("idle"), model("wanted")], board


def idle_memory(
    inventory: Inventory, device: str, uuid: str, amount: int, *, live: bool
) -> tuple[Inventory, Inventory, str]:
    """The unit's inventory while the idle replica holds ``amount`` bytes, and once it is gone.
    Live with torch on that device: this process really holds them between NVML reads; else the
    recorded usage with the bytes taken (as a process modelctl does not manage: the stand-in)."""
    torch = cuda_torch() if live else None
    if torch is not None and cuda0_uuid(torch) in (uuid, None):
        try:
            block = torch.empty(amount, dtype=torch.uint8, device="cuda:0")
            torch.cuda.synchronize()
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            torch = None
            note = f"torch could not hold it ({str(exc).splitlines()[0]}), so simulated"
        else:
            held = only_unit(read_inventory(), device)
            del block
            torch.cuda.empty_cache()
            torch.cuda.synchronize()
            free = f"{free_of(held, uuid) / GiB:.1f} GiB free while held"
            return (
                held,
                only_unit(read_inventory(), device),
                f"{amount / GiB:.1f} GiB held by torch here ({free})",
            )
    else:
        note = (
            "simulated (no torch with CUDA on this device)" if live else "simulated on the recorded inventory"
        )
    one = only_unit(inventory, device)
    usage = tuple(
        replace(
            u,
            memory_free=max((u.memory_free or 0) - amount, 0),
            processes=(*u.processes, GpuProcess(STAND_IN_PID, amount)),
        )
        if u.uuid == uuid
        else u
        for u in one.usage
    )
    return replace(one, usage=usage), one, f"{amount / GiB:.1f} GiB {note}"
