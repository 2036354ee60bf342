"""Shared test setup: warnings are errors (pyproject); the Docker client both Docker-backed folders
(tests/integration, tests/kubernetes) use. Their other fixtures live in their folders."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import docker.errors
import pytest


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The local Docker engine; fails (never skips) naming the make target when there is none."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run `make docker` (or `make test`)")
    yield client
    client.close()
