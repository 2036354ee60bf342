"""On demand: cold starts, swaps and readiness lag through modelctl, beside the engine started alone.

Issue 10's benchmark: a table and JSON, not a timed test. Everything runs on the real Docker engine
with real engines, through the same composition root as `modelctl serve` (``running_controller``
with its in-process gateway), with the controller's default pass interval (5 s).

1. Cold start, llama.cpp (SmolLM2 GGUF): a streamed chat request (max_tokens 8) for a model scaled
   to zero (``min_replicas: 0``, ``idle_timeout: 2s``), from sending it to the first token. Beside
   it, in the same run, the engine alone: ``docker run`` (docker-py) of the very container the
   controller would create (``build_spec`` + ``create_kwargs`` for the same LoadedModel, replica 0,
   the same cores, on the controller's network: its spec hash is checked against the controller's
   container), to /health 200 and to the first token of the same request sent to it directly.
   modelctl's share = modelctl's time to first token - the engine alone's. Rounds alternate
   (modelctl first, then alone first, ...); between modelctl rounds the model scales back to zero.
2. The same for vLLM (the CPU stand-in image, the safetensors folder), fewer rounds.
3. Swap under load: two on-demand llama.cpp models in a host budget (``cpu_memory``) of 1.5x one's
   ``cpu_need``. The model holding the memory serves 2 clients for a few seconds; their load stops
   (in-flight requests finish on their own) and at once the other model is asked: time to its
   first token, which includes the eviction, drain and removal of the first, and its own start.
4. Readiness lag: from the engine answering /health 200 (a probe of its own every 5 ms, straight
   to the container's IP) to the controller's EndpointStore publishing a table with that replica
   (``rc.store.publish`` is wrapped to timestamp each publish). The in-process gateway looks at the
   store every ``GatewaySettings.table_poll_s`` (0.02 s), which adds up to that on top.

Every phase of modelctl's path is timestamped by wrapping methods of the running instance (nothing
in the controller changes): demand reports, reconcile passes, container create/start/remove,
readiness watches, drains, publishes.

    python bench/on_demand.py [--rounds 7] [--readiness-rounds 5] [--vllm-rounds 2] [--skip-vllm]
                              [--swap-rounds 3] [--load-s 4] [--json FILE]

Needs a Docker engine, `make images model` (and the vLLM images for part 2). Traffic goes only to
the local gateway and the engines' containers. Containers and networks it creates are removed at
the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import docker
import docker.errors

from controller.app import RunningController, running_controller
from controller.engines import build_spec
from controller.gateway import GatewaySettings
from controller.manifests.loader import load_folder
from controller.manifests.model import LoadedModel
from controller.placement.memory import cpu_need
from controller.runtime import labels
from controller.runtime.docker import connect, cpuset, create_kwargs, remove_all
from controller.settings import ControllerSettings

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models-data"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SAFETENSORS = "smollm2-safetensors"
VLLM_IMAGES = ("vllm/vllm-openai:latest", "modelctl/vllm:openai")
RESULTS = REPO / "bench" / "results" / "on_demand.json"
HI = [{"role": "user", "content": "Say hi."}]
PROBE_S = 0.005
now = time.perf_counter


def llama_manifest(name: str, idle: str) -> str:
    return (
        f"name: {name}\nmodel: {GGUF}\nmin_replicas: 0\nmax_replicas: 1\nmax_batch_size: 2\n"
        f"context_length: 512\nidle_timeout: {idle}\n"
    )


def vllm_manifest(name: str) -> str:
    return (
        f"name: {name}\nmodel: {SAFETENSORS}\nengine: vllm\nnum_gpus: 0\nmin_replicas: 0\n"
        "max_replicas: 1\nmax_batch_size: 2\ncontext_length: 1024\nidle_timeout: 2s\n"
        'load_timeout: 5m\nargs: ["--dtype", "bfloat16"]\n'
    )


class Events:
    """Timestamped events (perf_counter seconds) from the controller's methods, across threads."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, Any]] = []

    def mark(self, what: str, detail: Any = None) -> None:
        self.items.append((now(), what, detail))

    def since(self, t0: float) -> list[tuple[float, str, Any]]:
        return [e for e in list(self.items) if e[0] >= t0]

    def first(self, what: str, after: float, match: Callable[[Any], bool] = lambda d: True) -> float | None:
        return next((t for t, w, d in self.since(after) if w == what and match(d)), None)


