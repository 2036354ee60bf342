#!/usr/bin/env python3
"""Check the NVML inventory and placement on a real GPU machine, in one call under a minute.

    PYTHONPATH=. python scripts/gpu-check.py [MODELS_DIR]      # default: ./models
    PYTHONPATH=. python scripts/gpu-check.py --inventory tests/fixtures/inventories/h200x4.json

For the lent GPU machine: nvidia-ml-py, pyyaml; no Docker, no network, perhaps no pydantic and no
weights. It prints the real inventory (table and JSON), compares it with nvidia-smi when that is
there, and plans the manifests of MODELS_DIR plus a few synthetic ones (gpu_memory given, so no
weights are read) onto this machine. With $OUT set, inventory.json and plan.json are written there.

Imports only controller.placement (inventory, memory, place, report: standard library inside); the
manifest loader (pydantic) is used when importable, else the YAML is read directly. Exit code 0
unless it crashed: no GPU is a result to print, not a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from controller.placement.inventory import Inventory, read_inventory
from controller.placement.place import Current, Pending, ReplicaRequest, place
from controller.placement.report import gpus_json, gpus_table, plan_json, plan_table

GiB = 1024**3

# The seed's example, verbatim plus gpu_memory (its weights are not here); a 1-GPU vLLM model; two
# llama.cpp replicas meant to share one GPU; and one that cannot fit anywhere.
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
        from controller.manifests.document import parse_size as real

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
    for file in sorted(folder.glob("*.y*ml")):
        docs.extend(d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict))
    return docs


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


def main() -> int:
    args = sys.argv[1:]
    recorded = args.pop(args.index("--inventory") + 1) if "--inventory" in args else None
    folder = Path(next((a for a in args if a != "--inventory"), "models"))
    started = time.perf_counter()
    inventory = Inventory.from_json(Path(recorded).read_text()) if recorded else read_inventory()
    read_s = time.perf_counter() - started
    print(f"== inventory (read in {read_s * 1000:.1f} ms)\n{gpus_table(inventory)}\n")
    print(f"== inventory JSON\n{gpus_json(inventory)}\n")
    print(f"== cross-check\n{check_against_nvidia_smi(inventory)}\n")

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
    print(f"== plan JSON\n{plan_json(placement, pending=pending)}")
    write_out(inventory, plan_json(placement, pending=pending))
    return 0


def write_out(inventory: Inventory, plan: str) -> None:
    out = os.environ.get("OUT")
    if out:
        Path(out, "inventory.json").write_text(inventory.to_json() + "\n")
        Path(out, "plan.json").write_text(plan + "\n")


if __name__ == "__main__":
    sys.exit(main())
