"""How long placement takes as models and GPUs grow; run by hand, never as a timed test.

    PYTHONPATH=. python bench/placement.py [--json]

Machines are copies of the recorded H200 (tests/fixtures/inventories/h200.json) with their own UUIDs;
requests are a fixed random mix (1/2/4 GPUs, bytes or fractions, vLLM and llama.cpp).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from controller.gpus.inventory import Inventory
from controller.placement.place import ReplicaRequest, place

H200 = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "inventories" / "h200.json"
GiB = 1024**3


def machine(gpus: int) -> Inventory:
    one = Inventory.from_json(H200.read_text())
    gpu, usage = one.gpus[0], one.usage[0]
    uuids = [f"{gpu.uuid[:-4]}{i:04x}" for i in range(gpus)]
    return replace(
        one,
        gpus=tuple(replace(gpu, index=i, uuid=u) for i, u in enumerate(uuids)),
        usage=tuple(replace(usage, uuid=u) for u in uuids),
    )


def requests(count: int, seed: int = 1) -> list[ReplicaRequest]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        gpus = rng.choice([1, 1, 1, 1, 2, 4])
        memory: int | float = rng.choice([0.05, 0.1]) if rng.random() < 0.3 else int(rng.uniform(1, 20) * GiB)
        out.append(ReplicaRequest(f"m{i:04d}", 0, gpus, memory, rng.choice(["vllm", "llamacpp"])))
    return out


def measure(models: int, gpus: int, repeat: int = 5) -> dict[str, float | int]:
    inv, reqs = machine(gpus), requests(models)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        placement = place(reqs, inv)
        best = min(best, time.perf_counter() - started)
    return {
        "models": models,
        "gpus": gpus,
        "ms": round(best * 1000, 2),
        "placed": len(placement.assignments),
        "pending": len(placement.pending),
    }


def main() -> None:
    rows = [measure(m, g) for m in (10, 100, 1000) for g in (1, 8, 64)]
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'MODELS':>6}  {'GPUS':>4}  {'MS (best of 5)':>14}  {'PLACED':>6}  {'PENDING':>7}")
    for r in rows:
        print(f"{r['models']:>6}  {r['gpus']:>4}  {r['ms']:>14}  {r['placed']:>6}  {r['pending']:>7}")


if __name__ == "__main__":
    main()
