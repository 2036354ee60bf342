"""The hostile-input suite on a real stack: after every batch the control plane must still converge.

One real llama.cpp replica behind an in-process controller, a real ``modelctl gateway`` process in
front of it. Batches (``alive.py``): the controller's API, the gateway's routes, non-reading and
slowloris clients, broken manifests. After each, a replica is killed and must be replaced, and a chat
completion must be answered. The figures are printed (cases, statuses, 5xx, hangs, the gateway's
memory high-water); bench/hostile.py runs the same with larger counts.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import docker
import pytest
from integration import conftest as docker_backed
from integration.support import manifest, serving, settings

from controller.gateway.settings import GatewaySettings

from .alive import run_suite

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

images = docker_backed.images  # the Docker-backed tests' fixtures: the llama.cpp image, the weights
model_root = docker_backed.model_root

CASES = 60  # fuzzed cases per batch on top of the fixed reproductions (bench/hostile.py: more)


async def test_the_control_plane_converges_after_every_hostile_batch(
    tmp_path: Path, model_root: Path, docker_client: docker.DockerClient
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "smollm2.yaml").write_text(manifest(replicas=1))
    instance = f"test-{uuid.uuid4().hex[:8]}"
    config = settings(folder, model_root, instance)
    async with serving(
        config, GatewaySettings(host="127.0.0.1", port=0), {"smollm2": 1}, docker_client
    ) as rc:
        report = await run_suite(rc, docker_client, instance, folder, CASES, seed=16)
    print("\nhostile-input suite:\n" + json.dumps(report, indent=1))
    for name, figures in report.items():
        if isinstance(figures, dict):
            assert figures["5xx"] == 0 and figures["hangs"] == 0, (name, figures)
