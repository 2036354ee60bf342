"""Fixtures for the Kubernetes tests that need a real Docker engine (and, for podman, the images
copied from it). They do not skip: without an engine or images they fail naming the make target."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import docker.errors
import pytest

MODELCTL_IMAGE = "modelctl/modelctl:local"
LLAMACPP_IMAGE = "modelctl/llamacpp:server"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run `make docker` (or `make test`)")
    for tag in (MODELCTL_IMAGE, LLAMACPP_IMAGE):
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {tag} is missing; run `make images`")
    yield client
    client.close()
