#!/usr/bin/env python3
"""Check the NVML inventory, placement, foreign memory, eviction, energy and the memory estimates of
real models' shapes on a real GPU machine, in one call.

    PYTHONPATH=. python scripts/gpu-check.py [MODELS_DIR]      # default: ./examples
    PYTHONPATH=. python scripts/gpu-check.py --inventory tests/fixtures/inventories/h200-mig.json

For the lent GPU machine: nvidia-ml-py, pyyaml, perhaps torch; no Docker, no network, perhaps no
pydantic and no weights. Six parts, each printed and (with $OUT set) written as JSON there:

1. inventory (inventory.json): the real inventory, table and JSON, compared with nvidia-smi.
2. plan (plan.json): the manifests of MODELS_DIR plus a few synthetic ones (gpu_memory given, so
   no weights are read) placed onto this machine; replicas of one model spread over GPUs.
3. foreign memory (foreign.json): this process takes 4 GiB of GPU 0 with torch; the inventory read
   again shows the free memory ~4 GiB lower and this process as one modelctl does not manage, and a
   replica that needs nearly all of GPU 0 goes Pending with a reason naming it; freed, it is back.
   Skipped (saying why) without torch, CUDA or a live GPU.
4. eviction (eviction.json): the reconciler's on-demand rule against GPU 0's real inventory: an
   idle model (a stand-in container holding GPU 0) is evicted for a wanted one (a request waits)
   when both do not fit, and the wanted one is placed on GPU 0 once the idle one is gone. Needs the
   manifest models (pydantic); skipped, saying so, without it.
5. energy (energy.json): NVML's energy counter and power of the GPU torch calls cuda:0, read every
   second while a PyTorch bf16 matmul loop runs on it for 20 s (MODELCTL_GPU_CHECK_ENERGY_S), fed
   to the console's EnergyMeter as the controller does (this process the GPU's one replica, each
   matmul a "token"): joules, average watts, J per matmul and per TFLOP, the inventory after as
   JSON. Without torch a plain CPU busy loop runs instead (the GPU idles; said so); without
   aiohttp/prometheus_client (the meter's module needs them) the counter is read, the meter not.
6. shapes (shapes.json): the files beside the weights (issue 18) in the memory estimate, on this
   inventory. Header-only GGUFs with the real shapes of real models, sparse (extended to their
   real length, no data written: the weights cannot be here) in a temp folder: Llama-3.1-70B
   Q4_K_M split in 3 shards as llama-gguf-split writes them, Llama-3.1-8B Q4_K_M with Llama-3.2-1B
   Q4_K_M as draft, and Llama-3.1-8B with two rank-16 f16 LoRA adapters. Loaded by the manifest
   loader (roots, shards, adapter checks), estimated (context 8192 x 8 sequences), each placed
   alone with num_gpus 1: a table of weights / KV / draft / adapters / projector / overhead / total
   per GPU beside the NVML total and free memory of the GPU it landed on; each part checked
   against the arithmetic on the shapes written; whether the 70B fits an 80 GiB H100. Needs
   pydantic (the loader); skipped, saying so, without it.

Parts 1-2 import only controller.placement (standard library inside); the manifest loader
(pydantic) is used when importable, else the YAML is read directly. A summary (summary.json) ends
the output. Exit code 0 when every part is ok or skipped (no GPU is a result to print, not a
failure), 1 when a check failed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from controller.gpus.inventory import Gpu, GpuProcess, Inventory, Usage
from controller.gpus.nvml import read_inventory
from controller.placement.place import Current, Pending, Placement, ReplicaRequest, place, placeable_units
from controller.placement.report import gpus_json, gpus_table, plan_json, plan_table
from controller.placement.report import table as report_table

GiB = 1024**3
HOLD = 4 * GiB  # what the foreign-memory part allocates on GPU 0
SHARE = 0.6  # of a GPU, each of the eviction part's two models: they do not fit together
STAND_IN_PID = 999_999  # the idle replica's process where its memory is simulated

# The seed's example, verbatim plus gpu_memory (its weights are not here); a 1-GPU vLLM model; two
# llama.cpp replicas (spread when they can); and one that cannot fit anywhere.
SYNTHETIC: list[dict[str, Any]] = [
    {
        "name": "seed-example",
        "model": "path/to/model.safetensors",
        "engine": "vllm",
        "num_gpus": 2,
        "max_batch_size": 16,
        "gpu_memory": "40GiB",
    },
    {"name": "vllm-one", "model": "qwen", "engine": "vllm", "num_gpus": 1, "gpu_memory": 0.3},
    {"name": "shared", "model": "s.gguf", "replicas": 2, "num_gpus": 1, "gpu_memory": "20GiB"},
    {"name": "too-big", "model": "t.gguf", "num_gpus": 1, "gpu_memory": "4TiB"},
]

SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*", re.IGNORECASE)
UNITS = {
    "": 1,
    "B": 1,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "KI": 2**10,
    "MI": 2**20,
    "GI": 2**30,
    "TI": 2**40,
}

Result = dict[str, Any]  # {"status": "ok" | "skipped" | "failed", "why": ..., ...}


def skipped(why: str) -> Result:
    return {"status": "skipped", "why": why}


def judged(checks: dict[str, bool], **details: Any) -> Result:
    """ok when every check holds; failed naming the ones that do not."""
    failed = [name for name, good in checks.items() if not good]
    status = {"status": "failed", "why": f"failed: {', '.join(failed)}"} if failed else {"status": "ok"}
    return {**status, "checks": checks, **details}


# --- 2. plan ---------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """The manifest's size syntax ('40GiB', '500MB'); the manifests' own parse_size when importable."""
    try:
        from controller.manifests.sizes import parse_size as real

        return real(text)
    except ImportError:
        match = SIZE.fullmatch(text)
        if not match:
            raise ValueError(f"'{text}' is not a size") from None
        unit = (match.group(2) or "").upper().removesuffix("B")
        return int(float(match.group(1)) * UNITS[unit])


def to_requests(doc: dict[str, Any]) -> tuple[list[ReplicaRequest], list[Pending]]:
    """Placement requests from one manifest document, read directly (no pydantic, no weights)."""
    name = str(doc.get("name") or Path(str(doc["model"])).stem.lower())
    replicas, gpus = int(doc.get("replicas", 1)), int(doc.get("num_gpus", 0))
    engine = doc.get("engine") or ("llamacpp" if str(doc["model"]).endswith(".gguf") else "vllm")
    memory = doc.get("gpu_memory")
    if not gpus:
        return [], []
    if memory is None:
        reason = "weights are not on this machine and gpu_memory is not set"
        return [], [Pending(name, i, reason) for i in range(replicas)]
    need = parse_size(memory) if isinstance(memory, str) else float(memory)
    return [ReplicaRequest(name, i, gpus, need, engine) for i in range(replicas)], []


def manifest_documents(folder: Path) -> list[dict[str, Any]]:
    import yaml

    docs: list[dict[str, Any]] = []
    for file in sorted([*folder.glob("*.y*ml"), *folder.glob("*.json")]):
        docs.extend(d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict))
    return docs


def physical_gpu(inventory: Inventory) -> dict[str, int]:
    """Docker device ID (GPU index or MIG UUID) -> index of the physical GPU it is on."""
    ids = {str(g.index): g.index for g in inventory.gpus}
    return ids | {m.uuid: g.index for g in inventory.gpus for m in g.mig_devices}


def spread_lines(placement: Placement, inventory: Inventory) -> list[str]:
    """Per model with several placed replicas: on how many physical GPUs and units they landed."""
    gpu_of, label = physical_gpu(inventory), {u.device: u.label for u in placement.units}
    by_model: dict[str, list[tuple[str, ...]]] = {}
    for a in placement.assignments:
        by_model.setdefault(a.model, []).append(a.devices)
    lines = []
    for model, sets in sorted(by_model.items()):
        if len(sets) > 1:
            gpus = {gpu_of[d] for devices in sets for d in devices}
            units = {d for devices in sets for d in devices}
            where = "; ".join(",".join(label.get(d, d) for d in devices) for devices in sets)
            lines.append(
                f"{model}: {len(sets)} replicas on {len(gpus)} physical GPU(s), {len(units)} unit(s): {where}"
            )
    return lines


def plan_part(folder: Path, inventory: Inventory) -> tuple[Result, str]:
    docs = manifest_documents(folder) if folder.is_dir() else []
    cpu_only = [
        f"{d.get('name', d.get('model'))} x{d.get('replicas', 1)}" for d in docs if not d.get("num_gpus")
    ]
    requests: list[ReplicaRequest] = []
    pending: list[Pending] = []
    for doc in docs + SYNTHETIC:
        more, waiting = to_requests(doc)
        requests += more
        pending += waiting
    started = time.perf_counter()
    placement = place(requests, inventory, Current())
    place_ms = (time.perf_counter() - started) * 1000
    print(f"== plan: {folder}/ ({len(docs)} manifests) + {len(SYNTHETIC)} synthetic, in {place_ms:.2f} ms")
    if cpu_only:
        print(f"CPU only (num_gpus 0, not placed on GPUs): {', '.join(cpu_only)}")
    print(plan_table(placement, pending=pending) + "\n")
    spread = spread_lines(placement, inventory)
    print("== spreading\n" + ("\n".join(spread) or "no model has several placed replicas") + "\n")
    text = plan_json(placement, pending=pending)
    print(f"== plan JSON\n{text}\n")
    result = {
        "status": "ok",
        "placed": len(placement.assignments),
        "pending": len(placement.pending) + len(pending),
        "spread": spread,
    }
    return result, text


# --- 3. foreign memory -----------------------------------------------------------------------------


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


def free_of(inventory: Inventory, uuid: str) -> int:
    usage = inventory.usage_of(uuid)
    return -1 if usage is None or usage.memory_free is None else usage.memory_free


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


# --- 4. eviction -----------------------------------------------------------------------------------


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


def cuda_torch() -> Any:
    """torch when it is installed and sees a CUDA device, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


