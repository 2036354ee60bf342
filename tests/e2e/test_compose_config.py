"""compose.yaml as plain `docker compose` reads it, outside make: no variable needs to be set, the
weights folder defaults to ./models-data of the checkout, and the controller API is published on
the host's loopback only. Needs the Compose v2 binary, not a Docker engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def compose_config(env: dict[str, str]) -> dict[str, Any]:
    if shutil.which("docker") is None:
        pytest.skip("no docker client")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        pytest.skip(f"no Compose v2 plugin: {version.stderr.strip()}")
    done = subprocess.run(
        ["docker", "compose", "config", "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def plain_shell_env() -> dict[str, str]:
    """The environment of a new shell in the checkout: no MODELCTL_* variables, PWD the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCTL_")}
    return {**env, "PWD": str(REPO)}


def test_plain_compose_needs_no_variable_and_finds_the_weights_of_the_checkout() -> None:
    controller = compose_config(plain_shell_env())["services"]["controller"]
    root = str(REPO / "models-data")
    assert controller["environment"]["MODELCTL_MODEL_ROOTS"] == root
    mounts = {m["target"]: m for m in controller["volumes"]}
    assert mounts[root]["source"] == root and mounts[root]["read_only"] is True
    assert mounts["/etc/modelctl/models"]["source"] == str(REPO / "models")


def test_manifest_errors_are_shown_under_the_hosts_folder_name() -> None:
    env = plain_shell_env()
    controller = compose_config(env)["services"]["controller"]
    assert controller["environment"]["MODELCTL_MANIFESTS_SHOWN_AS"] == "models"
    custom = compose_config({**env, "MODELCTL_MANIFESTS": str(REPO / "examples")})["services"]["controller"]
    assert custom["environment"]["MODELCTL_MANIFESTS_SHOWN_AS"] == str(REPO / "examples")


def test_the_controller_api_is_published_on_loopback_only() -> None:
    (port,) = compose_config(plain_shell_env())["services"]["controller"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8081", 8081)


def test_replicas_network_is_internal_and_the_api_listens_on_the_control_network_only() -> None:
    config = compose_config(plain_shell_env())
    controller, gateway = config["services"]["controller"], config["services"]["gateway"]
    assert config["networks"]["modelctl"]["internal"] is True  # published ports never land there
    assert not config["networks"]["control"].get("internal")
    assert controller["networks"]["control"]["aliases"] == ["controller-api"]
    assert set(controller["networks"]) == set(gateway["networks"]) == {"control", "modelctl"}
    env = controller["environment"]
    assert env["MODELCTL_API_HOST"] == "controller-api"  # not 0.0.0.0: not on the replicas' network
    assert env["MODELCTL_NETWORK"] == "modelctl" and env["MODELCTL_EGRESS_NETWORK"] == "modelctl-egress"
    assert "http://controller-api:8081" in gateway["command"]
    assert "controller-api:8081/healthz" in " ".join(controller["healthcheck"]["test"])
    state = {m["target"]: m for m in controller["volumes"]}["/var/lib/modelctl"]
    assert state["type"] == "volume" and env["MODELCTL_STATE_DIR"] == "/var/lib/modelctl"
