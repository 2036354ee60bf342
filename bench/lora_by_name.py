"""LoRA adapters by name through a running modelctl gateway vs the base model alone, same run.

Point it at the gateway of a stack whose manifest serves a base model with two adapters (llama.cpp
GGUF adapters, say SmolLM2 with smollm2-lora-{a,b}.gguf, `replicas: 2`). The same closed-loop,
streaming load is sent as:

- ``base``: every request names the base model;
- ``adapters``: requests name the adapters in turn (``--adapters``, by their own model names), so
  the replicas switch adapters from request to request as a mixed fleet of fine-tunes would.

``--concurrency`` clients each send chat completions (``stream: true``, temperature 0,
``--max-tokens`` out) for ``--duration`` seconds per point after a short warm-up; rounds alternate
the order (base, adapters / adapters, base) so drift on a shared host hits both alike. Reported per
setup: req/s, time to first token (first content chunk) p50/p95, errors, and which replica served
(the gateway's X-Modelctl-Replica header). Before the load, one request per name prints its answer,
so a glance shows each adapter answers differently from the base.

    python bench/lora_by_name.py --url http://127.0.0.1:8080 --base smollm2 \
        --adapters lora-a,lora-b [--concurrency 4] [--duration 20] [--rounds 2] [--api-key KEY]

Needs only the gateway (the stack is yours to start: `modelctl serve` or compose). Prints a table
and writes bench/results/lora_by_name.json. Every loop is bounded; traffic goes only to ``--url``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "lora_by_name.json"
SETUPS = ("base", "adapters")
PROMPTS = (
    "Write one sentence about the sea.",
    "Name three things a lighthouse keeper does.",
    "Describe autumn in one sentence.",
    "What is a good name for a cat?",
)
WARMUP_S = 3.0
REQUEST_TIMEOUT_S = 120


def body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
    }


async def one(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One streamed request: TTFT (first content chunk), total time, the replica that served it."""
    started = time.monotonic()
    ttft = None
    async with session.post(f"{url}/v1/chat/completions", json=payload) as resp:
        if resp.status != 200:
            return {"error": f"HTTP {resp.status}: {(await resp.text())[:200]}"}
        async for line in resp.content:
            text = line.decode(errors="replace").strip()
            if ttft is None and text.startswith("data: {") and '"content"' in text:
                chunk = json.loads(text[6:])
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    ttft = time.monotonic() - started
    return {
        "ttft_s": ttft,
        "total_s": time.monotonic() - started,
        "replica": resp.headers.get("x-modelctl-replica"),
    }


async def load(
    url: str, names: list[str], args: argparse.Namespace, duration: float
) -> tuple[list[dict[str, Any]], float]:
    """``args.concurrency`` clients in a closed loop for ``duration`` seconds, naming ``names`` in
    turn; the rows and the seconds until the last request ended."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    turn = itertools.count()
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    deadline = started + duration
    # A connection per request: the same small cost for both setups, and no request lost to a
    # pooled connection the server closed meanwhile (seen against a bare llama-server).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:

        async def client() -> None:
            while time.monotonic() < deadline:
                k = next(turn)
                model, prompt = names[k % len(names)], PROMPTS[k % len(PROMPTS)]
                try:
                    row = await one(session, url, body(model, prompt, args.max_tokens))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    row = {"error": f"{type(exc).__name__}: {exc}"}
                rows.append({"model": model, "at": time.monotonic(), **row})

        await asyncio.gather(*(client() for _ in range(args.concurrency)))
    return rows, time.monotonic() - started


def summary(rows: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    ttfts = sorted(r["ttft_s"] for r in ok if r["ttft_s"] is not None)
    pct = statistics.quantiles(ttfts, n=20) if len(ttfts) >= 2 else [float("nan")] * 19
    return {
        "requests": len(ok),
        "errors": len(rows) - len(ok),
        "req_s": len(ok) / elapsed,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p95_s": pct[18],
        "by_model": dict(Counter(r["model"] for r in ok)),
        "by_replica": dict(Counter(str(r["replica"]) for r in ok)),
        "first_errors": [r["error"] for r in rows if "error" in r][:3],
    }


async def answers(url: str, names: list[str], args: argparse.Namespace) -> dict[str, str]:
    """One non-streamed answer per name (temperature 0): adapters should differ from the base."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    found = {}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as session:
        for name in names:
            payload = {**body(name, PROMPTS[0], 16), "stream": False}
            async with session.post(f"{url}/v1/chat/completions", json=payload) as resp:
                data = await resp.json(content_type=None)
            choices = data.get("choices") or [{}]
            found[name] = (choices[0].get("message") or {}).get("content") or f"HTTP {resp.status}: {data}"
    return found


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"{'setup':9} {'round':>5} {'req/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'errors':>6}  replicas"]
    for setup, rounds in results.items():
        for k, s in enumerate(rounds, 1):
            p50 = "-" if s["ttft_p50_s"] is None else f"{s['ttft_p50_s']:.3f}"
            lines.append(
                f"{setup:9} {k:>5} {s['req_s']:>7.2f} {p50:>9} {s['ttft_p95_s']:>9.3f} {s['errors']:>6}  "
                f"{s['by_replica']}"
            )
    base = statistics.median(s["req_s"] for s in results["base"]) or 1.0
    adapted = statistics.median(s["req_s"] for s in results["adapters"])
    lines.append(f"adapters / base, req/s (medians): {adapted / base:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    parser.add_argument("--base", required=True, help="the base model's name")
    parser.add_argument("--adapters", required=True, type=lambda s: s.split(","), help="adapter names")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--api-key", default=os.environ.get("MODELCTL_API_KEY"))
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    url = args.url.rstrip("/")
    names = {"base": [args.base], "adapters": list(args.adapters)}
    for name, text in asyncio.run(answers(url, [args.base, *args.adapters], args)).items():
        print(f"{name}: {text!r}")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    load_before = os.getloadavg()
    for round_ in range(args.rounds):
        for setup in SETUPS if round_ % 2 == 0 else tuple(reversed(SETUPS)):
            asyncio.run(load(url, names[setup], args, WARMUP_S))
            rows, elapsed = asyncio.run(load(url, names[setup], args, args.duration))
            results[setup].append(summary(rows, elapsed))
            print(f"round {round_ + 1} {setup}: {results[setup][-1]['req_s']:.2f} req/s", flush=True)
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()}
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "api_key"}
    args.json.write_text(
        json.dumps({"machine": machine, "args": arguments, "results": results}, indent=2) + "\n"
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