# --- 5. energy -------------------------------------------------------------------------------------

ENERGY_S = float(os.environ.get("MODELCTL_GPU_CHECK_ENERGY_S", "20"))
SAMPLE_S = 1.0
MATMUL_N = 8192  # bf16 square matrices: 2 * N^3 = 1.1 TFLOP per matmul
Load = Any  # Callable[[float], int]: run for about that many seconds, return the work units done


def energy_part(
    inventory: Inventory,
    *,
    live: bool,
    seconds: float = ENERGY_S,
    sample_s: float = SAMPLE_S,
    clock: Any = time.time,
) -> Result:
    if not live:
        return skipped("a recorded inventory: no GPU of this machine to measure")
    if not inventory.gpus:
        return skipped(f"no GPU ({inventory.reason or 'none found'})")
    torch = cuda_torch()
    steps = max(2, round(seconds / sample_s))
    run = partial(energy_run, steps=steps, sample_s=sample_s, clock=clock, read=read_inventory)
    if torch is None:
        what = "a CPU busy loop (torch with CUDA is missing: the GPU idles)"
        return run(inventory.gpus[0].index, busy_load, what, tflop_per_unit=None)
    what = f"a PyTorch bf16 {MATMUL_N}x{MATMUL_N} matmul loop on cuda:0"
    gpu = gpu_of(inventory, cuda0_uuid(torch))
    return run(gpu.index, matmul_load(torch), what, tflop_per_unit=2 * MATMUL_N**3 / 1e12)


