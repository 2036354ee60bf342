"""An asyncio streaming client for the bench: C concurrent SSE streams for a while, timed per chunk.

Checks that every stream got every chunk, in order, and measures time to first event and the gaps
between events. Prints one JSON document. Run by bench/gateway_overhead.py:
``python bench/stream_load.py URL CONCURRENCY DURATION_S CHUNKS [API_KEY]``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

import aiohttp

_INDEX = re.compile(rb'"content": "(\d+)"')


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Stats:
    def __init__(self) -> None:
        self.streams = 0
        self.errors = 0
        self.broken = 0  # missing, repeated or reordered chunks, or no [DONE]
        self.ttfb: list[float] = []
        self.gaps: list[float] = []


async def one_stream(
    session: aiohttp.ClientSession, url: str, chunks: int, headers: dict[str, str], stats: Stats
) -> None:
    body = {
        "model": "sse",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "count"}],
    }
    started = time.perf_counter()
    expected, last, done, buffer = 0, None, False, b""
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                stats.errors += 1
                await resp.read()
                return
            async for data in resp.content.iter_any():
                now = time.perf_counter()
                buffer += data
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    if event == b"data: [DONE]":
                        done = True
                        continue
                    match = _INDEX.search(event)
                    if match is None:
                        continue  # the usage chunk
                    if int(match.group(1)) != expected:
                        stats.broken += 1
                    expected += 1
                    if last is None:
                        stats.ttfb.append(now - started)
                    else:
                        stats.gaps.append(now - last)
                    last = now
    except aiohttp.ClientError:
        stats.errors += 1
        return
    stats.streams += 1
    if expected != chunks or not done:
        stats.broken += 1


async def run(
    url: str, concurrency: int, duration_s: float, chunks: int, key: str | None
) -> dict[str, object]:
    stats = Stats()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for _ in range(10_000):  # bounded; the deadline ends it long before
                if time.monotonic() >= deadline:
                    return
                await one_stream(session, url, chunks, headers, stats)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ms = 1000.0
    return {
        "streams": stats.streams,
        "errors": stats.errors,
        "broken": stats.broken,
        "ttfb_p50_ms": (percentile(stats.ttfb, 50) or 0) * ms,
        "ttfb_p99_ms": (percentile(stats.ttfb, 99) or 0) * ms,
        "gap_p50_ms": (percentile(stats.gaps, 50) or 0) * ms,
        "gap_p99_ms": (percentile(stats.gaps, 99) or 0) * ms,
    }


def main() -> None:
    url, concurrency, duration_s, chunks = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    key = sys.argv[5] if len(sys.argv) > 5 else None
    print(json.dumps(asyncio.run(run(url, concurrency, duration_s, chunks, key))))


if __name__ == "__main__":
    main()
