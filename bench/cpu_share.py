"""CPU replicas sharing one host: do N replicas serve at least as much as one?

llama-server starts a compute thread per core. Two replicas on the same cores fight over them: a
guidellm run on the example stack (two replicas, two cores) measured 0.46-0.67 req/s where one
replica alone served 1.71-1.77. modelctl now gives each CPU replica a disjoint set of cores with as
many threads. This benchmark serves the same closed-loop load through the gateway to:

- ``one``: one replica (it gets every core: as many threads);
- ``two-pinned``: two replicas, modelctl's default (one core and one thread each here);
- ``two-unpinned``: two replicas that set ``--threads`` to every core themselves (the old default:
  modelctl pins nothing when a manifest chooses its threads).

Load: ``--concurrency`` clients (default 2, 4, 8), each sending chat completions with a prompt of
about ``--prompt-words`` words and ``--max-tokens`` tokens out, for ``--duration`` seconds per
point after a short warm-up; rounds alternate the setups so drift hits all of them alike.

    python bench/cpu_share.py [--concurrency 2,4,8] [--duration 20] [--rounds 2]

Needs a Docker engine and the llama.cpp image (`make images model`). Prints a table and writes
bench/results/cpu_share.json. Traffic goes only to the local gateway; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from controller.app import running_controller
from controller.gateway import GatewaySettings
from controller.runtime.docker import connect, remove_all
from controller.settings import ControllerSettings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "cpu_share.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WORDS = [
    "the",
    "river",
    "runs",
    "past",
    "the",
    "old",
    "mill",
    "where",
    "copper",
    "lanterns",
    "glow",
    "over",
    "the",
    "quiet",
    "meadow",
]


def manifest(setup: str) -> str:
    replicas = 1 if setup == "one" else 2
    own = f"args: [--threads, '{os.cpu_count()}']\n" if setup == "two-unpinned" else ""
    return (
        f"name: smollm2\nmodel: {GGUF}\nreplicas: {replicas}\nmax_batch_size: 4\ncontext_length: 1024\n{own}"
    )


async def client(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], until: float
) -> tuple[list[float], list[str]]:
    """Requests until ``until``; each success's latency, and each failure (counted, never hidden)."""
    latencies, failures = [], []
    while time.monotonic() < until:
        started = time.monotonic()
        async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
            payload = await resp.json()
            if resp.status == 200:
                latencies.append(time.monotonic() - started)
            else:
                failures.append(f"HTTP {resp.status}: {payload.get('error', {}).get('code')}")
    return latencies, failures


async def point(url: str, concurrency: int, duration: float, args: argparse.Namespace) -> dict[str, float]:
    prompt = " ".join(WORDS[i % len(WORDS)] for i in range(args.prompt_words))
    body = {
        "model": "smollm2",
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": f"Summarise: {prompt}"}],
    }
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        warm = time.monotonic() + 3
        await asyncio.gather(*(client(session, url, body, warm) for _ in range(concurrency)))
        started = time.monotonic()
        until = started + duration
        runs = await asyncio.gather(*(client(session, url, body, until) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies = [x for run, _ in runs for x in run]
    failures = [x for _, run in runs for x in run]
    return {
        "requests": len(latencies),
        "failed": len(failures),
        "req_per_s": len(latencies) / elapsed,
        "latency_p50_s": statistics.median(latencies) if latencies else float("nan"),
    }


async def measure(setup: str, args: argparse.Namespace, model_root: Path) -> dict[int, dict[str, float]]:
    instance = f"bench-cpu-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "m.yaml").write_text(manifest(setup))
        settings = ControllerSettings(
            manifests=Path(folder),
            model_roots=(model_root,),
            instance=instance,
            network=f"modelctl-{instance}",
            api_port=0,
            interval_s=1.0,
        )
        gateway = GatewaySettings(host="127.0.0.1", port=0, tune_gc=False)
        try:
            async with running_controller(settings, gateway=gateway) as rc:
                replicas = 1 if setup == "one" else 2
                deadline = time.monotonic() + 120
                while len(getattr(rc.store.current().lookup("smollm2"), "replicas", ())) < replicas:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{setup}: replicas not ready in 120 s")
                    await asyncio.sleep(0.2)
                return {c: await point(str(rc.gateway_url), c, args.duration, args) for c in args.concurrency}
        finally:
            remove_all(connect(), instance)


def table(results: dict[str, list[dict[int, dict[str, float]]]], concurrency: list[int]) -> str:
    lines = [f"{'setup':<14}" + "".join(f"{'c=' + str(c) + ' req/s':>14}" for c in concurrency) + "  vs one"]
    base = {c: statistics.median(r[c]["req_per_s"] for r in results["one"]) for c in concurrency}
    for setup, rounds in results.items():
        rates = {c: statistics.median(r[c]["req_per_s"] for r in rounds) for c in concurrency}
        ratio = " ".join(f"{rates[c] / base[c]:.2f}x" for c in concurrency)
        failed = sum(r[c]["failed"] for r in rounds for c in concurrency)
        row = "".join(f"{rates[c]:>14.2f}" for c in concurrency)
        lines.append(f"{setup:<14}{row}  {ratio}  ({failed} failed)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4, 8])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompt-words", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    model_root = Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")).absolute()
    setups = ("one", "two-pinned", "two-unpinned")
    results: dict[str, list[dict[int, dict[str, float]]]] = {s: [] for s in setups}
    load_before = os.getloadavg()
    for round_ in range(args.rounds):
        for setup in setups if round_ % 2 == 0 else reversed(setups):
            print(f"round {round_ + 1}: {setup}", flush=True)
            results[setup].append(asyncio.run(measure(setup, args, model_root)))
    print(table(results, args.concurrency))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cores": os.cpu_count(),
                    "load_before": load_before,
                    "load_after": os.getloadavg(),
                },
                "args": {k: v for k, v in vars(args).items()},
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
