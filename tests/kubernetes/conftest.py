"""Fixtures for the Kubernetes tests that need a real Docker engine (and, for podman, the images
copied from it). They do not skip: without an engine or images they fail naming the make target."""

from __future__ import annotations

import docker
import docker.errors
import pytest

MODELCTL_IMAGE = "modelctl/modelctl:local"
LLAMACPP_IMAGE = "modelctl/llamacpp:server"


@pytest.fixture(scope="session")
def docker_client(docker_client: docker.DockerClient) -> docker.DockerClient:
    """tests/conftest.py's client, once the images these tests run are there."""
    for tag in (MODELCTL_IMAGE, LLAMACPP_IMAGE):
        try:
            docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {tag} is missing; run `make images`")
    return docker_client
