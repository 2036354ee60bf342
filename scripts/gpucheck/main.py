"""The check's run: read the command line, run the six parts in order on one inventory, print
each and write its JSON under $OUT, then the summary; the exit code says whether a check failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from gpucheck.common import Result, write
from gpucheck.energy import energy_part
from gpucheck.eviction import eviction_part
from gpucheck.foreign import foreign_part
from gpucheck.inventory import inventory_part
from gpucheck.plan import plan_part
from gpucheck.shapes import shapes_part


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
