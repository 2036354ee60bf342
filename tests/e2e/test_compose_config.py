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


def test_down_reaches_the_replicas_provider_after_the_controller() -> None:
    """`docker compose down` runs scripts/compose-provider for the `replicas` provider service, for
    this controller instance, and only once the controller (which depends on it) is gone."""
    env = plain_shell_env()
    config = compose_config(env)
    replicas = config["services"]["replicas"]
    assert replicas["provider"]["type"] == "./scripts/compose-provider"
    assert replicas["provider"]["options"] == {"instance": ["default"], "image": ["modelctl/modelctl:local"]}
    assert (REPO / "scripts" / "compose-provider").stat().st_mode & 0o111
    assert "replicas" in config["services"]["controller"]["depends_on"]
    custom = compose_config({**env, "MODELCTL_INSTANCE": "blue"})["services"]["replicas"]
    assert custom["provider"]["options"]["instance"] == ["blue"]


def test_the_provider_speaks_composes_protocol() -> None:
    """Every line the script prints is a JSON message compose accepts; `metadata` describes it."""
    script = str(REPO / "scripts" / "compose-provider")
    metadata = subprocess.run([script, "compose", "metadata"], capture_output=True, text=True, check=True)
    described = json.loads(metadata.stdout)
    assert [p["name"] for p in described["down"]["parameters"]] == ["instance", "image"]
    up = subprocess.run(
        [script, "compose", "--project-name=p", "up", "--instance=blue", "--image=x", "replicas"],
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = up.stdout.splitlines()
    assert json.loads(line) == {
        "type": "info",
        "message": "replicas of controller instance 'blue' are removed by docker compose down",
    }
    unknown = subprocess.run([script, "compose", "frobnicate", "replicas"], capture_output=True, text=True)
    assert unknown.returncode == 2 and json.loads(unknown.stdout)["type"] == "error"


def test_the_hub_cache_volume_is_the_one_the_replicas_mount_and_a_mirror_on_the_host_is_reachable() -> None:
    env = plain_shell_env()
    config = compose_config(env)
    controller = config["services"]["controller"]
    assert config["volumes"]["hub-cache"]["name"] == "modelctl-hub-cache"
    assert controller["environment"]["MODELCTL_HUB_VOLUME"] == "modelctl-hub-cache"
    assert controller["extra_hosts"] == ["host.docker.internal=host-gateway"]  # HF_ENDPOINT on the host
    own = compose_config({**env, "MODELCTL_HUB_VOLUME": "stack-b-hub"})
    assert own["volumes"]["hub-cache"]["name"] == "stack-b-hub"
    assert own["services"]["controller"]["environment"]["MODELCTL_HUB_VOLUME"] == "stack-b-hub"
