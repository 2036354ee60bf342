"""The spine on a real Docker engine: manifest -> two real llama.cpp containers -> the gateway.

The controller and an in-process gateway run through the same composition root as `modelctl serve`.
Replicas are real `llama-server` processes (the stand-in image holds llama.cpp's real server)
serving SmolLM2 from a read-only mount; the client is the official `openai` package.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import docker
import openai
import pytest

from controller.app import running_controller
from controller.cli import main as modelctl
from controller.gateway.settings import GatewaySettings
from controller.gpus.inventory import Inventory
from controller.manifests.loader import load_folder
from controller.placement.host import read_host
from controller.reconcile.desired import desired_state
from controller.runtime import labels
from controller.runtime.spec import ContainerSpec
from controller.settings import ControllerSettings

from .support import GGUF, managed, manifest, settings, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / "smollm2.yaml").write_text(manifest())
    return tmp_path


async def test_two_real_llamacpp_replicas_serve_through_the_gateway(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    async with running_controller(settings(manifests, model_root, instance), gateway=gateway) as rc:
        await wait_ready(rc, "smollm2", 2)
        containers = managed(docker_client, instance)
        assert len(containers) == 2
        for c in containers:
            assert c.labels[labels.MANAGED] == "true" and c.labels[labels.MODEL] == "smollm2"
            (mount,) = c.attrs["Mounts"]
            assert mount["Source"] == str(model_root / GGUF) and mount["RW"] is False
            assert c.attrs["HostConfig"]["PortBindings"] in (None, {})
            assert c.attrs["HostConfig"]["CapDrop"] == ["ALL"]

        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0)
        models = await client.models.list()
        assert {m.id for m in models.data} == {"smollm2", "smollm2-alias"}

        served_by: collections.Counter[str] = collections.Counter()
        for _ in range(6):
            raw = await client.chat.completions.with_raw_response.create(
                model="smollm2-alias", max_tokens=8, messages=[{"role": "user", "content": "Say hi."}]
            )
            served_by[raw.headers["x-modelctl-replica"].split("-smollm2-")[1][0]] += 1
            answer = raw.parse()
            assert answer.choices[0].message.content
        assert set(served_by) == {"0", "1"}, served_by  # both replicas (by index) answered

        stream = await client.chat.completions.create(
            model="smollm2",
            max_tokens=16,
            stream=True,
            messages=[{"role": "user", "content": "Count to five."}],
        )
        chunks = [chunk async for chunk in stream]
        assert len(chunks) > 3
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        completion = await client.completions.create(model="smollm2", prompt="The sky is", max_tokens=4)
        assert completion.choices[0].text

        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        await client.close()


async def test_a_restarted_controller_adopts_running_replicas(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    config = settings(manifests, model_root, instance)
    async with running_controller(config) as rc:
        await wait_ready(rc, "smollm2", 2)
    before = sorted(c.id for c in managed(docker_client, instance))
    async with running_controller(config) as rc:
        await wait_ready(rc, "smollm2", 2)
        assert await rc.reconciler.reconcile_once()  # settled: nothing to create or delete
    after = sorted(c.id for c in managed(docker_client, instance))
    assert after == before


async def test_down_removes_modelctl_containers_and_nothing_else(
    manifests: Path,
    model_root: Path,
    instance: str,
    docker_client: docker.DockerClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bystander = docker_client.containers.create(
        "modelctl/llamacpp:server", ["--version"], name=f"bystander-{instance}"
    )
    their_network = docker_client.networks.create(f"bystander-{instance}")
    try:
        async with running_controller(settings(manifests, model_root, instance)) as rc:
            await wait_ready(rc, "smollm2", 2)
        assert len(managed(docker_client, instance)) == 2
        assert await asyncio.to_thread(modelctl, ["down", "--instance", instance]) == 0
        assert managed(docker_client, instance) == []
        bystander.reload()  # still there
        out = capsys.readouterr().out
        assert "2 container(s) removed" in out and f"removed network modelctl-{instance}" in out
        assert not [n for n in docker_client.networks.list() if n.name == f"modelctl-{instance}"]
        their_network.reload()  # not modelctl's: still there
    finally:
        bystander.remove(force=True)
        their_network.remove()


async def test_leftovers_of_an_interrupted_run_are_replaced_without_name_clashes(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    config = settings(manifests, model_root, instance)
    async with running_controller(config) as rc:
        await wait_ready(rc, "smollm2", 2)
        first = {c.name: c.id for c in managed(docker_client, instance)}
    # A run that died between create and start leaves a created container under the same name.
    victim = sorted(first)[0]
    docker_client.containers.get(first[victim]).remove(force=True)
    runtime = rc.runtime
    husk_spec = next(
        s for s in desired_specs(config, runtime.hash_key) if s.container_name(instance) == victim
    )
    husk = runtime.create(husk_spec)
    assert docker_client.api.inspect_container(husk)["State"]["Status"] == "created"
    async with running_controller(config) as rc:
        await wait_ready(rc, "smollm2", 2)
    now = {c.name: c.id for c in managed(docker_client, instance)}
    assert set(now) == set(first)  # same names (same specs), no duplicate
    assert now[victim] != husk and all(c.status == "running" for c in managed(docker_client, instance))


def desired_specs(config: ControllerSettings, hash_key: bytes) -> tuple[ContainerSpec, ...]:
    """The specs the controller wants for ``config`` on a machine without GPUs (the host's cores
    split between the CPU replicas as the controller splits them), hashed with its ``hash_key``."""
    models = load_folder(config.manifests, model_roots=config.model_roots)
    host = read_host(budget=config.cpu_memory, reserve=config.cpu_memory_reserve)
    inventory = Inventory(gpus=(), usage=(), reason="CPU test")
    return desired_state(models, inventory, host=host, hash_key=hash_key).specs
