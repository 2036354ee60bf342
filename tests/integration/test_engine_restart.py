"""The Docker engine restarts under a serving controller: one restart, said so, serving again.

SIGTERM to dockerd stops every container (no live-restore); while it shuts down the engine keeps
answering listings on an open connection but refuses removals. The controller must count that one
exit once (not once per pass up to the 5-minute backoff cap), say the engine stopped it (not quote
a stray log line), log it once, and serve again soon after the engine is back.

This stops the engine of the whole machine, so every container on it stops, other runs' too: it is
marked ``engine_restart`` to be run alone (``pytest -m engine_restart``) or left out of a shared run
(``-m "not engine_restart"``); ``make test`` runs it. Whatever happens, the engine is started again
(``scripts/ensure-docker.sh``) before the test ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import docker
import pytest

from controller.app import running_controller
from controller.gateway.settings import GatewaySettings
from controller.reconcile.lifecycle import LifecycleSettings

from .support import managed, manifest, settings, wait_for, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.engine_restart, pytest.mark.usefixtures("images")]

REPO = Path(__file__).resolve().parents[2]
GATEWAY = GatewaySettings(host="127.0.0.1", port=0)
OUR_PIDFILE = Path(os.environ.get("MODELCTL_DOCKERD_PIDFILE", "/var/run/modelctl-dockerd.pid"))
DOCKERD_PIDFILE = Path("/var/run/docker.pid")  # dockerd's own
DOWN_S = 3.0  # the engine stays away this long: the controller sees it unreachable for a few passes
ENGINE_REASON = "stopped by the Docker engine's shutdown"


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "smollm2.yaml").write_text(manifest(replicas=1))
    return folder


def dockerd_pid() -> int:
    """The local dockerd's PID (ours from ensure-docker.sh, else dockerd's own pidfile)."""
    if os.environ.get("DOCKER_HOST", "unix://").split("://")[0] not in ("unix", ""):
        pytest.fail(f"DOCKER_HOST={os.environ['DOCKER_HOST']} is not a local engine this test can restart")
    for pidfile in (OUR_PIDFILE, DOCKERD_PIDFILE):
        if pidfile.is_file():
            pid = int(pidfile.read_text().strip())
            if (
                Path(f"/proc/{pid}/comm").is_file()
                and Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
            ):
                return pid
    pytest.fail("no running dockerd found by pidfile; start it with `make docker` (scripts/ensure-docker.sh)")


def stop_engine(pid: int, timeout: float = 60.0) -> float:
    """SIGTERM dockerd (as a host shutdown or `systemctl stop docker` would) and wait until it has
    exited; returns the seconds that took (it stops every container first)."""
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() - started > timeout:
            pytest.fail(f"dockerd (pid {pid}) still running {timeout:g}s after SIGTERM")
        time.sleep(0.1)
    return time.monotonic() - started


def start_engine() -> None:
    """Start the engine again (idempotent: only checks if it answers); fails loudly if it cannot."""
    result = subprocess.run(
        [str(REPO / "scripts/ensure-docker.sh")], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"could not start the Docker engine again: {result.stdout}{result.stderr}")


async def chat(url: str) -> int:
    body = {"model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        return response.status


async def test_engine_restart_counts_once_says_so_and_serves_again(
    manifests: Path,
    model_root: Path,
    instance: str,
    docker_client: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller")
    backoff = LifecycleSettings(backoff_initial_s=2.0, backoff_max_s=300.0)  # the production cap
    async with running_controller(
        settings(manifests, model_root, instance, lifecycle=backoff), gateway=GATEWAY
    ) as rc:
        await wait_ready(rc, "smollm2", 1)
        (before,) = managed(docker_client, instance)
        pid = dockerd_pid()
        try:
            took = await asyncio.to_thread(stop_engine, pid)
            await asyncio.sleep(DOWN_S)
        finally:
            start_engine()  # blocking on purpose: it runs even if the test is being torn down
        back = time.monotonic()
        await wait_ready(rc, "smollm2", 1, timeout=90)
        recovered = time.monotonic() - back
        assert await chat(str(rc.gateway_url)) == 200
        await wait_for(
            "the status row", lambda: any(r.state == "Ready" for r in rc.reports.current().replicas)
        )
        (row,) = rc.reports.current().replicas
        record = rc.reconciler.lifecycle.slot(("smollm2", 0))
    print(
        f"\nengine restart: dockerd stopped in {took:.1f}s, serving {recovered:.1f}s after it was back; {row}"
    )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replica smollm2-0")]
    removals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("could not remove")]
    print("\n".join(["logged:", *lines, *removals]))
    (after,) = managed(docker_client, instance)
    assert after.id != before.id and after.status == "running"
    assert row.restarts == 1, row
    assert row.reason.startswith(ENGINE_REASON), row
    assert re.search(r"exit code (0|143|137)\b", row.reason), row
    assert record.failures == 0  # no backoff: not a crash
    assert len(lines) == 1 and ENGINE_REASON in lines[0], lines
    assert len(removals) <= 1, removals
