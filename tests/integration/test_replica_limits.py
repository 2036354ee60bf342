"""What a replica gets from the real Docker engine: a pids limit, a memory limit from its estimate
(CPU replicas), and the networks compose gives replicas: an internal one shared with the controller
and the gateway, and an egress one of their own for hub downloads.
"""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest

from controller.engines import build_spec
from controller.engines.common import PIDS_LIMIT
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.runtime.docker import DockerRuntime

from .support import GGUF

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]


@pytest.fixture
def runtime(docker_client: docker.DockerClient, instance: str) -> DockerRuntime:
    runtime = DockerRuntime(
        docker_client,
        instance=instance,
        network=f"modelctl-{instance}",
        egress_network=f"modelctl-{instance}-egress",
    )
    runtime.ensure_network()
    return runtime


def cpu_model(model_root: Path) -> LoadedModel:
    doc = {"model": GGUF, "name": "smol-cpu", "max_batch_size": 2, "context_length": 512}
    return LoadedModel(ModelManifest.model_validate(doc), "test.yaml", 1, model_root / GGUF)


def test_a_cpu_replica_is_created_with_its_pids_and_memory_limits_on_both_networks(
    runtime: DockerRuntime, docker_client: docker.DockerClient, model_root: Path
) -> None:
    spec = build_spec(cpu_model(model_root), 0, cpus=(0,))
    assert spec.memory_limit is not None
    attrs = docker_client.api.inspect_container(runtime.create(spec))
    host = attrs["HostConfig"]
    assert host["PidsLimit"] == PIDS_LIMIT
    assert host["Memory"] == host["MemorySwap"] == spec.memory_limit
    assert set(attrs["NetworkSettings"]["Networks"]) == {runtime.network, runtime.egress_network}
    internal = docker_client.networks.get(runtime.network).attrs["Internal"]
    egress = docker_client.networks.get(str(runtime.egress_network)).attrs["Internal"]
    assert (internal, egress) == (True, False)


def test_a_running_llamacpp_replica_stays_far_below_its_limits(
    runtime: DockerRuntime, docker_client: docker.DockerClient, model_root: Path
) -> None:
    """Figures for the limits' sizes: processes and memory of a serving llama-server."""
    spec = build_spec(cpu_model(model_root), 0, cpus=(0, 1))
    container = docker_client.containers.get(runtime.start(spec))
    deadline = time.monotonic() + 60
    while (health := container.attrs["State"].get("Health", {}).get("Status")) != "healthy":
        assert time.monotonic() < deadline, f"replica not healthy within 60 s: {health}"
        time.sleep(0.5)
        container.reload()
    stats = container.stats(stream=False)
    pids, memory = stats["pids_stats"]["current"], stats["memory_stats"]["usage"]
    print(f"llama-server (SmolLM2, 2 threads, --parallel 2): {pids} tasks, {memory / 2**20:.0f} MiB")
    print(f"limits: {spec.pids_limit} tasks, {(spec.memory_limit or 0) / 2**20:.0f} MiB")
    assert pids < (spec.pids_limit or 0) // 10
    assert memory < (spec.memory_limit or 0)
    assert stats["memory_stats"]["limit"] == spec.memory_limit
