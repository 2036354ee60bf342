"""Helpers for the Docker-backed tests: controller settings, waiting with deadlines, a steady load."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import docker
import docker.errors
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.app import RunningController, running_controller
from controller.gateway.settings import GatewaySettings
from controller.reconcile.lifecycle import LifecycleSettings
from controller.runtime import labels
from controller.runtime.docker import remove_all
from controller.settings import ControllerSettings

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def manifest(name: str = "smollm2", *, replicas: int = 2, batch: int = 2, extra: str = "") -> str:
    return (
        f"name: {name}\nmodel: {GGUF}\naliases: [{name}-alias]\nreplicas: {replicas}\n"
        f"max_batch_size: {batch}\ncontext_length: 512\n{extra}"
    )


def settings(manifests: Path, model_root: Path, instance: str, **overrides: object) -> ControllerSettings:
    values: dict[str, object] = {
        "manifests": manifests,
        "model_roots": (model_root,),
        "instance": instance,
        "network": f"modelctl-{instance}",
        "state_dir": Path(tempfile.gettempdir()) / "modelctl-tests" / instance,  # the spec hash key
        "api_port": 0,
        "interval_s": 1.0,
        "drain_grace_s": 10.0,
        "lifecycle": LifecycleSettings(backoff_initial_s=1.0, backoff_max_s=8.0),
    }
    values.update(overrides)
    return ControllerSettings(**values)  # type: ignore[arg-type]


async def wait_for(what: str, check, timeout: float = 120, *, detail=lambda: "") -> float:  # type: ignore[no-untyped-def]
    """Poll ``check()`` until true; returns the seconds it took, or fails naming ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout}s. {detail()}")


async def wait_ready(rc: RunningController, model: str, replicas: int, timeout: float = 120) -> float:
    def check() -> bool:
        entry = rc.store.current().lookup(model)
        return entry is not None and len(entry.replicas) == replicas

    return await wait_for(
        f"{model} with {replicas} ready replicas",
        check,
        timeout,
        detail=lambda: str(rc.reports.current().replicas),
    )


def remove_instance(client: docker.DockerClient, instance: str) -> None:
    """Remove every container a test's controller instance started, and its network."""
    remove_all(client, instance)
    for network in client.networks.list(names=[f"modelctl-{instance}"]):
        network.remove()


@asynccontextmanager
async def serving(
    config: ControllerSettings, gateway: GatewaySettings, ready: dict[str, int], client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    """A controller and in-process gateway for a test module, with ``ready`` replicas of each model;
    everything it started is removed on the way out."""
    try:
        async with running_controller(config, gateway=gateway) as rc:
            for model, replicas in ready.items():
                await wait_ready(rc, model, replicas)
            yield rc
    finally:
        remove_instance(client, config.instance)


@asynccontextmanager
async def one_replica(
    tmp_path_factory: pytest.TempPathFactory,
    model_root: Path,
    client: docker.DockerClient,
    **overrides: object,
) -> AsyncIterator[RunningController]:
    """``serving`` one smollm2 replica from a fresh manifests folder (``overrides``: settings)."""
    manifests = tmp_path_factory.mktemp("manifests")
    (manifests / "smollm2.yaml").write_text(manifest(replicas=1))
    config = settings(manifests, model_root, f"test-{uuid.uuid4().hex[:8]}", **overrides)
    async with serving(config, GatewaySettings(host="127.0.0.1", port=0), {"smollm2": 1}, client) as rc:
        yield rc


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(rc: RunningController) -> Samples:
    """The gateway's /metrics as (name, sorted labels) -> value."""
    async with aiohttp.ClientSession() as session, session.get(f"{rc.gateway_url}/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def managed(client: docker.DockerClient, instance: str) -> list[docker.models.containers.Container]:
    """This instance's containers; one removed between listing and inspecting is left out."""
    found = []
    for summary in client.api.containers(all=True, filters={"label": f"{labels.INSTANCE}={instance}"}):
        try:
            found.append(client.containers.get(summary["Id"]))
        except docker.errors.NotFound:
            continue
    return found


@dataclass
class Load:
    """A steady stream of small chat completions from ``workers`` clients, counting every outcome."""

    url: str
    model: str = "smollm2"
    workers: int = 2
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    async def _worker(self) -> None:
        body = {"model": self.model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
        while not self._stop.is_set():
            self.sent += 1
            try:
                async with self._session.post(f"{self.url}/v1/chat/completions", json=body) as resp:
                    payload = await resp.json()
                    if resp.status != 200 or not payload.get("choices"):
                        self.failed.append(f"HTTP {resp.status}: {payload}")
                    self.served_by[resp.headers.get("x-modelctl-replica", "?")] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
