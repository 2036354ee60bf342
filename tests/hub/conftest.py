"""The stand-in Hub serving SmolLM2's real files, and a hub cache in a temporary folder."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.hub.cache import HubCache
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from tests.hub.standin import HubFile, StandInHub, beside_repos, serve, smollm2_repos, split_repo

MODELS = Path(os.environ.get("MODELCTL_MODEL_ROOT", "/work/main/models-data"))
GGUF_REPO = "stand-in/SmolLM2-135M-Instruct-GGUF"
ST_REPO = "stand-in/SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def repos() -> dict[str, dict[str, HubFile]]:
    return smollm2_repos(MODELS) | beside_repos(MODELS) | split_repo(MODELS)


@pytest.fixture
async def hub(repos: dict[str, dict[str, HubFile]]) -> AsyncIterator[tuple[StandInHub, str]]:
    standin = StandInHub(repos)
    runner, url = await serve(standin)
    yield standin, url
    await runner.cleanup()


@pytest.fixture
def cache(tmp_path: Path) -> HubCache:
    return HubCache(tmp_path / "hub")


def hub_model(ref: str, engine: str, secrets: dict[str, str] | None = None) -> LoadedModel:
    """A hub model as the loader makes it; ``secrets`` are env references (``${NAME}`` in the
    manifest) with the values the loader filled in."""
    env = {name: f"${{{name}}}" for name in secrets or {}}
    manifest = ModelManifest.model_validate({"name": "smollm2", "model": ref, "engine": engine, "env": env})
    filled = tuple(sorted(secrets.items())) if secrets else None
    return LoadedModel(manifest, "models/smollm2.yaml", None, None, filled_env=filled)
