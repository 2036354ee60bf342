"""A ${NAME} reference in a manifest's env reaches the real container's environment, filled in,
while the manifest (in git) and the controller's objects never show the value."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from controller.engines import build_spec
from controller.manifests.loader import load_folder
from controller.runtime.docker import DockerRuntime

from .support import GGUF

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]


def test_a_referenced_secret_is_in_the_container_env_only(
    docker_client: docker.DockerClient, instance: str, model_root: Path, tmp_path: Path
) -> None:
    secret = "hf_integration-secret"
    (tmp_path / "m.yaml").write_text(f"name: m\nmodel: {GGUF}\nenv:\n  HF_TOKEN: ${{HF_TOKEN}}\n")
    (model,) = load_folder(tmp_path, model_roots=[model_root], environ={"HF_TOKEN": secret})
    runtime = DockerRuntime(docker_client, instance=instance, network=f"modelctl-{instance}")
    runtime.ensure_network()
    spec = build_spec(model, 0)
    attrs = docker_client.api.inspect_container(runtime.create(spec))
    assert f"HF_TOKEN={secret}" in attrs["Config"]["Env"]
    assert "${HF_TOKEN}" in (tmp_path / "m.yaml").read_text()
    assert secret not in repr(model) + repr(spec)
    assert all(secret not in value for value in attrs["Config"]["Labels"].values())