def gpu_of(inventory: Inventory, uuid: str | None) -> Any:
    """The physical GPU that is, or holds the MIG device that is, ``uuid`` (default: the first)."""
    for gpu in inventory.gpus:
        if uuid in (gpu.uuid, *(m.uuid for m in gpu.mig_devices)):
            return gpu
    return inventory.gpus[0]


def matmul_load(torch: Any) -> Load:
    a = torch.randn(MATMUL_N, MATMUL_N, device="cuda:0", dtype=torch.bfloat16)
    b, c = torch.randn_like(a), torch.empty_like(a)

    def run(seconds: float) -> int:
        done, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(10):
                torch.matmul(a, b, out=c)
            torch.cuda.synchronize()  # count finished matmuls only
            done += 10
        return done

    return run


def busy_load(seconds: float) -> int:
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(10_000))
        done += 1
    return done


def energy_meter() -> tuple[Any, str]:
    """The console's EnergyMeter and Owner, or None and why (its module needs prometheus_client)."""
    try:
        from controller.telemetry.energy import EnergyMeter, Owner
    except ImportError as exc:
        return None, f"{exc.name or exc} is not installed: the console's meter not checked"
    return (EnergyMeter(), Owner), ""


def energy_run(
    index: int,
    load: Load,
    what: str,
    *,
    tflop_per_unit: float | None,
    steps: int,
    sample_s: float,
    clock: Any,
    read: Any,
) -> Result:
    """``steps`` intervals of ``load`` on GPU ``index``, NVML read between them and fed to the meter."""
    made, missing = energy_meter()
    owners = {str(index): [made[1]("gpu-check", "matmul", 0, (os.getpid(),))]} if made else {}
    readings, work = [], 0
    for step in range(steps + 1):
        if step:
            work += load(sample_s)
        t, inventory = clock(), read()
        gpu = next(g for g in inventory.gpus if g.index == index)
        usage = inventory.usage_of(gpu.uuid)
        readings.append((t, usage.energy_mj if usage else None, usage.power_w if usage else None))
        if made:
            made[0].sample(t, inventory, owners)
            made[0].tokens(t, "matmul", work)
    result = energy_figures(readings, work, what, made[0] if made else None, missing, tflop_per_unit)
    print_energy(index, result)
    print(f"== inventory after\n{inventory.to_json()}\n")
    return result


def energy_figures(
    readings: list[tuple[float, int | None, float | None]],
    work: int,
    what: str,
    meter: Any,
    missing: str,
    tflop_per_unit: float | None,
) -> Result:
    """Joules and watts from the first and last readings; checks that the counter, the power
    readings and the meter agree, and that the matmul loop drew more than idle."""
    (t0, first_mj, idle_w), (t1, last_mj, _) = readings[0], readings[-1]
    elapsed = t1 - t0
    counter_j = (last_mj - first_mj) / 1000 if first_mj is not None and last_mj is not None else None
    loaded = [w for _, _, w in readings[1:] if w is not None]
    mean_w = sum(loaded) / len(loaded) if loaded else None
    counter_w = counter_j / elapsed if counter_j is not None and elapsed > 0 else None
    details: dict[str, Any] = {
        "load": what, "seconds": round(elapsed, 3), "work": work, "counter_j": counter_j,
        "counter_avg_w": counter_w, "power_w": {"idle": idle_w, "mean_loaded": mean_w, "readings": loaded},
    }  # fmt: skip
    checks = {
        "power or the counter read every time": all(e is not None or w is not None for _, e, w in readings)
    }
    if counter_j is not None:
        checks["the counter advanced"] = counter_j > 0
    if counter_w is not None and mean_w:
        checks["counter's average within 25% of the power readings"] = (
            abs(counter_w - mean_w) <= 0.25 * mean_w
        )
    if tflop_per_unit is not None and mean_w is not None and idle_w is not None:
        checks["more power under the matmul loop than idle"] = mean_w > idle_w
    if tflop_per_unit is not None and work:
        joules = counter_j if counter_j is not None else (mean_w or 0.0) * elapsed
        details["j_per_tflop"] = joules / (work * tflop_per_unit)
    if meter is None:
        return judged(checks, **details, meter=missing)
    status = meter.status()
    meter_j = sum(meter.joules_total.values())
    details["meter"] = {"joules": meter_j, "j_per_matmul": meter.joules_per_token("matmul"), "status": status}
    basis = status["models"][0]["basis"] if status["models"] else ""
    checks["the meter attributes the whole GPU to its one replica"] = basis.startswith("exclusive")
    if counter_j is not None:
        checks["the meter's joules are the counter's"] = math.isclose(meter_j, counter_j, rel_tol=1e-9)
    return judged(checks, **details)


