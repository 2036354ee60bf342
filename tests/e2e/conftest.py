"""Fixtures of the end-to-end tests: the host folder of the weights the stacks mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support import GGUF, REPO


@pytest.fixture(scope="session")
def model_root() -> Path:
    """MODELCTL_MODEL_ROOT, else ./models-data of the checkout; fails naming `make model` when the
    example weights are not there."""
    root = Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")).absolute()
    if not (root / GGUF).is_file():
        pytest.fail(f"{root / GGUF} is missing; run `make model`")
    return root
