"""Routing benchmark: round robin vs least outstanding vs prefix affinity on real llama.cpp replicas.

Three llama-server replicas (SmolLM2, the stand-in image) behind the gateway, started through the
same composition root as `modelctl serve`. The workload is a multi-turn chat where prompt reuse
matters, the same for every strategy:

- `--conversations` users, at most `--concurrency` active at once. Each conversation opens with a
  long system prompt of its own (`--history-words`, about 1.1 tokens a word: documents, notes),
  then `--turns` short questions (about 25 tokens). Every turn re-sends the whole conversation.
- Answers are bounded (`--max-tokens`), so a turn's prompt is long and its answer short, as in a
  chat over a document: prompt processing is what an engine's prompt cache saves.
- Before each turn (the first too) the user pauses `--think-s` on average (exponential): users read
  and type, so they drift apart. Without it the closed loop runs in lock step, and round robin
  lands a conversation on the same replica every time by accident (measured: 74 % of later turns).
- Every random choice is seeded by the conversation's index; only a one-word tag that opens the
  system prompt differs per strategy, so no strategy finds another's prompts in the engines' caches.

A replica that served the previous turn still holds that prefix in a slot, so where the turn lands
decides how much prompt it must process again. Replicas run `--slots` llama-server slots (each one
conversation's cache) with `--threads` threads each: three engines share the machine's cores.
Measured per strategy: time to first token (p50/p95/mean, and p50 of the later turns), throughput,
and from llama-server's `timings` the share of prompt tokens taken from cache, with the
`X-Modelctl-Replica` header the share of later turns served where the previous one was.

    python bench/routing.py [--conversations 12] [--turns 6] [--concurrency 6] [--json FILE]

Needs a Docker engine and the images (`make images model`). Prints a table, writes JSON (with every
turn: replica, TTFT, prompt_n, cache_n). Traffic goes only to the local gateway; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from controller.app import RunningController, running_controller
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


def manifest(balancing: str, args: argparse.Namespace) -> str:
    return (
        f"name: smollm2\nmodel: SmolLM2-135M-Instruct.Q4_1.gguf\nreplicas: 3\nmax_batch_size: {args.slots}\n"
        f"context_length: 2048\nbalancing: {balancing}\nargs: [--threads, '{args.threads}']\n"
    )


def system_prompt(rng: random.Random, words: int, tag: str) -> str:
    """About 1.1 tokens per word of text unique to one conversation: the prefix worth caching.

    ``tag`` (the strategy) opens it, so a later strategy never finds an earlier one's prompts in
    the replicas' caches; everything after it is the same for every strategy."""
    notes = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Session {tag}. You are a helpful assistant. Background notes: {notes}"


def question(rng: random.Random, turn: int) -> str:
    """A short user turn (about 25 tokens)."""
    picked = ", ".join(rng.choice(WORDS) for _ in range(6))
    return f"Question {turn}: which of {picked} appear in the notes, and how often? Answer briefly."


@dataclass
class Turn:
    """One streamed chat turn as the client and the engine saw it."""

    conversation: int
    turn: int
    ttft_s: float
    replica: str
    prompt_n: int  # prompt tokens the engine processed (llama-server's timings)
    cache_n: int  # prompt tokens it took from its cache
    predicted_n: int


async def stream_turn(
    session: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], max_tokens: int
) -> tuple[float, str, str, dict[str, int]]:
    """Stream one chat turn; seconds to the first content chunk, the answer, the replica, timings."""
    body = {
        "model": "smollm2",
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": messages,
    }
    started, ttft, parts = time.perf_counter(), None, []
    timings: dict[str, int] = {}
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status} from the gateway: {await resp.text()}")
        replica = resp.headers.get("X-Modelctl-Replica", "?")
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            timings = chunk.get("timings", timings)
            delta = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if delta:
                ttft = ttft if ttft is not None else time.perf_counter() - started
                parts.append(delta)
    return (ttft if ttft is not None else time.perf_counter() - started), "".join(parts), replica, timings


async def conversation(
    session: aiohttp.ClientSession, url: str, index: int, tag: str, args: argparse.Namespace, out: list[Turn]
) -> None:
    rng = random.Random(f"conversation-{index}")  # the same conversations for every strategy
    messages = [{"role": "system", "content": system_prompt(rng, args.history_words, tag)}]
    for turn in range(args.turns):
        await asyncio.sleep(rng.expovariate(1 / args.think_s))  # reading, typing: users drift apart
        messages.append({"role": "user", "content": question(rng, turn)})
        ttft, answer, replica, t = await stream_turn(session, url, messages, args.max_tokens)
        out.append(
            Turn(
                index,
                turn,
                ttft,
                replica,
                t.get("prompt_n", -1),
                t.get("cache_n", -1),
                t.get("predicted_n", -1),
            )
        )
        messages.append({"role": "assistant", "content": answer})


