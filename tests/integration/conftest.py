"""Fixtures for tests against the real Docker engine and real llama.cpp containers.

These tests do not skip: without an engine or the locally built images they fail and say which
`make` target sets things up (`make test` runs those targets first).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from .support import GGUF, remove_instance

REPO = Path(__file__).resolve().parents[2]

LLAMACPP_IMAGE = "modelctl/llamacpp:server"


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> None:
    for tag in (LLAMACPP_IMAGE,):
        try:
            docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {tag} is missing; run `make images`")


@pytest.fixture(scope="session")
def model_root() -> Path:
    root = Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")).absolute()
    if not (root / GGUF).is_file():
        pytest.fail(f"{root / GGUF} is missing; run `make model`")
    return root


@pytest.fixture
def instance(docker_client: docker.DockerClient) -> Iterator[str]:
    """A controller instance (and network) of this test's own; everything it started is removed."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    remove_instance(docker_client, name)