def instrument(rc: RunningController, ev: Events) -> None:
    """Wrap the running controller's methods (on the instances only) to timestamp each phase."""
    store, runtime, rec = rc.store, rc.runtime, rc.reconciler
    publish, reconcile_once, report, watch, drain = (
        store.publish,
        rec.reconcile_once,
        rec.report_demand,
        rec.readiness.watch,
        rec.drainer.start,
    )
    ready_wake = rec.readiness.wake

    def timed_ready_wake() -> None:
        ev.mark("ready-wake")
        ready_wake()

    async def timed_publish(models):  # type: ignore[no-untyped-def]
        changed = await publish(models)
        ev.mark("publish", {m.name: [r.id for r in m.replicas] for m in models})
        return changed

    async def timed_pass() -> bool:
        ev.mark("pass>")
        try:
            return await reconcile_once()
        finally:
            ev.mark("pass<")

    def timed_report(r):  # type: ignore[no-untyped-def]
        ev.mark("demand", {n: (d.in_flight, d.waiting) for n, d in r.models.items()})
        report(r)

    def timed_watch(starting):  # type: ignore[no-untyped-def]
        starting = list(starting)
        ev.mark("watch", [c.id for c in starting])
        watch(starting)

    def timed_drain(container, **kw):  # type: ignore[no-untyped-def]
        ev.mark("drain", (container.model, container.id))
        drain(container, **kw)

    def timed(name: str, fn: Callable[..., Any], key: Callable[..., Any]) -> Callable[..., Any]:
        def call(*a: Any, **kw: Any) -> Any:
            ev.mark(f"{name}>", key(*a))
            result = fn(*a, **kw)
            ev.mark(f"{name}<", (key(*a), result))
            return result

        return call

    store.publish = timed_publish  # type: ignore[method-assign]
    rec.reconcile_once = timed_pass  # type: ignore[method-assign]
    rec.report_demand = timed_report  # type: ignore[method-assign]
    rec.readiness.watch = timed_watch  # type: ignore[method-assign]
    rec.drainer.start = timed_drain  # type: ignore[method-assign]
    rec.readiness.wake = timed_ready_wake
    runtime.create = timed("create", runtime.create, lambda spec: spec.model)  # type: ignore[method-assign]
    runtime.start = timed("start", runtime.start, lambda spec: spec.model)  # type: ignore[method-assign]
    runtime.remove = timed("remove", runtime.remove, lambda cid: cid)  # type: ignore[method-assign]


async def stream(session: aiohttp.ClientSession, url: str, model: str) -> dict[str, float]:
    """Send the streamed chat request; perf_counter times of the first byte and first token."""
    body = {"model": model, "stream": True, "max_tokens": 8, "temperature": 0, "messages": HI}
    first_byte = first_data = first_token = None
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} from {url}: {await resp.text()}")
        async for raw in resp.content:
            first_byte = first_byte or now()
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"error event from {url}: {chunk['error']}")
            first_data = first_data or now()
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                first_token = first_token or now()
    if first_data is None:
        raise RuntimeError(f"no data from {url}")
    return {"first_byte": first_byte or first_data, "first_token": first_token or first_data}


async def first_200(session: aiohttp.ClientSession, url: str, timeout: float) -> float:
    """Poll ``url`` every PROBE_S; the perf_counter time its first 200 arrived."""
    deadline = now() + timeout
    while now() < deadline:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return now()
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(PROBE_S)
    raise RuntimeError(f"{url}: no 200 within {timeout}s")


