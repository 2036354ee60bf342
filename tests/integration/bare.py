"""One replica started from ``build_spec`` through the project's Docker runtime, without controller
or gateway: for tests of what the engine itself does with the spec (flags, mounts), asked directly
at the replica's address on the test instance's own network."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import pytest
import requests

from controller.engines import build_spec
from controller.manifests.model import LoadedModel
from controller.runtime.docker import DockerRuntime, observe


def runtime_for(client: docker.DockerClient, instance: str) -> DockerRuntime:
    """The test instance's runtime on a network of its own (removed with the instance)."""
    runtime = DockerRuntime(client, instance=instance, network=f"modelctl-{instance}")
    runtime.ensure_network()
    return runtime


@contextmanager
def replica(runtime: DockerRuntime, model: LoadedModel, *, timeout: float = 60) -> Iterator[str]:
    """Start replica 0 of ``model`` and yield its base URL once /health answers 200; fails with the
    engine's log when it exits or is not ready within ``timeout`` seconds. Removed on the way out."""
    spec = build_spec(model, 0)
    container_id = runtime.start(spec)
    try:
        yield wait_healthy(runtime, container_id, spec.port, spec.health_path, timeout)
    finally:
        runtime.remove(container_id, graceful=False)


def wait_healthy(runtime: DockerRuntime, container_id: str, port: int, path: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = runtime.inspect(container_id)
        observed = observe(attrs, runtime.network) if attrs else None
        if observed is None or observed.state in ("exited", "dead"):
            pytest.fail(f"replica stopped before it was ready:\n{runtime.logs(container_id, tail=30)}")
        if observed.ip:
            url = f"http://{observed.ip}:{port}"
            try:
                if requests.get(f"{url}{path}", timeout=2).status_code == 200:
                    return url
            except requests.RequestException:
                pass
        time.sleep(0.3)
    pytest.fail(f"replica not ready within {timeout}s:\n{runtime.logs(container_id, tail=30)}")