def print_energy(index: int, result: Result) -> None:
    def watts(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} W"

    power = result["power_w"]
    counter = result["counter_j"]
    print(f"== energy: GPU {index} under {result['load']}, {result['seconds']:.1f} s, {result['work']} units")
    average = f"{watts(result['counter_avg_w'])} average"
    print("counter: not supported" if counter is None else f"counter: {counter:.1f} J, {average}")
    print(f"power: idle {watts(power['idle'])}, loaded mean {watts(power['mean_loaded'])}")
    meter = result["meter"]
    if isinstance(meter, str):
        print(f"meter: {meter}")
    else:
        per = "-" if meter["j_per_matmul"] is None else f"{meter['j_per_matmul']:.3f}"
        basis = meter["status"]["models"][0]["basis"] if meter["status"]["models"] else "-"
        print(f"meter: {meter['joules']:.1f} J to gpu-check ({basis}), {per} J per unit of work")
    if result.get("j_per_tflop") is not None:
        print(f"{result['j_per_tflop']:.3f} J per TFLOP")
    print(f"checks: {json.dumps(result['checks'])}\n")


# --- 6. shapes -------------------------------------------------------------------------------------

MiB = 1024**2
SHAPES_CONTEXT, SHAPES_BATCH = 8192, 8  # each manifest's context_length and max_batch_size
# An 80 GiB H100 as NVML shows one (H100 80GB HBM3: 81559 MiB total), with as much in use at idle
# as the recorded H200 (615 MiB): stated figures, for the line on whether the 70B fits one.
H100_TOTAL = 81_559 * MiB
H100_FREE = H100_TOTAL - 615 * MiB
LORA_RANK = 16

# ggml type -> (GGUF type id, elements per block, bytes per block), from ggml's type traits: the
# script's own table, so the sums the estimate is checked against do not come from the reader.
GGML_TYPES = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
}
META_KINDS = {"u16": (2, "<H"), "u32": (4, "<I"), "i32": (5, "<i"), "f32": (6, "<f"), "str": (8, "")}
ALIGN = 32  # GGUF's default general.alignment

Tensor = tuple[str, tuple[int, ...], str]  # name, GGUF dims (ne0, the row length, first), ggml type
Meta = list[tuple[str, str, Any]]  # key, META_KINDS kind, value


@dataclass(frozen=True, slots=True)
class Llama:
    """A Llama model's numbers, as its config.json and GGUF state them."""

    name: str
    layers: int
    embd: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int = 128_256
    context: int = 131_072
    tied: bool = False  # no output.weight: token_embd is also the output (Llama 3.2 1B)
    is_70b: bool = False  # llama.cpp's LLM_TYPE_70B: attn_v at least Q5_K

    @property
    def head(self) -> int:
        return self.embd // self.heads

    def kv_bytes_per_token(self) -> int:
        return self.layers * self.kv_heads * 2 * self.head * 2  # key + value, f16


LLAMA_70B = Llama("Meta-Llama-3.1-70B-Instruct", 80, 8192, 64, 8, 28_672, is_70b=True)
LLAMA_8B = Llama("Meta-Llama-3.1-8B-Instruct", 32, 4096, 32, 8, 14_336)
LLAMA_1B = Llama("Llama-3.2-1B-Instruct", 16, 2048, 32, 8, 8192, tied=True)