def container_ip(client: docker.DockerClient, cid: str, network: str) -> str:
    attrs = client.api.inspect_container(cid)
    return str(attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


async def probe_new_replica(
    ev: Events, client: docker.DockerClient, network: str, model: str, t0: float, timeout: float
) -> tuple[str, float]:
    """Wait for the controller to start ``model``'s container, then probe its /health directly."""
    deadline = now() + timeout
    while ev.first("start<", t0, lambda d: d[0] == model) is None:
        if now() > deadline:
            raise RuntimeError(f"{model}: the controller started no container within {timeout}s")
        await asyncio.sleep(PROBE_S)
    cid = next(d[1] for t, w, d in ev.since(t0) if w == "start<" and d[0] == model)
    ip = await asyncio.to_thread(container_ip, client, cid, network)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as probe:
        port = int(client.api.inspect_container(cid)["Config"]["Labels"][labels.PORT])
        return cid, await first_200(probe, f"http://{ip}:{port}/health", deadline - now())


def rel(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 4)


def phases(
    ev: Events, model: str, cid: str, t0: float, health: float, res: dict[str, float]
) -> dict[str, Any]:
    """Every timestamp of one cold start, in seconds from the request."""
    has = lambda d: bool(d.get(model))  # noqa: E731
    demand = ev.first("demand", t0, lambda d: d.get(model, (0, 0))[1] > 0)
    published = ev.first("publish", t0, has)
    starts = [t for t, w, _ in ev.since(t0) if w == "pass>" and published and t <= published]
    return {
        "demand": rel(demand, t0),
        "pass_start": rel(ev.first("pass>", demand or t0), t0),
        "create_start": rel(ev.first("create>", t0, lambda d: d == model), t0),
        "create_end": rel(ev.first("create<", t0, lambda d: d[0] == model), t0),
        "start_end": rel(ev.first("start<", t0, lambda d: d[0] == model), t0),
        "watch": rel(ev.first("watch", t0, lambda d: cid in d), t0),
        "health_200": rel(health, t0),
        "ready_wake": rel(ev.first("ready-wake", health), t0),
        "publish_pass_start": rel(starts[-1] if starts else None, t0),
        "published": rel(published, t0),
        "first_byte": rel(res["first_byte"], t0),
        "ttft": rel(res["first_token"], t0),
        "passes": [[rel(t, t0), w] for t, w, _ in ev.since(t0) if w in ("pass>", "pass<")][:40],
    }


async def modelctl_round(
    rc: RunningController, ev: Events, client: docker.DockerClient, model: str, timeout: float
) -> dict[str, Any]:
    network = rc.runtime.network
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        t0 = now()
        probe = asyncio.create_task(probe_new_replica(ev, client, network, model, t0, timeout))
        res = await stream(session, str(rc.gateway_url), model)
        cid, health = await probe
    sample = phases(ev, model, cid, t0, health, res)
    attrs = client.api.inspect_container(cid)
    sample["readiness_lag"] = round(sample["published"] - sample["health_200"], 4)
    sample["spec_hash"] = attrs["Config"]["Labels"][labels.SPEC_HASH]
    sample["cpus"] = list(cpuset(attrs["HostConfig"].get("CpusetCpus") or ""))
    return sample


async def alone_round(
    client: docker.DockerClient,
    model: LoadedModel,
    cpus: tuple[int, ...],
    network: str,
    alone: str,
    timeout: float,
    hash_key: bytes,
) -> dict[str, Any]:
    """``docker run`` of the container the controller would create; to /health 200 and first token.
    ``hash_key``: the controller's, so that equal specs show equal hashes."""
    spec = replace(build_spec(model, 0, cpus=cpus), hash_key=hash_key)
    kwargs = create_kwargs(spec, alone, network)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        t0 = now()
        container = await asyncio.to_thread(client.containers.run, **kwargs)
        try:
            run_end = now()
            ip = await asyncio.to_thread(container_ip, client, container.id, network)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as probe:
                health = await first_200(probe, f"http://{ip}:{spec.port}{spec.health_path}", timeout)
            res = await stream(session, f"http://{ip}:{spec.port}", model.name)
        finally:
            await asyncio.to_thread(container.remove, force=True)
    return {
        "run_end": rel(run_end, t0),
        "health_200": rel(health, t0),
        "first_byte": rel(res["first_byte"], t0),
        "ttft": rel(res["first_token"], t0),
        "request_ttft": round(res["first_token"] - health, 4),
        "spec_hash": spec.spec_hash(),
        "image": spec.image,
        "command": list(spec.command),
        "cpus": list(cpus),
    }


async def wait_zero(rc: RunningController, client: docker.DockerClient, model: str, timeout: float) -> float:
    """Wait until ``model`` has no replica in the table and no container; returns the seconds."""
    started = now()
    selector = [f"{labels.INSTANCE}={rc.runtime.instance}", f"{labels.MODEL}={model}"]
    while now() - started < timeout:
        entry = rc.store.current().lookup(model)
        gone = not await asyncio.to_thread(client.api.containers, all=True, filters={"label": selector})
        if entry is not None and not entry.replicas and gone:
            return now() - started
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{model} did not scale to zero within {timeout}s: {rc.reports.current().replicas}")


async def cold_starts(
    rc: RunningController,
    ev: Events,
    client: docker.DockerClient,
    model: LoadedModel,
    alone: str,
    *,
    rounds: int,
    extra: int,
    timeout: float,
) -> dict[str, Any]:
    """Alternating modelctl / alone rounds (after one warm-up pair), then modelctl-only rounds."""
    out: dict[str, Any] = {"modelctl": [], "alone": [], "extra_modelctl": [], "warmup": {}}
    cpus: tuple[int, ...] = ()

    async def one(kind: str, into: list[dict[str, Any]] | dict[str, Any], key: str | None = None) -> None:
        nonlocal cpus
        load = os.getloadavg()[0]
        if kind == "modelctl":
            sample = await modelctl_round(rc, ev, client, model.name, timeout)
            cpus = tuple(sample["cpus"])
            sample["zero_after_s"] = round(await wait_zero(rc, client, model.name, timeout), 2)
        else:
            sample = await alone_round(
                client, model, cpus, rc.runtime.network, alone, timeout, rc.runtime.hash_key
            )
        sample["load_1m"] = load
        if isinstance(into, dict):
            into[key or kind] = sample
        else:
            into.append(sample)
        print(
            f"  {model.name} {kind:<8} TTFT {sample['ttft']:.3f} s (health {sample['health_200']:.3f} s)",
            flush=True,
        )

    await wait_zero(rc, client, model.name, timeout)
    if rounds > 1:  # first-use costs (connections, caches) land here, not in the samples
        for kind in ("modelctl", "alone"):
            await one(kind, out["warmup"], kind)
    for i in range(rounds):
        for kind in ("modelctl", "alone") if i % 2 == 0 or not cpus else ("alone", "modelctl"):
            await one(kind, out[kind])
    for _ in range(extra):
        await one("modelctl", out["extra_modelctl"])
    hashes = {s["spec_hash"] for s in out["modelctl"] + out["alone"]}
    out["same_container_spec"] = len(hashes) == 1
    return out


class Load:
    """``workers`` clients sending small chat completions back to back until ``stop``."""

    def __init__(self, url: str, model: str, workers: int) -> None:
        self.url, self.model, self.workers = url, model, workers
        self.sent = self.failed = self.in_flight = 0
        self.last_done = 0.0  # perf_counter time the last request ended
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await asyncio.gather(*(self.worker(session) for _ in range(self.workers)))

    async def worker(self, session: aiohttp.ClientSession) -> None:
        body = {"model": self.model, "max_tokens": 4, "messages": HI}
        while not self.stop.is_set():
            self.sent += 1
            self.in_flight += 1
            try:
                async with session.post(f"{self.url}/v1/chat/completions", json=body) as resp:
                    await resp.read()
                    self.failed += resp.status != 200
            except (aiohttp.ClientError, TimeoutError):
                self.failed += 1
            finally:
                self.in_flight -= 1
                self.last_done = now()


async def swaps(
    rc: RunningController, ev: Events, client: docker.DockerClient, *, rounds: int, load_s: float
) -> list[dict[str, Any]]:
    """alpha holds the memory; load it, stop the load, ask beta at once; then the reverse; ..."""
    url, network, out = str(rc.gateway_url), rc.runtime.network, []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        t0 = now()
        await stream(session, url, "alpha")
        holder, holder_cid = (
            "alpha",
            next(d[1] for _, w, d in ev.since(t0) if w == "start<" and d[0] == "alpha"),
        )
        for _ in range(2 * rounds):
            other = "beta" if holder == "alpha" else "alpha"
            load = Load(url, holder, workers=2)
            running = asyncio.create_task(load.run())
            await asyncio.sleep(load_s)
            load_1m, t0 = os.getloadavg()[0], now()
            load.stop.set()
            in_flight = load.in_flight
            probe = asyncio.create_task(probe_new_replica(ev, client, network, other, t0, 120))
            res = await stream(session, url, other)
            cid, health = await probe
            await running
            sample = {"from": holder, "to": other, "load_sent": load.sent, "load_failed": load.failed}
            sample |= {"in_flight_at_stop": in_flight, "load_1m": load_1m}
            sample |= phases(ev, other, cid, t0, health, res)
            sample["readiness_lag"] = round(sample["published"] - sample["health_200"], 4)
            old, old_cid = holder, holder_cid
            sample["drain_start"] = rel(ev.first("drain", t0, lambda d, m=old: d[0] == m), t0)
            sample["old_removed"] = rel(ev.first("remove<", t0, lambda d, c=old_cid: d[0] == c), t0)
            sample["old_load_done"] = rel(max(load.last_done, t0), t0)  # its last request ended
            idle = ev.first("demand", t0, lambda d, m=old: d.get(m, (1, 0))[0] == 0)
            sample["old_idle_reported"] = rel(idle, t0)  # the gateway reports it has none in flight
            out.append(sample)
            print(f"  swap {holder} -> {other}: TTFT {sample['ttft']:.3f} s", flush=True)
            holder, holder_cid = other, cid
        return out


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summarize(cold: dict[str, Any]) -> dict[str, Any]:
    mc, al = cold["modelctl"], cold["alone"]
    if not mc or not al:
        return {}
    mc_ttft, al_ttft = [s["ttft"] for s in mc], [s["ttft"] for s in al]
    pairs = [m - a for m, a in zip(mc_ttft, al_ttft, strict=False)]
    every = mc + cold["extra_modelctl"]
    steps = {
        "request -> demand report": ("demand", None),
        "demand -> pass starts": ("pass_start", "demand"),
        "pass start -> create call": ("create_start", "pass_start"),
        "create (incl. remove-by-name)": ("create_end", "create_start"),
        "start (API call)": ("start_end", "create_end"),
        "started -> /health 200": ("health_200", "start_end"),
        "started -> readiness watch begins": ("watch", "start_end"),
        "/health 200 -> watcher wakes the loop": ("ready_wake", "health_200"),
        "wake -> publishing pass starts": ("publish_pass_start", "ready_wake"),
        "pass start -> published": ("published", "publish_pass_start"),
        "/health 200 -> published (sum)": ("published", "health_200"),
        "published -> first token": ("ttft", "published"),
    }
    breakdown = {
        name: p50(
            [s[b] - (s[a] if a else 0) for s in every if s[b] is not None and (not a or s[a] is not None)]
        )
        for name, (b, a) in steps.items()
    }
    return {
        "modelctl_ttft_p50": p50(mc_ttft),
        "alone_ttft_p50": p50(al_ttft),
        "alone_health_p50": p50([s["health_200"] for s in al]),
        "alone_run_p50": p50([s["run_end"] for s in al]),
        "alone_health_after_run_p50": p50([s["health_200"] - s["run_end"] for s in al]),
        "alone_request_ttft_p50": p50([s["request_ttft"] for s in al]),
        "share_p50_of_pairs": p50(pairs),
        "share_diff_of_p50s": p50(mc_ttft) - p50(al_ttft),
        "modelctl_breakdown_p50": breakdown,
    }


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, list[dict[str, Any]], str, float]] = []
    for engine in ("llamacpp", "vllm"):
        cold = results.get(engine)
        if not cold or not cold.get("summary"):
            continue
        mc, al, s = cold["modelctl"], cold["alone"], cold["summary"]
        pairs = [m["ttft"] - a["ttft"] for m, a in zip(mc, al, strict=False)]
        rows += [
            (f"{engine} cold: modelctl, request -> first token", mc, "ttft", s["modelctl_ttft_p50"]),
            (f"{engine} cold: alone, docker run -> /health 200", al, "health_200", s["alone_health_p50"]),
            (f"{engine} cold: alone, docker run -> first token", al, "ttft", s["alone_ttft_p50"]),
            (
                f"{engine} cold: modelctl's share, pairs",
                [{"x": v} for v in pairs],
                "x",
                s["share_p50_of_pairs"],
            ),
            (f"{engine} cold: modelctl's share, p50 - p50", mc, "", s["share_diff_of_p50s"]),
        ]
    for direction in ("alpha -> beta", "beta -> alpha"):
        got = [x["ttft"] for x in results.get("swap", []) if f"{x['from']} -> {x['to']}" == direction]
        if got:
            rows.append((f"swap under load {direction}: first token", [{"x": v} for v in got], "x", p50(got)))
    lines = [f"{'figure':<52} {'n':>3} {'p50 (s)':>8}  each round (s)"]
    lines += [
        f"{a:<52} {len(xs):>3} {v:>8.3f}  {fmt([x[k] for x in xs if k])}".rstrip() for a, xs, k, v in rows
    ]
    lags = results.get("readiness_lag_s", [])
    if lags:
        lines.append(f"{'readiness lag, /health 200 -> published: p50':<52} {len(lags):>3} {p50(lags):>8.3f}")
        lines.append(f"{'readiness lag, /health 200 -> published: p95':<52} {len(lags):>3} {p95(lags):>8.3f}")
    for engine in ("llamacpp", "vllm"):
        summary = (results.get(engine) or {}).get("summary")
        if summary:
            lines.append(f"\n{engine}: where modelctl's cold start goes (p50 over every modelctl round, s)")
            lines += [f"  {k:<40} {v:>8.3f}" for k, v in summary["modelctl_breakdown_p50"].items()]
            lines.append(
                f"  engine alone: docker run {summary['alone_run_p50']:.3f}, then /health 200 after "
                f"{summary['alone_health_after_run_p50']:.3f}, "
                f"then first token after {summary['alone_request_ttft_p50']:.3f}"
            )
    swapped = results.get("swap", [])
    if swapped:
        lines.append("\nswap under load: when each step happened (p50 over every swap, s after asking B)")
        for key, what in SWAP_STEPS.items():
            got = [x[key] for x in swapped if x.get(key) is not None]
            if got:
                lines.append(f"  {what:<48} {p50(got):>8.3f}  {fmt(got)}")
    return "\n".join(lines)


