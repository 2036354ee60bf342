"""Lifecycle under change and failure, on real llama.cpp containers under a steady load.

Each test prints what it measured (requests sent and failed, seconds from fault to recovery) so a
run's output doubles as the record; the assertions are about correctness, never about time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import docker
import pytest

from controller.app import running_controller
from controller.endpoints.table import EndpointTable
from controller.gateway.settings import GatewaySettings
from controller.runtime import labels

from .support import Load, managed, manifest, settings, wait_for, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

GATEWAY = GatewaySettings(host="127.0.0.1", port=0)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "smollm2.yaml").write_text(manifest())
    return folder


def ids(client: docker.DockerClient, instance: str) -> set[str]:
    return {c.id for c in managed(client, instance) if c.status == "running"}


def present(client: docker.DockerClient, instance: str) -> set[str]:
    """Every container of the instance, running or not: a replaced replica is stopped before it is
    removed, so "rolled" must wait until it is gone, not only until it stops running."""
    return {c.id for c in managed(client, instance)}


async def test_killed_replica_comes_back_and_no_request_fails(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    async with running_controller(settings(manifests, model_root, instance), gateway=GATEWAY) as rc:
        await wait_ready(rc, "smollm2", 2)
        async with Load(str(rc.gateway_url)) as load:
            await wait_for("some traffic", lambda: load.sent > 10)
            victim = sorted(managed(docker_client, instance), key=lambda c: c.name)[0]
            killed_at = time.monotonic()
            victim.kill()
            await wait_for("the victim out of the table", lambda: victim.name not in str(rc.store.current()))
            recovery = await wait_ready(rc, "smollm2", 2, timeout=60)
            await wait_for("traffic after recovery", lambda: load.sent > 30)
        took = time.monotonic() - killed_at
        print(f"\nkill: {load.sent} requests, {len(load.failed)} failed, recovered in {took:.1f}s")
        assert load.failed == []
        assert recovery > 0
        rows = {(r.replica, r.state): r for r in rc.reports.current().replicas}
        restarted = [r for r in rc.reports.current().replicas if r.restarts == 1]
        assert len(restarted) == 1 and "killed (exit code 137" in restarted[0].reason, rows


async def test_manifest_change_rolls_one_replica_at_a_time_without_failed_requests(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    async with running_controller(settings(manifests, model_root, instance), gateway=GATEWAY) as rc:
        await wait_ready(rc, "smollm2", 2)
        before = ids(docker_client, instance)
        serving: list[int] = []  # ready replicas in the table, sampled through the roll
        async with Load(str(rc.gateway_url)) as load:
            await wait_for("some traffic", lambda: load.sent > 10)
            changed_at = time.monotonic()
            (manifests / "smollm2.yaml").write_text(manifest(batch=3))

            def rolled() -> bool:
                entry = rc.store.current().lookup("smollm2")
                serving.append(len(entry.replicas) if entry else 0)
                starting = [r for r in rc.reports.current().replicas if r.state == "Starting"]
                assert len(starting) <= 1, f"more than one replica rolling at once: {starting}"
                return not (present(docker_client, instance) & before) and serving[-1] == 2

            await wait_for("both replicas replaced", rolled, timeout=120)
            rolled_in = time.monotonic() - changed_at
            await wait_for("traffic after the roll", lambda: load.sent > 60)
        print(f"\nroll: {load.sent} requests, {len(load.failed)} failed, rolled in {rolled_in:.1f}s")
        assert load.failed == []
        assert min(serving) >= 2  # capacity never dropped during the roll
        for container in managed(docker_client, instance):
            assert "--parallel" in container.attrs["Args"] and "3" in container.attrs["Args"]


async def test_invalid_manifest_is_reported_and_serving_continues(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    async with running_controller(settings(manifests, model_root, instance), gateway=GATEWAY) as rc:
        await wait_ready(rc, "smollm2", 2)
        before = ids(docker_client, instance)
        async with Load(str(rc.gateway_url)) as load:
            (manifests / "smollm2.yaml").write_text(manifest(extra="replicaz: 3\n"))
            await wait_for("the error reported", lambda: rc.reconciler.manifest_errors != [])
            await wait_for("traffic meanwhile", lambda: load.sent > 20)
        print(f"\ninvalid manifest: {load.sent} requests, {len(load.failed)} failed")
        assert load.failed == []
        (error,) = rc.reconciler.manifest_errors
        assert "smollm2.yaml:7 field 'replicaz': unknown field" in error
        assert ids(docker_client, instance) == before
        assert len(rc.store.current().lookup("smollm2").replicas) == 2  # type: ignore[union-attr]


async def test_broken_weights_back_off_with_the_reason_and_others_keep_serving(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "broken.gguf").write_bytes(b"this is not a GGUF file")
    (root / "SmolLM2-135M-Instruct.Q4_1.gguf").symlink_to(model_root / "SmolLM2-135M-Instruct.Q4_1.gguf")
    (manifests / "broken.yaml").write_text("name: broken\nmodel: broken.gguf\n")
    config = settings(manifests, root, instance, model_roots=(root, model_root))
    async with running_controller(config, gateway=GATEWAY) as rc:
        await wait_ready(rc, "smollm2", 2)

        def backing_off() -> bool:
            return any(r.model == "broken" and r.restarts >= 2 for r in rc.reports.current().replicas)

        await wait_for("broken to fail twice", backing_off, timeout=60)
        async with Load(str(rc.gateway_url)) as load:
            await wait_for("traffic", lambda: load.sent > 10)
        (row,) = [r for r in rc.reports.current().replicas if r.model == "broken"]
        print(f"\nbroken weights: {row}")
        assert row.reason == "weights are not a GGUF file (bad magic)"
        assert row.state in ("BackingOff", "Starting")
        assert load.failed == []
        labels_seen = {c.labels[labels.MODEL] for c in managed(docker_client, instance)}
        assert "smollm2" in labels_seen
        assert rc.store.current().lookup("broken").replicas == ()  # type: ignore[union-attr]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "controller.cli", *args], env=env)


async def test_sigkilled_controller_restarts_and_adopts_under_load(
    manifests: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    """Controller and gateway as separate processes (as in compose); SIGKILL the controller."""
    api, port = free_port(), free_port()
    env = {
        **os.environ,
        "MODELCTL_MANIFESTS": str(manifests),
        "MODELCTL_MODEL_ROOTS": str(model_root),
        "MODELCTL_INSTANCE": instance,
        "MODELCTL_NETWORK": f"modelctl-{instance}",
        "MODELCTL_API_PORT": str(api),
        "MODELCTL_INTERVAL_S": "1",
    }
    controller = spawn("controller", env=env)
    gateway = spawn(
        "gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--controller-url",
        f"http://127.0.0.1:{api}",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_for("two ready replicas behind the gateway", lambda: ready_count(api) == 2, timeout=120)
        before = ids(docker_client, instance)
        async with Load(url) as load:
            await wait_for("traffic", lambda: load.sent > 10)
            controller.send_signal(signal.SIGKILL)
            controller.wait()
            killed_at = load.sent
            await wait_for("traffic while the controller is down", lambda: load.sent > killed_at + 10)
            controller = spawn("controller", env=env)
            await wait_for("the controller back", lambda: status_ok(api), timeout=60)
            await asyncio.sleep(3)  # a few passes of the new controller
            await wait_for("traffic after", lambda: load.sent > killed_at + 30)
        print(f"\ncontroller SIGKILL: {load.sent} requests, {len(load.failed)} failed")
        assert load.failed == []
        assert ids(docker_client, instance) == before  # adopted: same containers, none restarted
    finally:
        for process in (controller, gateway):
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and fail (after a SIGKILL, so nothing leaks) if it does not exit within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"{process.args} did not exit within 15s of SIGTERM")


def ready_count(api: int) -> int:
    """Ready replicas of smollm2 in the controller's endpoint table (0 while unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/v1/endpoints", timeout=2) as response:
            table = EndpointTable.from_json(json.load(response))
    except OSError:
        return 0
    entry = table.lookup("smollm2")
    return len(entry.replicas) if entry else 0


def status_ok(api: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