async def run_strategy(
    url: str, strategy: str, args: argparse.Namespace
) -> tuple[dict[str, float], list[Turn]]:
    turns: list[Turn] = []
    gate = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> None:
        async with gate:
            await conversation(session, url, i, strategy, args, turns)

    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(args.conversations))), 1800)
        elapsed = time.perf_counter() - started
    return summary(turns, elapsed), turns


def summary(turns: list[Turn], elapsed: float) -> dict[str, float]:
    """TTFT percentiles, throughput, and how much prompt the engines took from their caches."""
    ttfts = sorted(t.ttft_s for t in turns)
    processed = sum(t.prompt_n for t in turns)
    cached = sum(t.cache_n for t in turns)
    previous = {(t.conversation, t.turn): t.replica for t in turns}
    later = [t for t in turns if t.turn > 0]
    stayed = sum(previous[(t.conversation, t.turn - 1)] == t.replica for t in later)
    return {
        "requests": len(ttfts),
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p95_ms": 1000 * ttfts[int(0.95 * (len(ttfts) - 1))],
        "ttft_mean_ms": 1000 * statistics.fmean(ttfts),
        "later_turns_ttft_p50_ms": 1000 * statistics.median(t.ttft_s for t in later),
        "requests_per_s": len(ttfts) / elapsed,
        "seconds": elapsed,
        "prompt_tokens_processed": processed,
        "prompt_tokens_cached": cached,
        "cached_share": cached / max(processed + cached, 1),
        "later_turns_on_previous_replica": stayed / max(len(later), 1),
    }


async def wait_for_table(rc: RunningController, strategy: str, replicas: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = rc.store.current().lookup("smollm2")
        if entry and entry.balancing == strategy and len(entry.replicas) == replicas:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"smollm2 not ready with {strategy} within {timeout}s: {rc.reports.current().replicas}")


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
    (manifests / "smollm2.yaml").write_text(manifest(STRATEGIES[0], args))
    results: dict[str, object] = {}
    try:
        async with running_controller(settings, gateway=GatewaySettings(host="127.0.0.1", port=0)) as rc:
            for strategy in args.strategies:
                (manifests / "smollm2.yaml").write_text(manifest(strategy, args))
                await wait_for_table(rc, strategy, 3)
                load_before = os.getloadavg()[0]
                found, turns = await run_strategy(str(rc.gateway_url), strategy, args)
                found |= {"load_1m_before": load_before, "load_1m_after": os.getloadavg()[0]}
                results[strategy] = found | {"turns": [asdict(t) for t in turns]}
                print(strategy, found, flush=True)
    finally:
        client = connect()
        remove_all(client, instance)
        for network in client.networks.list(names=[settings.network]):
            network.remove()
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    rr = results.get("round-robin", next(iter(results.values())))["ttft_p50_ms"]
    head = ("strategy", "requests", "TTFT p50 ms", "TTFT p95 ms", "req/s", "cached", "stayed", "p50 vs RR")
    lines = ["{:<18} {:>8} {:>12} {:>12} {:>7} {:>7} {:>7} {:>10}".format(*head)]
    for name, r in results.items():
        lines.append(
            f"{name:<18} {r['requests']:>8} {r['ttft_p50_ms']:>12.1f} {r['ttft_p95_ms']:>12.1f} "
            f"{r['requests_per_s']:>7.2f} {r['cached_share']:>7.0%} "
            f"{r['later_turns_on_previous_replica']:>7.0%} "
            f"{r['ttft_p50_ms'] / rr:>9.2f}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--history-words", type=int, default=500, help="words of each system prompt")
    parser.add_argument("--max-tokens", type=int, default=32, help="answer length bound per turn")
    parser.add_argument("--think-s", type=float, default=2.0, help="mean pause before each turn")
    parser.add_argument("--slots", type=int, default=4, help="llama-server --parallel per replica")
    parser.add_argument("--threads", type=int, default=1, help="llama-server --threads per replica")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "routing.json")
    options = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    found = asyncio.run(main(options))
    print(table(found))  # type: ignore[arg-type]
    options.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"started": started, "cpus": os.cpu_count(), "load_1m_end": os.getloadavg()[0]}
    options.json.write_text(
        json.dumps(
            {"args": vars(options) | {"json": str(options.json)}, "run": meta, "results": found}, indent=2
        )
    )
    print(f"wrote {options.json}")
