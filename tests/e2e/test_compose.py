"""End to end: `docker compose up` with the repo's compose.yaml and example manifest, then the
official `openai` client against the gateway, as a user would.

The stack runs under its own compose project, network, controller instance and host port, so it
does not disturb a stack a developer has up; it is torn down (including the replicas) afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import openai
import pytest

from controller.runtime.docker import remove_all

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[str, str]]:
    """`docker compose up -d` of compose.yaml; yields the gateway's base URL and the project."""
    client = docker.from_env()
    for tag in ("modelctl/modelctl:local", "modelctl/llamacpp:server"):
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {tag} is missing; run `make images`")
    suffix = uuid.uuid4().hex[:6]
    port = free_port()
    env = {
        **os.environ,
        "MODELCTL_MODEL_ROOT": os.environ.get("MODELCTL_MODEL_ROOT", str(REPO / "models-data")),
        "MODELCTL_NETWORK": f"modelctl-e2e-{suffix}",
        "MODELCTL_INSTANCE": f"e2e-{suffix}",
        "MODELCTL_PORT": str(port),
        "MODELCTL_API_PORT": str(free_port()),
    }
    compose = ["docker", "compose", "-f", str(REPO / "compose.yaml"), "-p", f"modelctl-e2e-{suffix}"]
    started = time.monotonic()
    subprocess.run([*compose, "up", "-d"], cwd=REPO, env=env, check=True)
    try:
        yield f"http://127.0.0.1:{port}", f"modelctl-e2e-{suffix}"
    finally:
        subprocess.run([*compose, "logs", "--no-color", "--tail", "40"], cwd=REPO, env=env, check=False)
        subprocess.run([*compose, "down", "--remove-orphans", "-t", "5"], cwd=REPO, env=env, check=False)
        remove_all(client, env["MODELCTL_INSTANCE"])
        for network in client.networks.list(names=[env["MODELCTL_NETWORK"]]):
            network.remove()
        client.close()
        print(f"stack was up for {time.monotonic() - started:.1f}s")


def first_answer(client: openai.OpenAI, timeout: float = 300) -> tuple[float, str]:
    """Ask until the stack answers (replicas start after `up` returns); (seconds waited, answer)."""
    started = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - started < timeout:
        try:
            answer = client.chat.completions.create(
                model="smollm2", max_tokens=16, messages=[{"role": "user", "content": "Hello!"}]
            )
            return time.monotonic() - started, answer.choices[0].message.content or ""
        except (openai.APIConnectionError, openai.InternalServerError, openai.NotFoundError) as exc:
            last = exc
            time.sleep(0.5)
    pytest.fail(f"no completion through the gateway within {timeout}s; last error: {last!r}")


def test_compose_stack_answers_the_official_openai_client(stack: tuple[str, str]) -> None:
    client = openai.OpenAI(base_url=f"{stack[0]}/v1", api_key="unused", max_retries=0)
    waited, text = first_answer(client)
    print(f"first completion {waited:.1f}s after `docker compose up -d` returned: {text!r}")
    assert text

    ids = {m.id for m in client.models.list().data}
    assert {"smollm2", "smollm2-135m"} <= ids

    chunks = list(
        client.chat.completions.create(
            model="smollm2-135m",
            max_tokens=16,
            stream=True,
            messages=[{"role": "user", "content": "Name three colours."}],
        )
    )
    assert len(chunks) > 3
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason is not None

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"
    client.close()


def test_only_the_controller_holds_the_docker_socket(stack: tuple[str, str]) -> None:
    client = docker.from_env()
    found = client.containers.list(filters={"label": f"com.docker.compose.project={stack[1]}"})
    by_service = {c.labels["com.docker.compose.service"]: c for c in found}
    sockets = {
        name: [m for m in c.attrs["Mounts"] if m["Source"] == "/var/run/docker.sock"]
        for name, c in by_service.items()
    }
    assert sockets["gateway"] == [] and len(sockets["controller"]) == 1
    gateway = by_service["gateway"].attrs
    assert gateway["Config"]["User"] == "65534:65534" and gateway["HostConfig"]["ReadonlyRootfs"] is True
    client.close()
