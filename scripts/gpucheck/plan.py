"""Part 2, plan: the manifests of a folder plus a few synthetic ones placed onto this machine, read
directly from their YAML (no pydantic, no weights: the lent machine may have neither), and how the
replicas of one model spread over physical GPUs and units.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from controller.gpus.inventory import Inventory
from controller.placement.place import Current, Pending, Placement, ReplicaRequest, place
from controller.placement.report import plan_json, plan_table
from gpucheck.common import Result

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
