"""The gateway's DNS table source on a real Docker network: replicas share one network alias (as
pods share a headless Service's name), the gateway runs in a container on that network (the host
cannot ask Docker's embedded DNS) from this checkout, with MODELCTL_GATEWAY_TABLE=dns.

It balances over the replicas, sees one leave and one join within a few seconds, and serves the
last good set while DNS fails (the container's resolver pointed at an address that never answers).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from controller.kubernetes.gateway import models_document
from controller.kubernetes.options import RenderOptions
from controller.kubernetes.render import load_models

from .conftest import MODELCTL_IMAGE
from .support import REPO

pytestmark = pytest.mark.docker

ALIAS = "smollm2"  # the model's headless Service name on a cluster
NOTICE_S = 5.0  # "within a few seconds": the gateway resolves every 0.5 s here
# A replica: a tiny OpenAI-shaped server (aiohttp, in the modelctl image) that answers with its name.
REPLICA = """
import socket
from aiohttp import web
name = socket.gethostname()
async def health(request):
    return web.json_response({"status": "ok"})
async def chat(request):
    await request.read()
    message = {"role": "assistant", "content": name}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return web.json_response({"id": "c", "object": "chat.completion", "model": "m", "choices": [choice]})
app = web.Application()
app.router.add_get("/health", health)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, port=8080, print=None)
"""
# The model as a manifest; the gateway reads what the renderer puts in its ConfigMap.
MANIFEST = "name: smollm2\nmodel: hf://org/repo:Q4_1\nbalancing: round-robin\nmax_batch_size: 4\n"


def models_json(tmp: Path) -> str:
    (tmp / "m.yaml").write_text(MANIFEST)
    models = [model for model, _ in load_models(tmp / "m.yaml", None)]
    return models_document(models, RenderOptions())


class Stack:
    def __init__(self, client: docker.DockerClient, tmp: Path) -> None:
        self.client = client
        self.tag = uuid.uuid4().hex[:8]
        self.network = client.networks.create(f"modelctl-dns-{self.tag}", labels={"io.modelctl.test": "dns"})
        self.containers: list[docker.models.containers.Container] = []
        (tmp / "models.json").write_text(models_json(tmp))
        self.config = tmp

    def replica(self, n: int) -> docker.models.containers.Container:
        container = self.client.containers.create(
            MODELCTL_IMAGE,
            entrypoint=["python3", "-c", REPLICA],
            name=f"modelctl-dns-{self.tag}-r{n}",
            hostname=f"replica-{n}",
            detach=True,
        )
        self.network.connect(container, aliases=[ALIAS])
        self.client.networks.get("bridge").disconnect(container)
        container.start()
        self.containers.append(container)
        return container

    def gateway(self) -> str:
        container = self.client.containers.run(
            MODELCTL_IMAGE,
            ["gateway"],
            name=f"modelctl-dns-{self.tag}-gw",
            user="65534:65534",
            environment={
                "PYTHONPATH": "/src",  # this checkout's controller, over the image's
                "MODELCTL_GATEWAY_TABLE": "dns",
                "MODELCTL_GATEWAY_MODELS": "/config/models.json",
                "MODELCTL_GATEWAY_DNS_INTERVAL_S": "0.5",
            },
            volumes={
                str(REPO): {"bind": "/src", "mode": "ro"},
                str(self.config): {"bind": "/config", "mode": "ro"},
            },
            network=self.network.name,
            ports={"8080/tcp": ("127.0.0.1", None)},
            detach=True,
        )
        self.containers.append(container)
        self.gw = container
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        for container in self.containers:
            container.remove(force=True)
        self.network.remove()


@pytest.fixture
def stack(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Stack]:
    tmp_path.chmod(0o755)
    s = Stack(docker_client, tmp_path)
    yield s
    s.close()


def chat(url: str) -> str:
    body = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.load(resp)["choices"][0]["message"]["content"])


def served_by(url: str, n: int = 12) -> Counter[str]:
    return Counter(chat(url) for _ in range(n))


def ready_replicas(url: str) -> int:
    """What the gateway's table holds now (its /metrics), not what a request happened to meet."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    (line,) = [
        x for x in text.splitlines() if x.startswith('modelctl_gateway_ready_replicas{model="smollm2"}')
    ]
    return int(float(line.split()[-1]))


def within(seconds: float, what: str, check: Callable[[], bool]) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds}s: {what}")


def test_dns_discovery_on_a_docker_network_alias(stack: Stack) -> None:
    stack.replica(0)
    leaving = stack.replica(1)
    url = stack.gateway()
    within(60, "the gateway serves both replicas", lambda: set(served_by(url)) == {"replica-0", "replica-1"})
    counts = served_by(url, 20)
    assert counts == Counter({"replica-0": 10, "replica-1": 10})  # round robin over the alias

    leaving.stop(timeout=1)
    left = within(NOTICE_S, "replica-1 leaves the table", lambda: ready_replicas(url) == 1)
    assert set(served_by(url)) == {"replica-0"}
    stack.replica(2)
    joined = within(NOTICE_S, "replica-2 joins the table", lambda: ready_replicas(url) == 2)
    # A network alias lists a container once it runs, not once it is ready (a headless Service
    # waits for readiness): until replica-2 listens, the gateway retries its requests elsewhere.
    within(NOTICE_S, "replica-2 serves", lambda: set(served_by(url)) == {"replica-0", "replica-2"})

    # DNS fails: the gateway's resolver now points at an address that never answers.
    broken = "nameserver 192.0.2.1\noptions timeout:1 attempts:1\n"
    original = stack.gw.exec_run(["cat", "/etc/resolv.conf"], user="0").output.decode()
    assert stack.gw.exec_run(["sh", "-c", f"printf '{broken}' > /etc/resolv.conf"], user="0").exit_code == 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # the last good set keeps serving, requests never fail
        assert set(served_by(url, 4)) == {"replica-0", "replica-2"}
    logs = stack.gw.logs().decode()
    assert logs.count(f"DNS: cannot resolve {ALIAS}") == 1, logs  # once per distinct error
    stack.gw.exec_run(["sh", "-c", f"cat > /etc/resolv.conf <<'EOF'\n{original}EOF"], user="0")
    within(NOTICE_S, "DNS answers again", lambda: f"DNS: {ALIAS} resolves again" in stack.gw.logs().decode())
    print(f"left after {left:.1f}s, joined after {joined:.1f}s")
