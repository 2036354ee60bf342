"""Gateway vs the bare proxy on JSON only, in alternating rounds: medians of req/s and CPU/request.

One run of bench/gateway_overhead.py gives one number per target and concurrency, and on a shared
2-core machine consecutive runs differ by 10-20 %. This alternates the two targets (A B B A ...) over
the same servers and reports medians, which is steadier for "is the gateway cheaper than the floor".

    python bench/gateway_vs_bare.py [--concurrency 16,64] [--duration 3] [--rounds 6]

Run it from another checkout's bench/ to measure that checkout's gateway (the servers come from the
directory this file is in). Same needs as gateway_overhead.py (nginx, wrk, taskset).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import gateway_overhead as bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    _, load_core = bench.cores()
    print(f"uptime before: {bench.uptime()}")
    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        work = Path(tmp)
        script = work / "post.lua"
        script.write_text(bench.WRK_SCRIPT.format(body=json.dumps(bench.BODY), key=bench.KEY))
        with bench.servers(work) as pids:
            for target in ("gateway", "bare"):  # warm up
                bench.run_wrk(bench.url_of(target, "json"), 16, 1, script, load_core)
            for c in (int(x) for x in args.concurrency.split(",")):
                runs: dict[str, list[tuple[float, float]]] = {"gateway": [], "bare": []}
                for i in range(args.rounds):
                    for target in ("gateway", "bare") if i % 2 == 0 else ("bare", "gateway"):
                        pid = bench.meter_pid(target, "json", pids)
                        assert pid is not None
                        before = bench.cpu_seconds(pid)
                        row = bench.run_wrk(bench.url_of(target, "json"), c, args.duration, script, load_core)
                        used_us = (bench.cpu_seconds(pid) - before) / row["requests"] * 1e6
                        runs[target].append((row["rps"], used_us))
                for target, values in runs.items():
                    rps = statistics.median(v[0] for v in values)
                    cpu = statistics.median(v[1] for v in values)
                    each = [round(v[0]) for v in values]
                    print(
                        f"c={c:<3} {target:8} req/s {rps:7.0f}  cpu us/req {cpu:6.1f}  (req/s each: {each})"
                    )
    print(f"uptime after: {bench.uptime()}")


if __name__ == "__main__":
    main()
