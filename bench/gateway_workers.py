"""Gateway worker processes: does a second process on the port add throughput? (JSON requests, wrk).

The real `modelctl gateway` (``--workers N``, SO_REUSEPORT) follows a real controller API
(``controller.api`` over an ``EndpointStore`` holding one fixed table) and proxies to nginx returning
a fixed chat.completion, as bench/gateway_overhead.py's upstream does. Nothing is pinned: the gateway,
nginx and wrk share every core, as on a real host. Rounds alternate worker counts (1, 2, 2, 1, ...)
and report medians of requests/s and of the gateway's CPU per request (all its processes).

    python bench/gateway_workers.py [--workers 1,2] [--concurrency 64] [--duration 4] [--rounds 4]

On a 2-core machine the load generator and the upstream take part of the second core, so expect
less than 2x from 2 workers; CPU per request should stay flat. Needs nginx and wrk (Debian).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import gateway_overhead as bench

HERE = Path(__file__).resolve().parent
ENDPOINTS_PORT, GATEWAY_PORT = 18191, 18190
RESULTS = HERE / "results" / "gateway_workers.json"


def serve_endpoints_script(up_url: str) -> str:
    """A controller API (the real one) whose endpoint table is one model on ``up_url``."""
    return f"""
import asyncio, types
from aiohttp import web
from controller.api import create_api
from controller.endpoints.store import EndpointStore
from controller.endpoints.table import ModelEndpoints, Replica

async def main():
    store = EndpointStore()
    replica = Replica("json-0", {up_url!r}, 4096)
    await store.publish((ModelEndpoints("json", replicas=(replica,), balancing="prefix-affinity"),))
    no_reconciler = types.SimpleNamespace(replicas=[], manifest_errors=[])
    runner = web.AppRunner(create_api(store, no_reconciler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", {ENDPOINTS_PORT}).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "PYTHONPATH": str(bench.ROOT), **(env or {})}
    return subprocess.Popen(
        args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=full_env, cwd=bench.ROOT
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(workers: int, timeout_s: float = 30.0) -> None:
    """Until /readyz answers 200 on fresh connections as often as there are workers, in a row."""
    deadline, in_a_row = time.monotonic() + timeout_s, 0
    while in_a_row < 4 * workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateway with {workers} workers not ready after {timeout_s}s")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{GATEWAY_PORT}/readyz", timeout=2) as resp:
                in_a_row = in_a_row + 1 if resp.status == 200 else 0
        except OSError:
            in_a_row = 0
            time.sleep(0.1)


@contextlib.contextmanager
def gateway(workers: int, work: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "MODELCTL_CONTROLLER_URL": f"http://127.0.0.1:{ENDPOINTS_PORT}",
        "MODELCTL_API_KEYS": bench.KEY,
    }
    cmd = [sys.executable, "-m", "controller.cli", "gateway", "--host", "127.0.0.1"]
    cmd += ["--port", str(GATEWAY_PORT), "--workers", str(workers)]
    proc = start(cmd, work / f"gateway-{workers}.log", env)
    try:
        wait_ready(workers)
        yield proc
    finally:
        stop(proc)


def run_wrk(concurrency: int, duration: float, script: Path) -> dict[str, float]:
    url = f"http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions"
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    return bench.parse_wrk(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    before = bench.uptime()
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="modelctl-bench-") as tmp:
        work = Path(tmp)
        script = work / "post.lua"
        script.write_text(bench.WRK_SCRIPT.format(body=json.dumps(bench.BODY), key=bench.KEY))
        up_port = bench.PORTS["up_json"]
        (work / "up.conf").write_text(
            bench.UPSTREAM_NGINX.format(dir=work, port=up_port, answer=json.dumps(bench.ANSWER))
        )
        up_url = f"http://127.0.0.1:{up_port}"
        nginx = start(
            ["nginx", "-e", "stderr", "-p", str(work), "-c", str(work / "up.conf")], work / "up.log"
        )
        api = start([sys.executable, "-c", serve_endpoints_script(up_url)], work / "api.log")
        try:
            bench.wait_port(up_port)
            bench.wait_port(ENDPOINTS_PORT)
            for i in range(args.rounds):
                for n in counts if i % 2 == 0 else counts[::-1]:
                    with gateway(n, work) as proc:
                        run_wrk(args.concurrency, 1.0, script)  # warm up
                        cpu_before = bench.cpu_seconds(proc.pid)  # worker 0 and its spawned children
                        row = run_wrk(args.concurrency, args.duration, script)
                        row["cpu_us_per_request"] = (
                            (bench.cpu_seconds(proc.pid) - cpu_before) / row["requests"] * 1e6
                        )
                    runs[n].append(row)
                    print(
                        f"round {i + 1}: workers={n} req/s {row['rps']:.0f} "
                        f"cpu us/req {row['cpu_us_per_request']:.1f}"
                    )
        finally:
            stop(api)
            stop(nginx)
    after = bench.uptime()
    summary = {
        n: {
            "rps_median": statistics.median(r["rps"] for r in rows),
            "cpu_us_per_request_median": statistics.median(r["cpu_us_per_request"] for r in rows),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "rps_each": [round(r["rps"]) for r in rows],
        }
        for n, rows in runs.items()
    }
    base = summary[counts[0]]["rps_median"]
    print(
        f"\nmodelctl gateway, c={args.concurrency}, {os.cpu_count()} cores, medians of {args.rounds} rounds"
    )
    print(f"{'workers':>7} {'req/s':>8} {'vs first':>8} {'cpu us/req':>10} {'p50 ms':>7} {'errors':>6}")
    for n, s in summary.items():
        print(
            f"{n:>7} {s['rps_median']:>8.0f} {s['rps_median'] / base:>7.2f}x "
            f"{s['cpu_us_per_request_median']:>10.1f} {s['p50_ms_median']:>7.2f} {s['errors']:>6.0f}"
        )
    print(f"uptime before: {before}\nuptime after:  {after}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"args": {**vars(args), "json": str(args.json)}, "uptime": [before, after], "results": summary},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
