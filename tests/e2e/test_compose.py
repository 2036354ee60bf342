"""End to end: `docker compose up` with the repo's compose.yaml and example manifest, then the
official `openai` client against the gateway, as a user would.

The stack runs under its own compose project, network, controller instance and host port, so it
does not disturb a stack a developer has up; it is torn down (including the replicas) afterwards.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import openai
import pytest
from docker.models.containers import Container

from .support import REPO, Stack, compose, compose_stack, services, wrapper

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> Iterator[Stack]:
    """`docker compose up -d` of compose.yaml, over a copy of ./models (so a test may break a
    manifest without touching the checkout's)."""
    manifests = tmp_path_factory.mktemp("manifests")
    shutil.copytree(REPO / "models", manifests, dirs_exist_ok=True)
    with compose_stack(manifests, model_root) as up:
        yield up


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


def test_compose_stack_answers_the_official_openai_client(stack: Stack) -> None:
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


def test_only_the_controller_holds_the_docker_socket(stack: Stack) -> None:
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


def test_the_host_wrapper_shows_status_and_every_replicas_logs(stack: Stack) -> None:
    def ready_rows(out: str) -> list[str]:
        return [line for line in out.splitlines() if line.startswith("smollm2 ") and " Ready " in line]

    deadline = time.monotonic() + 120
    while len(ready_rows((status := wrapper(stack, "status")).stdout)) < 1 and time.monotonic() < deadline:
        time.sleep(1)
    assert status.returncode == 0, status.stdout + status.stderr
    # The example runs one replica on a CPU host (every core, 8 slots: models/smollm2.yaml).
    assert status.stdout.startswith("MODEL") and len(ready_rows(status.stdout)) == 1

    logs = wrapper(stack, "logs", "smollm2", "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    assert "==> smollm2 replica 0: " in logs.stdout and "==> smollm2 replica 1: " not in logs.stdout
    one = wrapper(stack, "logs", "smollm2", "--replica", "0", "--tail", "5")
    assert one.returncode == 0 and "replica 0" in one.stdout
    missing = wrapper(stack, "logs", "smollm2", "--replica", "1")
    assert missing.returncode == 1 and "no replica 1 of smollm2" in missing.stderr

    unknown = wrapper(stack, "logs", "nosuch")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("modelctl: error: no model nosuch (known: smollm2")

    valid = wrapper(stack, "validate", "models/")
    assert valid.returncode == 0 and "ok  smollm2" in valid.stdout


def test_status_names_a_broken_manifest_by_its_host_path_and_exits_1(stack: Stack) -> None:
    broken = Path(stack.env["MODELCTL_MANIFESTS"]) / "broken.yaml"
    broken.write_text("model: a.gguf\nrepicas: 2\n")
    try:
        deadline = time.monotonic() + 60
        while (status := wrapper(stack, "status")).returncode == 0 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        broken.unlink()
    assert status.returncode == 1, status.stdout
    assert f"{broken}:2 field 'repicas'" in status.stdout
    assert "/etc/modelctl" not in status.stdout and "1 manifest error(s)" in status.stderr


def running_replica(stack: Stack, timeout: float = 120) -> Container:
    """A replica the stack's controller started, once it is healthy."""
    client = docker.from_env()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for replica in client.containers.list(
            filters={"label": f"io.modelctl.instance={stack.env['MODELCTL_INSTANCE']}"}
        ):
            if replica.attrs["State"].get("Health", {}).get("Status") == "healthy":
                return replica
        time.sleep(1)
    pytest.fail(f"no healthy replica within {timeout}s")


# Each URL: "ok <status>", or how connecting failed: "refused", "timeout" or "no-name".
REACH = """
import socket, sys, urllib.error, urllib.request
KINDS = ((ConnectionRefusedError, "refused"), (socket.gaierror, "no-name"), (TimeoutError, "timeout"))
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            print(url, "ok", answer.status)
    except urllib.error.HTTPError as error:
        print(url, "ok", error.code)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        print(url, next((kind for cls, kind in KINDS if isinstance(reason, cls)), repr(reason)))
"""


def reach(container: Container, *urls: str) -> dict[str, str]:
    code, out = container.exec_run(["python3", "-c", REACH, *urls])
    assert code == 0, out.decode(errors="replace")
    lines = [line.split(" ", 1) for line in out.decode().splitlines()]
    return {url: result for url, result in lines}


def test_replicas_cannot_reach_the_controller_api_while_the_stack_can(stack: Stack) -> None:
    """From a real replica (its own image, user and networks), the controller's API is out of
    reach by its service name, its control alias and its address on every network; the gateway,
    the controller's health check and the published port reach it; both reach the replica."""
    by_service = services(stack)
    controller, gateway = by_service["controller"], by_service["gateway"]
    replica = running_replica(stack)
    addresses = [n["IPAddress"] for n in controller.attrs["NetworkSettings"]["Networks"].values()]
    assert len(addresses) == 2  # control and the replicas' network
    api = ["http://controller:8081/healthz", "http://controller-api:8081/healthz"]
    api += [f"http://{ip}:8081/healthz" for ip in addresses]
    from_replica = reach(replica, *api)
    print("from a replica:", from_replica)
    assert all(result in ("refused", "timeout", "no-name") for result in from_replica.values()), from_replica

    replica_ip = replica.attrs["NetworkSettings"]["Networks"][stack.env["MODELCTL_NETWORK"]]["IPAddress"]
    health = f"http://{replica_ip}:8080/health"
    from_gateway = reach(gateway, "http://controller-api:8081/healthz", health)
    assert set(from_gateway.values()) == {"ok 200"}, from_gateway
    assert reach(controller, health) == {health: "ok 200"}
    published = f"http://127.0.0.1:{stack.env['MODELCTL_API_PORT']}/healthz"
    with urllib.request.urlopen(published, timeout=5) as answer:
        assert answer.status == 200
    deadline = time.monotonic() + 60
    while (
        state := controller.attrs["State"]["Health"]["Status"]
    ) != "healthy" and time.monotonic() < deadline:
        time.sleep(1)
        controller.reload()
    assert state == "healthy"


def replica_ids(stack: Stack) -> set[str]:
    """Every container (running or not) the stack's controller started."""
    client = docker.from_env()
    found = client.containers.list(
        all=True, filters={"label": f"io.modelctl.instance={stack.env['MODELCTL_INSTANCE']}"}
    )
    client.close()
    return {str(c.id) for c in found}


# Last in this module on purpose: it takes the stack down (the fixture's teardown then finds
# nothing left to remove).
def test_a_controller_restart_adopts_the_replicas_and_plain_down_removes_them(stack: Stack) -> None:
    """`docker compose restart controller` keeps the very replica containers (the restarted
    controller adopts them); plain `docker compose down` (no --remove-orphans, no make) leaves no
    container and no network of the stack behind: the `replicas` provider service removes them."""
    running_replica(stack)
    before = replica_ids(stack)
    assert before

    restarted = compose(stack, "restart", "controller")
    assert restarted.returncode == 0, restarted.stderr
    deadline = time.monotonic() + 120
    while " Ready " not in (status := wrapper(stack, "status")).stdout and time.monotonic() < deadline:
        time.sleep(1)
    assert " Ready " in status.stdout, status.stdout + status.stderr
    assert replica_ids(stack) == before  # adopted, not replaced

    down = compose(stack, "down")
    print(down.stderr)
    assert down.returncode == 0, down.stderr
    assert "Resource is still in use" not in down.stderr
    assert f"{len(before)} container(s) removed" in down.stderr  # the provider's, through compose
    assert replica_ids(stack) == set()
    client = docker.from_env()
    networks = [
        n.name
        for n in client.networks.list()
        if n.name
        in {stack.env[k] for k in ("MODELCTL_NETWORK", "MODELCTL_CONTROL_NETWORK", "MODELCTL_EGRESS_NETWORK")}
    ]
    leftovers = client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={stack.project}"}
    )
    client.close()
    assert networks == [] and leftovers == []
