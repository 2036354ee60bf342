"""The rendered Deployment of the example model, run for real by Debian's podman (`podman kube
play`, a real consumer of Kubernetes YAML): llama-server answers /health and a chat completion with
the rendered flags, as nobody, with a read-only root and read-only weights (hostPath, opt-in).

What podman 4.3 does not do as a cluster would (named in docs/kubernetes.md): it publishes every
containerPort on the host (so two replicas of one model clash on one host: this renders the example
with ``replicas: 1``), runs no readiness or startup probe (the liveness probe becomes a podman
healthcheck), ignores Services, rollout strategy and PodDisruptionBudgets, and has no nvidia.com/gpu
device plugin. `make test` runs scripts/ensure-podman.sh first (podman, its ulimit setting, the
image copied from Docker).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kubernetes.options import RenderOptions
from controller.kubernetes.render import render, write

from .conftest import LLAMACPP_IMAGE
from .support import GGUF, REPO, model_root

pytestmark = [pytest.mark.podman, pytest.mark.docker]

ENGINE_PORT = 8080  # the engine's port inside the pod (the rendered containerPort)
CONTAINER = "smollm2-pod-0-llamacpp"  # podman's name: <deployment>-pod-<n>-<container>


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing; run scripts/ensure-podman.sh (make test does)")
    if podman("image", "exists", LLAMACPP_IMAGE).returncode != 0:
        pytest.fail(f"{LLAMACPP_IMAGE} is not in podman's store; run scripts/ensure-podman.sh")
    root = model_root()
    if not (root / GGUF).is_file():
        pytest.fail(f"{root / GGUF} is missing; run `make example-model`")
    manifests = tmp_path / "models"
    manifests.mkdir()
    text = (REPO / "models" / "smollm2.yaml").read_text()
    (manifests / "smollm2.yaml").write_text(text.replace("replicas: 2 ", "replicas: 1 "))
    options = RenderOptions(host_model_root=str(root))
    write(render(manifests, options, model_root=root), tmp_path / "out")
    path = tmp_path / "out" / "deployment-smollm2.yaml"
    publish_on_a_free_port(path)
    yield path
    podman("kube", "down", str(path))


def publish_on_a_free_port(path: Path) -> None:
    """Give the rendered containerPort a free hostPort: podman 4.3 would otherwise publish it on the
    host's port of the same number (8080), which a running `make up` stack holds."""
    deployment = yaml.safe_load(path.read_text())
    (port,) = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port["containerPort"] == ENGINE_PORT
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port["hostPort"] = probe.getsockname()[1]
    path.write_text(yaml.safe_dump(deployment))


def host_port(path: Path) -> int:
    (port,) = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"][0]["ports"]
    return int(port["hostPort"])


def get(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return resp.status, json.load(resp)


def test_podman_kube_play_serves_the_rendered_deployment(deployment: Path) -> None:
    played = podman("kube", "play", "--replace", str(deployment))
    assert played.returncode == 0, played.stderr
    base = f"http://127.0.0.1:{host_port(deployment)}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if get(f"{base}/health")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, podman("logs", CONTAINER).stderr[-2000:]
        time.sleep(0.5)
    status, answer = get(
        f"{base}/v1/chat/completions",
        {"model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]},
    )
    assert status == 200 and answer["choices"][0]["message"]["content"]
    _, listed = get(f"{base}/v1/models")
    assert "smollm2" in json.dumps(listed)  # --alias from the rendered args

    container = yaml.safe_load(deployment.read_text())["spec"]["template"]["spec"]["containers"][0]
    (info,) = json.loads(podman("inspect", CONTAINER).stdout)
    assert info["Config"]["User"] == "65534:65534" and info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["Config"]["Cmd"] == container["args"]  # the rendered flags, the image's entrypoint
    # The liveness probe became podman's healthcheck (readiness and startup probes have no equivalent).
    assert f"http://localhost:{ENGINE_PORT}/health" in " ".join(info["Config"]["Healthcheck"]["Test"])
    (weights,) = [m for m in info["Mounts"] if m["Destination"].endswith(GGUF)]
    assert weights["RW"] is False
    write_try = podman("exec", CONTAINER, "sh", "-c", f"echo x >> {weights['Destination']}")
    assert write_try.returncode != 0  # read-only weights
    status_line = podman(
        "exec", CONTAINER, "sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/1/status"
    )
    assert "CapEff:\t0000000000000000" in status_line.stdout and "NoNewPrivs:\t1" in status_line.stdout
