"""What the end-to-end tests share: `docker compose up` of the repo's compose.yaml under a project,
networks, controller instance, ports and hub cache volume of the test's own (so it disturbs neither
a stack a developer has up nor another test's), torn down with its replicas afterwards; and the
host's `./modelctl` wrapper pointed at it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from controller.runtime.docker import remove_all

REPO = Path(__file__).resolve().parents[2]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # `make model`: what models/smollm2.yaml serves
IMAGES = ("modelctl/modelctl:local", "modelctl/llamacpp:server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack(NamedTuple):
    url: str  # the gateway's base URL
    project: str  # the compose project
    env: dict[str, str]  # what compose ran with (ports, instance, manifests folder, hub volume)
    compose: tuple[str, ...]  # `docker compose -f compose.yaml -p PROJECT`


@contextmanager
def compose_stack(manifests: Path, model_root: Path, **env_extra: str) -> Iterator[Stack]:
    """`docker compose up -d` of compose.yaml over ``manifests`` (``env_extra``: more variables
    for compose); on the way out `down -v` and whatever the controller started is removed, its
    hub cache volume (a name of this stack's own, not the shared modelctl-hub-cache) included."""
    client = docker.from_env()
    for tag in IMAGES:
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {tag} is missing; run `make images`")
    suffix = uuid.uuid4().hex[:6]
    project = f"modelctl-e2e-{suffix}"
    port = free_port()
    env = {
        **os.environ,
        "MODELCTL_MANIFESTS": str(manifests),
        "MODELCTL_MODEL_ROOT": str(model_root),
        "MODELCTL_NETWORK": project,
        "MODELCTL_CONTROL_NETWORK": f"{project}-control",
        "MODELCTL_EGRESS_NETWORK": f"{project}-egress",
        "MODELCTL_INSTANCE": f"e2e-{suffix}",
        "MODELCTL_HUB_VOLUME": f"{project}-hub-cache",
        "MODELCTL_PORT": str(port),
        "MODELCTL_API_PORT": str(free_port()),
        **env_extra,
    }
    compose = ("docker", "compose", "-f", str(REPO / "compose.yaml"), "-p", project)
    started = time.monotonic()
    subprocess.run([*compose, "up", "-d"], cwd=REPO, env=env, check=True)
    try:
        yield Stack(f"http://127.0.0.1:{port}", project, env, compose)
    finally:
        subprocess.run([*compose, "logs", "--no-color", "--tail", "40"], cwd=REPO, env=env, check=False)
        subprocess.run(
            [*compose, "down", "--remove-orphans", "-v", "-t", "5"], cwd=REPO, env=env, check=False
        )
        remove_all(client, env["MODELCTL_INSTANCE"])
        for network in client.networks.list(names=[env["MODELCTL_NETWORK"]]):  # -control, -egress too
            network.remove()
        for volume in client.volumes.list(filters={"name": env["MODELCTL_HUB_VOLUME"]}):
            volume.remove()
        client.close()
        print(f"stack was up for {time.monotonic() - started:.1f}s")


def wrapper(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`./modelctl ARGS` as a user runs it in the checkout, against this test's stack."""
    env = {**os.environ, **{k: stack.env[k] for k in ("MODELCTL_API_PORT", "MODELCTL_INSTANCE")}}
    return subprocess.run(
        [str(REPO / "modelctl"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def services(stack: Stack) -> dict[str, Container]:
    client = docker.from_env()
    found = client.containers.list(filters={"label": f"com.docker.compose.project={stack.project}"})
    return {c.labels["com.docker.compose.service"]: c for c in found}


def compose(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*stack.compose, *args], cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=180
    )
