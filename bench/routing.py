"""Routing benchmark: round robin vs least outstanding vs prefix affinity on real llama.cpp replicas.

Three llama-server replicas (SmolLM2, the stand-in image) behind the gateway, started through the
same composition root as `modelctl serve`. Multi-turn conversations, each with a long system prompt
of its own, run concurrently; every turn re-sends the whole conversation. A replica that served the
previous turn still holds that prefix in its prompt cache, so where the turn lands decides how much
prompt it must process again. Measured per strategy: time to first token (p50/p95) and throughput.

    python bench/routing.py [--conversations 9] [--turns 4] [--concurrency 6] [--json FILE]

Needs a Docker engine and the images (`make images model`). Prints a table, writes JSON.
Traffic goes only to the local gateway; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
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
STRATEGIES = ("round-robin", "least-outstanding", "prefix-affinity")
WORDS = [
    "river",
    "mountain",
    "lantern",
    "orbit",
    "copper",
    "meadow",
    "signal",
    "harbor",
    "velvet",
    "ember",
    "quartz",
    "willow",
]


def manifest(balancing: str) -> str:
    return (
        "name: smollm2\nmodel: SmolLM2-135M-Instruct.Q4_1.gguf\nreplicas: 3\nmax_batch_size: 2\n"
        f"context_length: 2048\nbalancing: {balancing}\n"
    )


def system_prompt(rng: random.Random) -> str:
    """~350 tokens of text unique to one conversation: the prefix worth caching."""
    return "You are a helpful assistant. Background notes: " + " ".join(rng.choice(WORDS) for _ in range(300))


async def first_token_s(
    session: aiohttp.ClientSession, url: str, messages: list[dict[str, str]]
) -> tuple[float, str]:
    """Stream one chat turn; seconds to the first content chunk, and the full answer."""
    body = {"model": "smollm2", "stream": True, "max_tokens": 16, "temperature": 0, "messages": messages}
    started, ttft, parts = time.perf_counter(), None, []
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status} from the gateway: {await resp.text()}")
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = (
                json.loads(line[6:])["choices"][0]["delta"].get("content")
                if json.loads(line[6:])["choices"]
                else None
            )
            if delta:
                ttft = ttft if ttft is not None else time.perf_counter() - started
                parts.append(delta)
    return (ttft if ttft is not None else time.perf_counter() - started), "".join(parts)


async def conversation(
    session: aiohttp.ClientSession, url: str, seed: str, turns: int, out: list[float]
) -> None:
    rng = random.Random(seed)
    messages = [{"role": "system", "content": system_prompt(rng)}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question {turn}: name a word from the notes."})
        ttft, answer = await first_token_s(session, url, messages)
        out.append(ttft)
        messages.append({"role": "assistant", "content": answer})


async def run_strategy(url: str, strategy: str, args: argparse.Namespace) -> dict[str, float]:
    ttfts: list[float] = []
    gate = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> None:
        async with gate:
            await conversation(session, url, f"{strategy}-{i}", args.turns, ttfts)

    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(args.conversations))), 1800)
        elapsed = time.perf_counter() - started
    ttfts.sort()
    return {
        "requests": len(ttfts),
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p95_ms": 1000 * ttfts[int(0.95 * (len(ttfts) - 1))],
        "requests_per_s": len(ttfts) / elapsed,
        "seconds": elapsed,
    }


async def wait_for_table(rc, strategy: str, replicas: int, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = rc.store.current().lookup("smollm2")
        if entry and entry.balancing == strategy and len(entry.replicas) == replicas:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"smollm2 not ready with {strategy} within {timeout}s: {rc.reconciler.replicas}")


async def main(args: argparse.Namespace) -> dict[str, object]:
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    manifests = Path(tempfile.mkdtemp(prefix="routing-"))
    settings = ControllerSettings(
        manifests=manifests,
        model_roots=(REPO / "models-data",),
        instance=instance,
        network=f"modelctl-{instance}",
        api_port=0,
        interval_s=1.0,
    )
    (manifests / "smollm2.yaml").write_text(manifest(STRATEGIES[0]))
    results: dict[str, object] = {}
    try:
        async with running_controller(settings, gateway=GatewaySettings(host="127.0.0.1", port=0)) as rc:
            for strategy in STRATEGIES:
                (manifests / "smollm2.yaml").write_text(manifest(strategy))
                await wait_for_table(rc, strategy, 3)
                results[strategy] = await run_strategy(str(rc.gateway_url), strategy, args)
                print(strategy, results[strategy], flush=True)
    finally:
        client = connect()
        remove_all(client, instance)
        for network in client.networks.list(names=[settings.network]):
            network.remove()
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    rr = results["round-robin"]["ttft_p50_ms"]
    head = ("strategy", "requests", "TTFT p50 ms", "TTFT p95 ms", "req/s", "p50 vs RR")
    lines = ["{:<18} {:>8} {:>12} {:>12} {:>7} {:>10}".format(*head)]
    for name, r in results.items():
        lines.append(
            f"{name:<18} {r['requests']:>8} {r['ttft_p50_ms']:>12.1f} {r['ttft_p95_ms']:>12.1f} "
            f"{r['requests_per_s']:>7.2f} {r['ttft_p50_ms'] / rr:>9.2f}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=9)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "routing.json")
    options = parser.parse_args()
    found = asyncio.run(main(options))
    print(table(found))  # type: ignore[arg-type]
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(
        json.dumps({"args": vars(options) | {"json": str(options.json)}, "results": found}, indent=2)
    )
    print(f"wrote {options.json}")
