"""GPU replica specs on the real Docker engine: created with explicit device requests, read-only
weights and the engine's flags, as `docker inspect` reports them. This engine has no NVIDIA runtime,
so starting must fail with Docker's own error, explained in one line, leaving no container behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest

from controller.engines import build_spec
from controller.engines.common import HUB_CACHE_VOLUME
from controller.errors import BackendRuntimeError
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.reconcile.failures import explain
from controller.runtime.docker import DockerRuntime

from .support import GGUF

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]


def gpu_model(model_root: Path, **doc: object) -> LoadedModel:
    manifest = ModelManifest.model_validate({"model": GGUF, "name": "smol-gpu", "num_gpus": 2, **doc})
    return LoadedModel(manifest, "test.yaml", 1, model_root / GGUF)


@pytest.fixture
def runtime(docker_client: docker.DockerClient, instance: str) -> DockerRuntime:
    runtime = DockerRuntime(docker_client, instance=instance, network=f"modelctl-{instance}")
    runtime.ensure_network()
    return runtime


def test_gpu_replica_is_created_with_its_devices_mounts_and_flags(
    runtime: DockerRuntime, docker_client: docker.DockerClient, model_root: Path
) -> None:
    spec = build_spec(gpu_model(model_root), 0, ("2", "3"))
    attrs = docker_client.api.inspect_container(runtime.create(spec))
    (request,) = attrs["HostConfig"]["DeviceRequests"]
    assert request["DeviceIDs"] == ["2", "3"] and request["Capabilities"] == [["gpu"]]
    (mount,) = attrs["Mounts"]
    assert (mount["Type"], mount["Source"], mount["RW"]) == ("bind", str(model_root / GGUF), False)
    assert attrs["Config"]["Entrypoint"] == ["/app/llama-server"]
    args = attrs["Args"]
    assert args[args.index("-ngl") + 1] == "999" and args[args.index("-m") + 1] == mount["Destination"]
    assert attrs["HostConfig"]["Privileged"] is False and attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert not attrs["HostConfig"]["PortBindings"]


@pytest.fixture
def hub_cache_as_found(docker_client: docker.DockerClient) -> Iterator[None]:
    """Creating a hub-model container creates the hub cache volume: remove it again unless it was
    there before (a user's downloads), once the test's containers are gone."""
    existed = bool(docker_client.volumes.list(filters={"name": f"^{HUB_CACHE_VOLUME}$"}))
    yield
    if not existed:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(HUB_CACHE_VOLUME).remove()


def test_vllm_gpu_replica_gets_tensor_parallel_shm_and_its_memory_share(
    hub_cache_as_found: None, runtime: DockerRuntime, docker_client: docker.DockerClient, model_root: Path
) -> None:
    manifest = ModelManifest.model_validate({"model": "hf://Qwen/Qwen2.5-0.5B-Instruct", "num_gpus": 2})
    spec = build_spec(LoadedModel(manifest, "test.yaml", 1, None), 0, ("0", "1"), 0.45)
    # The vLLM image is not built on this machine; any local image shows the same create-time settings.
    attrs = docker_client.api.inspect_container(
        runtime.create(replace(spec, image="modelctl/llamacpp:server"))
    )
    args = attrs["Args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.45"
    assert attrs["HostConfig"]["ShmSize"] == 2 * 1024**3
    assert attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["0", "1"]
    (mount,) = attrs["Mounts"]
    assert (mount["Type"], mount["Name"], mount["RW"]) == ("volume", HUB_CACHE_VOLUME, True)


def test_starting_a_gpu_replica_without_an_nvidia_runtime_fails_in_one_line_and_leaves_nothing(
    runtime: DockerRuntime, model_root: Path
) -> None:
    spec = build_spec(gpu_model(model_root), 0, ("0", "1"))
    with pytest.raises(BackendRuntimeError) as info:
        runtime.start(spec)
    assert explain(str(info.value)) == (
        "this Docker engine has no NVIDIA container runtime: GPU replicas cannot start here"
    )
    assert runtime.list() == []