SPLIT_MODEL, DRAFT_MODEL, LORA_MODEL = "llama-3.1-70b-split", "llama-3.1-8b-draft", "llama-3.1-8b-lora"
SPLIT_PREFIX = "llama-3.1-70b/Meta-Llama-3.1-70B-Instruct-Q4_K_M"
BASE_8B, DRAFT_1B = "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Llama-3.2-1B-Instruct-Q4_K_M.gguf"
ADAPTERS = ("lora-a", "lora-b")


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k_m_tensors(m: Llama) -> list[Tensor]:
    """Every tensor of ``m`` quantized Q4_K_M, typed as llama.cpp's llama_tensor_get_type does:
    Q4_K, but attn_v and ffn_down Q6_K on the ``more_bits`` layers (attn_v Q5_K on the others of a
    70B), the output (or tied embeddings) Q6_K, norms and rope factors F32; the converter's order."""
    kv = m.kv_heads * m.head
    tensors: list[Tensor] = [
        ("token_embd.weight", (m.embd, m.vocab), "Q6_K" if m.tied else "Q4_K"),
        ("rope_freqs.weight", (m.head // 2,), "F32"),
    ]
    for i in range(m.layers):
        more = more_bits(i, m.layers)
        tensors += [
            (f"blk.{i}.attn_norm.weight", (m.embd,), "F32"),
            (f"blk.{i}.attn_q.weight", (m.embd, m.embd), "Q4_K"),
            (f"blk.{i}.attn_k.weight", (m.embd, kv), "Q4_K"),
            (f"blk.{i}.attn_v.weight", (m.embd, kv), "Q6_K" if more else "Q5_K" if m.is_70b else "Q4_K"),
            (f"blk.{i}.attn_output.weight", (m.embd, m.embd), "Q4_K"),
            (f"blk.{i}.ffn_norm.weight", (m.embd,), "F32"),
            (f"blk.{i}.ffn_gate.weight", (m.embd, m.ffn), "Q4_K"),
            (f"blk.{i}.ffn_up.weight", (m.embd, m.ffn), "Q4_K"),
            (f"blk.{i}.ffn_down.weight", (m.ffn, m.embd), "Q6_K" if more else "Q4_K"),
        ]
    tensors.append(("output_norm.weight", (m.embd,), "F32"))
    return tensors if m.tied else [*tensors, ("output.weight", (m.embd, m.vocab), "Q6_K")]


def lora_tensors(m: Llama, rank: int) -> list[Tensor]:
    """A f16 LoRA adapter of ``rank`` on q, k, v and o of every layer, shaped as llama.cpp's
    convert_lora_to_gguf.py writes them: lora_a [input width, rank], lora_b [rank, output width]."""
    kv = m.kv_heads * m.head
    outputs = {"attn_q": m.embd, "attn_k": kv, "attn_v": kv, "attn_output": m.embd}
    return [
        (f"blk.{i}.{target}.weight.lora_{ab}", (m.embd, rank) if ab == "a" else (rank, width), "F16")
        for i in range(m.layers)
        for target, width in outputs.items()
        for ab in "ab"
    ]


def tensor_bytes(tensors: list[Tensor]) -> int:
    """Bytes of the tensors' data, by GGML_TYPES."""
    total = 0
    for _, dims, kind in tensors:
        _, block, size = GGML_TYPES[kind]
        total += math.prod(dims) // block * size
    return total


def model_metadata(m: Llama) -> Meta:
    """What llama.cpp's converter writes for a Llama, less the vocabulary's strings (nothing here
    reads them; ``vocab_size`` states how many)."""
    counts = {
        "block_count": m.layers,
        "context_length": m.context,
        "embedding_length": m.embd,
        "feed_forward_length": m.ffn,
        "attention.head_count": m.heads,
        "attention.head_count_kv": m.kv_heads,
        "rope.dimension_count": m.head,
        "vocab_size": m.vocab,
    }
    return [
        ("general.architecture", "str", "llama"),
        ("general.type", "str", "model"),
        ("general.name", "str", m.name),
        ("general.file_type", "u32", 15),  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        ("llama.rope.freq_base", "f32", 500_000.0),
        ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5),
        *((f"llama.{key}", "u32", value) for key, value in counts.items()),
    ]


def adapter_metadata(name: str) -> Meta:
    return [
        ("general.architecture", "str", "llama"),
        ("general.type", "str", "adapter"),
        ("general.name", "str", name),
        ("adapter.type", "str", "lora"),
        ("adapter.lora.alpha", "f32", 2.0 * LORA_RANK),
    ]


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_header(meta: Meta, tensors: list[Tensor]) -> tuple[bytes, int]:
    """A GGUF v3 header (metadata, then tensor infos with ALIGN-ed data offsets), and the length of
    the whole file: the header padded to ALIGN, then each tensor's data padded to ALIGN."""
    kvs = b""
    for key, kind, value in meta:
        code, fmt = META_KINDS[kind]
        kvs += gguf_string(key) + struct.pack("<I", code)
        kvs += gguf_string(value) if kind == "str" else struct.pack(fmt, value)
    infos, offset = b"", 0
    for name, dims, kind in tensors:
        infos += gguf_string(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
        infos += struct.pack("<IQ", GGML_TYPES[kind][0], offset)
        offset += -(-tensor_bytes([(name, dims, kind)]) // ALIGN) * ALIGN
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + kvs + infos
    return header, -(-len(header) // ALIGN) * ALIGN + offset


def write_gguf(path: Path, meta: Meta, tensors: list[Tensor]) -> int:
    """A header-only GGUF at ``path``, extended to the real file's length without writing the data
    (sparse: it takes no disk). Returns the bytes of its tensors."""
    header, length = gguf_header(meta, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(header)
        f.truncate(length)
    return tensor_bytes(tensors)


def write_split(prefix: Path, meta: Meta, tensors: list[Tensor], count: int) -> list[int]:
    """``tensors`` in ``count`` shards as llama-gguf-split --split-max-tensors writes them
    (``PREFIX-0000K-of-0000N.gguf``; the model's metadata in shard 1 only; ``split.no`` (u16, from
    0), ``split.count`` (u16) and ``split.tensors.count`` (i32) in each). Returns each one's bytes."""
    per = -(-len(tensors) // count)
    sizes = []
    for k in range(count):
        split: Meta = [("split.no", "u16", k), ("split.count", "u16", count)]
        split.append(("split.tensors.count", "i32", len(tensors)))
        path = prefix.with_name(f"{prefix.name}-{k + 1:05d}-of-{count:05d}.gguf")
        sizes.append(write_gguf(path, (meta if k == 0 else []) + split, tensors[k * per : (k + 1) * per]))
    return sizes


def write_models(models: Path) -> dict[str, dict[str, Any]]:
    """The three models' files under ``models``; returns what each one's estimate must be, by part
    (bytes), from the shapes written: llama.cpp holds KV for context x sequences tokens."""
    tokens = SHAPES_CONTEXT * SHAPES_BATCH
    shards = write_split(models / SPLIT_PREFIX, model_metadata(LLAMA_70B), q4_k_m_tensors(LLAMA_70B), 3)
    base = write_gguf(models / BASE_8B, model_metadata(LLAMA_8B), q4_k_m_tensors(LLAMA_8B))
    draft = write_gguf(models / DRAFT_1B, model_metadata(LLAMA_1B), q4_k_m_tensors(LLAMA_1B))
    adapter = lora_tensors(LLAMA_8B, LORA_RANK)
    lora = [write_gguf(models / "lora" / f"{a}.gguf", adapter_metadata(a), adapter) for a in ADAPTERS]
    kv_70b, kv_8b = tokens * LLAMA_70B.kv_bytes_per_token(), tokens * LLAMA_8B.kv_bytes_per_token()
    return {
        SPLIT_MODEL: {"weights": sum(shards), "kv_cache": kv_70b, "shards": shards},
        DRAFT_MODEL: {
            "weights": base,
            "kv_cache": kv_8b,
            "draft": draft + tokens * LLAMA_1B.kv_bytes_per_token(),
        },
        LORA_MODEL: {"weights": base, "kv_cache": kv_8b, "adapters": sum(lora)},
    }


def write_manifests(folder: Path) -> None:
    """One manifest per model, one replica of one GPU each, as a user would write them."""
    import yaml

    common: dict[str, Any] = {"num_gpus": 1, "context_length": SHAPES_CONTEXT, "max_batch_size": SHAPES_BATCH}
    docs: list[dict[str, Any]] = [
        {"name": SPLIT_MODEL, "model": f"{SPLIT_PREFIX}-00001-of-00003.gguf"},
        {"name": DRAFT_MODEL, "model": BASE_8B, "draft": DRAFT_1B},
        {
            "name": LORA_MODEL,
            "model": BASE_8B,
            "adapters": [{"name": a, "path": f"lora/{a}.gguf"} for a in ADAPTERS],
        },
    ]
    folder.mkdir(parents=True)
    (folder / "shapes.yaml").write_text(yaml.safe_dump_all([doc | common for doc in docs], sort_keys=False))


def keeps_sparse(folder: Path) -> bool:
    """Whether a file extended by 64 MiB in ``folder`` takes (nearly) no disk."""
    probe = folder / "sparse-probe"
    with probe.open("wb") as f:
        f.truncate(64 * MiB)
    used = probe.stat().st_blocks * 512
    probe.unlink()
    return used < MiB


def files_on_disk(root: Path) -> dict[str, int]:
    """How many GGUF files are under ``root``, their length and what they take on disk."""
    stats = [f.stat() for f in root.rglob("*.gguf")]
    on_disk = sum(s.st_blocks * 512 for s in stats)
    return {"count": len(stats), "bytes": sum(s.st_size for s in stats), "on_disk": on_disk}


def shapes_part(inventory: Inventory) -> Result:
    try:
        from controller.errors import ModelctlError
        from controller.manifests.loader import load_folder
        from controller.weights.compat import check_files
    except ImportError as exc:
        return skipped(f"{exc.name or exc} is not installed (the manifest loader needs it)")
    with tempfile.TemporaryDirectory(prefix="gpu-check-shapes-") as tmp:
        root = Path(tmp)
        try:
            if not keeps_sparse(root):
                return skipped(f"{tmp}'s filesystem writes sparse files out in full: 45 GiB of zeros")
            expected = write_models(root / "models")
            write_manifests(root / "manifests")
        except OSError as exc:  # a full disk where files cannot be sparse, a read-only temp folder
            return {"status": "failed", "why": f"cannot write the header-only files in {tmp}: {exc}"}
        files = files_on_disk(root)
        try:
            models = load_folder(root / "manifests", model_roots=[root / "models"], check_files=check_files)
            return shapes_placed(models, expected, inventory, files)
        except ModelctlError as exc:  # InvalidManifests, EstimateError: the files were refused
            return {"status": "failed", "why": f"{type(exc).__name__}: {exc}"[:2000]}


def shapes_placed(
    models: list[Any], expected: dict[str, dict[str, Any]], inventory: Inventory, files: dict[str, int]
) -> Result:
    """Estimate each model; place each alone, then all together, on ``inventory``, and the 70B on
    an 80 GiB H100; print the table; judge the estimates against ``expected``."""
    from controller.placement.memory import estimate
    from controller.placement.place import requests_for

    estimates = {m.name: estimate(m) for m in models}
    requests, unsized = requests_for(models)
    if unsized:
        return {"status": "failed", "why": "; ".join(f"{p.model}: {p.reason}" for p in unsized)}
    units = unit_figures(inventory)
    rows = [shape_row(r, estimates[r.model], place([r], inventory), units) for r in requests]
    on_h100 = place([r for r in requests if r.model == SPLIT_MODEL], h100_inventory())
    together = together_text(place(requests, inventory), units)
    print_shapes(rows, files, on_h100, together)
    shards = expected[SPLIT_MODEL]["shards"]
    print(
        f"{SPLIT_MODEL}: shards of {' + '.join(gb(s) for s in shards)} GiB of tensors = {gb(sum(shards))}; "
        f"its estimate's weights: {gb(estimates[SPLIT_MODEL].weights)}"
    )
    most_free = max((u["free"] for u in units.values()), default=-1)
    checks = {
        "every estimate positive": all(min(e.weights, e.kv_cache, e.total) > 0 for e in estimates.values()),
        "70B weights = the sum of its 3 shards' tensor bytes": estimates[SPLIT_MODEL].weights
        == sum(expected[SPLIT_MODEL]["shards"]),
        "every part = the arithmetic on the shapes written": all(
            getattr(estimates[name], part) == value
            for name, parts in expected.items()
            for part, value in parts.items()
            if part != "shards"
        ),
        "draft counted": estimates[DRAFT_MODEL].draft > 0,
        "adapters counted": estimates[LORA_MODEL].adapters > 0,
        "Pending exactly when the estimate exceeds every GPU's free memory": all(
            (row["gpu"] is None) == (row["per_gpu"] > most_free) for row in rows
        ),
        "70B fits an 80 GiB H100": bool(on_h100.assignments)
        and estimates[SPLIT_MODEL].per_gpu(1) <= H100_FREE,
    }
    print(f"checks: {json.dumps(checks)}\n")
    found = {name: {**asdict(e), "per_gpu": e.per_gpu(1)} for name, e in estimates.items()}
    return judged(checks, estimates=found, expected=expected, placed=rows, together=together, files=files)


def unit_figures(inventory: Inventory) -> dict[str, dict[str, Any]]:
    """Each placeable unit's label (with the GPU's name), NVML total and free memory, by device ID."""
    units, _ = placeable_units(inventory, frozenset())
    figures = {}
    for unit in units:
        usage = inventory.usage_of(unit.uuid)
        free = -1 if usage is None or usage.memory_free is None else usage.memory_free
        name = gpu_of(inventory, unit.uuid).name or "-"
        figures[unit.device] = {"label": f"{unit.label} ({name})", "total": unit.total, "free": free}
    return figures


def shape_row(
    request: ReplicaRequest, found: Any, placement: Placement, units: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One model's estimate by part, per GPU, where it landed alone and that GPU's NVML figures."""
    assignment = placement.assignment(request.slot)
    unit = units[assignment.devices[0]] if assignment else None
    per_gpu = found.per_gpu(request.num_gpus)
    return {
        "model": request.model,
        "parts": {part: getattr(found, part) for part in SHAPE_PARTS},
        "per_gpu": per_gpu,
        "gpu": unit["label"] if unit else None,
        "nvml_total": unit["total"] if unit else None,
        "nvml_free": unit["free"] if unit else None,
        "percent": round(100 * per_gpu / unit["total"], 1) if unit else None,
        "pending": placement.reason(request.slot),
    }


SHAPE_PARTS = ("weights", "kv_cache", "draft", "adapters", "projector", "overhead")
SHAPE_HEADERS = (
    "MODEL",
    "WEIGHTS",
    "KV",
    "DRAFT",
    "ADAPTERS",
    "PROJECTOR",
    "OVERHEAD",
    "TOTAL/GPU",
    "GPU",
    "NVML TOTAL",
    "NVML FREE",
    "% OF GPU",
)


def h100_inventory() -> Inventory:
    """One idle 80 GiB H100, as NVML would show it (H100_TOTAL, H100_FREE)."""
    uuid = "GPU-00000000-0000-0000-0000-00000000h100"
    gpu = Gpu(0, uuid, "NVIDIA H100 80GB HBM3", H100_TOTAL, (9, 0), "disabled")
    return Inventory(gpus=(gpu,), usage=(Usage(uuid, H100_FREE, H100_TOTAL - H100_FREE, 0),))


def together_text(placement: Placement, units: dict[str, dict[str, Any]]) -> list[str]:
    placed = [f"{a.model} on {units[a.devices[0]]['label']}" for a in placement.assignments]
    return placed + [f"{p.model} Pending: {p.reason}" for p in placement.pending]


def print_shapes(
    rows: list[dict[str, Any]], files: dict[str, int], on_h100: Placement, together: list[str]
) -> None:
    length, on_disk = files["bytes"] / GiB, files["on_disk"] / MiB
    print(
        f"== shapes: {files['count']} header-only GGUFs of real models ({length:.1f} GiB long, "
        f"{on_disk:.1f} MiB on disk), loaded by the manifest loader; context {SHAPES_CONTEXT} x "
        f"{SHAPES_BATCH} sequences; each model placed alone, num_gpus 1; sizes in GiB"
    )
    print(report_table(SHAPE_HEADERS, [shape_cells(r) for r in rows]))
    for r in rows:
        if r["pending"]:
            print(f"{r['model']} Pending: {r['pending']}")
    big = next(r for r in rows if r["model"] == SPLIT_MODEL)
    h100 = "fits" if on_h100.assignments else "does NOT fit"
    here = f"placed on {big['gpu']}" if big["gpu"] else "Pending here"
    print(
        f"Llama-3.1-70B Q4_K_M in 3 shards needs {gb(big['per_gpu'])} GiB per GPU: {h100} an 80 GiB "
        f"H100 ({gb(H100_FREE)} GiB free of {gb(H100_TOTAL)}); on this inventory: {here}"
    )
    print("all three together: " + "; ".join(together))


def shape_cells(row: dict[str, Any]) -> list[str]:
    percent = "-" if row["percent"] is None else f"{row['percent']}%"
    sizes = [gb(v) for v in row["parts"].values()]
    figures = [gb(row["per_gpu"]), row["gpu"] or "Pending", gb(row["nvml_total"]), gb(row["nvml_free"])]
    return [row["model"], *sizes, *figures, percent]


def gb(value: int | None) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


# --- 1. inventory ----------------------------------------------------------------------------------


def check_against_nvidia_smi(inventory: Inventory) -> str:
    """nvidia-smi's totals (MiB) must match NVML's bytes; free may differ by the seconds between."""
    if not shutil.which("nvidia-smi"):
        return "nvidia-smi: not installed, not compared"
    query = ["nvidia-smi", "--query-gpu=index,uuid,memory.total,memory.free", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return f"nvidia-smi: failed ({exc})"
    lines = []
    for row in out.strip().splitlines():
        index, uuid, total, free = (c.strip() for c in row.split(","))
        gpu = next((g for g in inventory.gpus if g.uuid == uuid), None)
        nvml_total = None if gpu is None or gpu.memory_total is None else gpu.memory_total // 2**20
        same = "OK" if nvml_total == int(total) else "MISMATCH"
        lines.append(
            f"nvidia-smi GPU {index} {uuid}: total {total} MiB, NVML {nvml_total} MiB {same}; free {free} MiB"
        )
    return "\n".join(lines)


def inventory_part(recorded: str | None) -> tuple[Result, Inventory]:
    started = time.perf_counter()
    inventory = Inventory.from_json(Path(recorded).read_text()) if recorded else read_inventory()
    read_s = time.perf_counter() - started
    print(f"== inventory (read in {read_s * 1000:.1f} ms)\n{gpus_table(inventory)}\n")
    print(f"== inventory JSON\n{gpus_json(inventory)}\n")
    print(f"== cross-check\n{check_against_nvidia_smi(inventory)}\n")
    if not inventory.gpus:
        return {"status": "ok", "gpus": 0, "why": f"no GPU: {inventory.reason or 'none found'}"}, inventory
    return {"status": "ok", "gpus": len(inventory.gpus), "source": recorded or "NVML"}, inventory


def main() -> int:
    args = sys.argv[1:]
    recorded = args.pop(args.index("--inventory") + 1) if "--inventory" in args else None
    folder = Path(next((a for a in args if a != "--inventory"), "examples"))
    out = os.environ.get("OUT")
    results: dict[str, Result] = {}
    results["inventory"], inventory = inventory_part(recorded)
    write(out, "inventory.json", inventory.to_json())
    results["plan"], plan = plan_part(folder, inventory)
    write(out, "plan.json", plan)
    results["foreign"] = foreign_part(inventory, live=recorded is None)
    write(out, "foreign.json", json.dumps(results["foreign"], indent=2))
    results["eviction"] = eviction_part(inventory, live=recorded is None)
    write(out, "eviction.json", json.dumps(results["eviction"], indent=2))
    results["energy"] = energy_part(inventory, live=recorded is None)
    write(out, "energy.json", json.dumps(results["energy"], indent=2))
    results["shapes"] = shapes_part(inventory)
    write(out, "shapes.json", json.dumps(results["shapes"], indent=2))
    print("== summary")
    for part, result in results.items():
        print(f"{part}: {result['status']}" + (f" ({result['why']})" if result.get("why") else ""))
    write(
        out,
        "summary.json",
        json.dumps(
            {k: {"status": v["status"], "why": v.get("why", "")} for k, v in results.items()}, indent=2
        ),
    )
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


def write(out: str | None, name: str, text: str) -> None:
    if out:
        Path(out, name).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
