"""The composition root's edge behaviour that needs no engine: Docker unavailable at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controller.app import connect_with_retry
from controller.errors import RuntimeUnavailable
from controller.settings import ControllerSettings


async def test_docker_unavailable_is_retried_said_and_then_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ControllerSettings(docker_url=f"unix://{tmp_path}/no-docker.sock", docker_wait_s=1.5)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(RuntimeUnavailable, match="Docker engine unreachable"),
    ):
        await connect_with_retry(settings)
    retries = [r for r in caplog.records if "Docker engine unavailable" in r.getMessage()]
    assert len(retries) >= 2


def test_settings_from_the_environment() -> None:
    env = {
        "MODELCTL_MANIFESTS": "/etc/m",
        "MODELCTL_MODEL_ROOTS": "/a:/b",
        "MODELCTL_API_PORT": "9000",
        "MODELCTL_DRAIN_GRACE_S": "5",
    }
    settings = ControllerSettings.from_env(env, instance="x", network=None)
    assert settings.manifests == Path("/etc/m") and settings.model_roots == (Path("/a"), Path("/b"))
    assert (settings.api_port, settings.drain_grace_s, settings.instance) == (9000, 5.0, "x")
    assert settings.network == "modelctl"