SWAP_STEPS = {
    "demand": "the gateway reports B waiting",
    "old_load_done": "A's last in-flight request ends",
    "old_idle_reported": "the gateway reports A idle",
    "drain_start": "A evicted: drain starts",
    "old_removed": "A removed (drain settle 1 s, stop, remove)",
    "create_start": "B created",
    "start_end": "B started",
    "health_200": "B answers /health 200",
    "published": "B published",
    "ttft": "B's first token",
}


def checkout() -> dict[str, Any]:
    """The commit measured, and the tracked files that differ from it (the tree may hold others' work)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "modified": git("status", "--porcelain", "-uno").splitlines()}


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    name = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?"
    )
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0]
    return {
        "cores": os.cpu_count(),
        "cpu": name,
        "memory": meminfo.split(":", 1)[1].strip(),
        "python": platform.python_version(),
    }


def settings(folder: Path, instance: str, **extra: Any) -> ControllerSettings:
    return ControllerSettings(
        manifests=folder,
        model_roots=(MODELS,),
        instance=instance,
        network=f"modelctl-{instance}",
        api_port=0,
        **extra,
    )


async def part_cold(
    base: str, args: argparse.Namespace, results: dict[str, Any], client: docker.DockerClient
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="on-demand-"))
    (folder / "smollm2.yaml").write_text(llama_manifest("smollm2", "2s"))
    if results["vllm_skipped"] is None:
        (folder / "smollm2-vllm.yaml").write_text(vllm_manifest("smollm2-vllm"))
    models = {m.name: m for m in load_folder(folder, model_roots=[MODELS])}
    results["manifests"] = {p.name: p.read_text() for p in sorted(folder.iterdir())}
    ev = Events()
    async with running_controller(
        settings(folder, base), gateway=GatewaySettings(host="127.0.0.1", port=0)
    ) as rc:
        instrument(rc, ev)
        print("part 1: llama.cpp cold starts", flush=True)
        llama = await cold_starts(
            rc,
            ev,
            client,
            models["smollm2"],
            f"{base}-alone",
            rounds=args.rounds,
            extra=args.readiness_rounds,
            timeout=60,
        )
        results["llamacpp"] = llama | {"summary": summarize(llama)}
        if results["vllm_skipped"] is None:
            print("part 2: vLLM cold starts", flush=True)
            vllm = await cold_starts(
                rc,
                ev,
                client,
                models["smollm2-vllm"],
                f"{base}-alone",
                rounds=args.vllm_rounds,
                extra=0,
                timeout=400,
            )
            results["vllm"] = vllm | {"summary": summarize(vllm)}


async def part_swap(base: str, args: argparse.Namespace, results: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="on-demand-swap-"))
    for name in ("alpha", "beta"):
        (folder / f"{name}.yaml").write_text(llama_manifest(name, "10m"))
    need = cpu_need(load_folder(folder, model_roots=[MODELS])[0])
    budget = int(need * 1.5)
    results["swap_budget"] = {"cpu_need_bytes": need, "cpu_memory_bytes": budget}
    ev = Events()
    ctl = settings(folder, f"{base}-swap", cpu_memory=budget)
    async with running_controller(ctl, gateway=GatewaySettings(host="127.0.0.1", port=0)) as rc:
        instrument(rc, ev)
        while not rc.store.published:
            await asyncio.sleep(0.05)
        print(
            f"part 3: swaps under load (budget {budget / 2**20:.0f} MiB, one needs {need / 2**20:.0f} MiB)",
            flush=True,
        )
        results["swap"] = await swaps(rc, ev, connect(), rounds=args.swap_rounds, load_s=args.load_s)


def vllm_missing(client: docker.DockerClient, args: argparse.Namespace) -> str | None:
    if args.skip_vllm:
        return "skipped: --skip-vllm"
    for tag in VLLM_IMAGES:
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            return f"skipped: image {tag} missing (make images)"
    if not (MODELS / SAFETENSORS / "model.safetensors").is_file():
        return f"skipped: {MODELS / SAFETENSORS} missing (make model)"
    return None


async def main(base: str, args: argparse.Namespace, results: dict[str, Any]) -> None:
    client = connect()
    results["vllm_skipped"] = vllm_missing(client, args)
    if results["vllm_skipped"]:
        print(f"part 2 (vLLM) {results['vllm_skipped']}", flush=True)
    await part_cold(base, args, results, client)
    cleanup(base)
    if args.swap_rounds:
        await part_swap(base, args, results)
    samples = [s["readiness_lag"] for e in ("llamacpp", "vllm") for k in ("modelctl", "extra_modelctl")
               for s in (results.get(e) or {}).get(k, [])]  # fmt: skip
    results["readiness_lag_s"] = samples + [s["readiness_lag"] for s in results.get("swap", [])]


def cleanup(base: str) -> None:
    """Remove every container and network this run created (idempotent): containers first, then
    the networks (Docker's name filter matches prefixes, so the names are compared exactly)."""
    client = connect()
    instances = (base, f"{base}-alone", f"{base}-swap")
    for instance in instances:
        remove_all(client, instance)
    wanted = {f"modelctl-{instance}" for instance in instances}
    for network in client.networks.list(names=[f"modelctl-{base}"]):
        if network.name in wanted:
            network.remove()


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="llama.cpp cold-start pairs (modelctl + alone)")
    parser.add_argument("--readiness-rounds", type=int, default=5, help="extra modelctl cold starts")
    parser.add_argument("--vllm-rounds", type=int, default=2)
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--swap-rounds", type=int, default=3, help="swaps each way")
    parser.add_argument("--load-s", type=float, default=4.0, help="seconds of load before each swap")
    parser.add_argument("--json", type=Path, default=RESULTS)
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    run_id = f"bench-od-{uuid.uuid4().hex[:6]}"
    found: dict[str, Any] = {
        "machine": machine(),
        "command": sys.argv,
        "args": vars(options) | {"json": str(options.json)},
    }
    found |= {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": os.getloadavg()}
    found["checkout"] = checkout()
    found["settings"] = {
        "interval_s": ControllerSettings().interval_s,
        "table_poll_s": GatewaySettings().table_poll_s,
        "probe_s": PROBE_S,
    }
    try:
        asyncio.run(main(run_id, options, found))
    finally:
        cleanup(run_id)
    found["load_after"] = os.getloadavg()
    print(table(found))
    print(f"load averages before {found['load_before']}, after {found['load_after']}")
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(found, indent=1, default=str))
    print(f"wrote {options.json}")
