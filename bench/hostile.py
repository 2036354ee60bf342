"""The hostile-input report: every batch of tests/hostile/alive.py with more cases, as a table and JSON.

Issue 16 asks for the suite's figures: cases tried, answers by status, 5xx, hangs, the time the
control plane took to replace a killed replica after each batch, and the gateway process's memory
high-water mark. The same harness runs in ``make test`` with fewer cases (tests/hostile/test_alive.py).
Needs what the Docker-backed tests need (``make images model``).

    python bench/hostile.py [--cases 400] [--seed 16] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from hostile.alive import run_suite  # noqa: E402
from integration.support import manifest, serving, settings  # noqa: E402

from controller.gateway.settings import GatewaySettings  # noqa: E402


async def run(cases: int, seed: int) -> dict[str, object]:
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "smollm2.yaml").write_text(manifest(replicas=1))
        instance = f"bench-{uuid.uuid4().hex[:8]}"
        config = settings(folder, REPO / "models-data", instance)
        gateway = GatewaySettings(host="127.0.0.1", port=0)
        async with serving(config, gateway, {"smollm2": 1}, client) as rc:
            return await run_suite(rc, client, instance, folder, cases, seed)


def table(report: dict[str, object]) -> str:
    rows = [
        f"{'batch':<16} {'cases':>6} {'5xx':>4} {'hangs':>5} {'engine 5xx':>10} {'recovery s':>10}  statuses"
    ]
    for name, figures in report.items():
        if isinstance(figures, dict):
            rows.append(
                f"{name:<16} {figures['cases']:>6} {figures['5xx']:>4} {figures['hangs']:>5} "
                f"{figures['engine_5xx']:>10} "
                f"{figures['recovery_s'][0] if figures['recovery_s'] else '-':>10}  {figures['statuses']}"
            )
    rows.append(f"gateway memory high-water: {report['gateway_high_water_mib']} MiB")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args.cases, args.seed))
    print(table(report))
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
