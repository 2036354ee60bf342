"""Part 6, shapes: the files beside the weights (shards, a draft, LoRA adapters) in the memory
estimate, on this inventory. Writes header-only GGUFs of real models (``gguf``), loads them through
the manifest loader, estimates and places each alone, prints weights / KV / draft / adapters /
projector / overhead per GPU beside NVML's figures, checks each part against the arithmetic on the
shapes written, and says whether the 70B fits an 80 GiB H100. Needs pydantic (the loader).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from controller.gpus.inventory import Gpu, Inventory, Usage
from controller.placement.place import Placement, ReplicaRequest, place, placeable_units
from controller.placement.report import table as report_table
from gpucheck.common import GiB, Result, free_of, gpu_of, judged, skipped
from gpucheck.gguf import (
    LLAMA_1B,
    LLAMA_8B,
    LLAMA_70B,
    LORA_RANK,
    adapter_metadata,
    lora_tensors,
    model_metadata,
    q4_k_m_tensors,
    write_gguf,
    write_split,
)

MiB = 1024**2
SHAPES_CONTEXT, SHAPES_BATCH = 8192, 8  # each manifest's context_length and max_batch_size
# An 80 GiB H100 as NVML shows one (H100 80GB HBM3: 81559 MiB total), with as much in use at idle
# as the recorded H200 (615 MiB): stated figures, for the line on whether the 70B fits one.
H100_TOTAL = 81_559 * MiB
H100_FREE = H100_TOTAL - 615 * MiB

SPLIT_MODEL, DRAFT_MODEL, LORA_MODEL = "llama-3.1-70b-split", "llama-3.1-8b-draft", "llama-3.1-8b-lora"
SPLIT_PREFIX = "llama-3.1-70b/Meta-Llama-3.1-70B-Instruct-Q4_K_M"
BASE_8B, DRAFT_1B = "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Llama-3.2-1B-Instruct-Q4_K_M.gguf"
ADAPTERS = ("lora-a", "lora-b")


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
        label = f"{unit.label} ({gpu_of(inventory, unit.uuid).name or '-'})"
        figures[unit.device] = {"label": label, "total": unit.total, "free": free_of(inventory, unit.uuid)}
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
