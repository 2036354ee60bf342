"""Part 1, inventory: the real NVML inventory (or a recorded one), as a table and JSON, with its
totals compared against nvidia-smi's. Every other part works on the inventory this one reads.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from controller.gpus.inventory import Inventory
from controller.gpus.nvml import read_inventory
from controller.placement.report import gpus_json, gpus_table
from gpucheck.common import Result


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
