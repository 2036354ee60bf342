"""A cold hf:// model pulled by the controller from a stand-in Hub (the real one cannot be reached
from here; ``tests/hub/standin.py`` serves SmolLM2's real GGUF the way the Hub's file API does),
then served by a real llama.cpp replica that reads it from the hub cache by its local path. A
streamed chat request sent while the pull runs is held by the gateway with ``: loading`` comments
that carry the pull's progress, and gets its answer after the pull and the start."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import docker
import pytest

from controller.app import running_controller
from controller.gateway.settings import GatewaySettings
from tests.hub.standin import COMMIT, StandInHub, serve, smollm2_repos

from .support import managed, remove_instance, settings, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

REPO = "stand-in/SmolLM2-135M-Instruct-GGUF"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


async def test_a_cold_hub_model_is_pulled_with_progress_then_served(
    tmp_path: Path,
    model_root: Path,
    instance: str,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = StandInHub(smollm2_repos(model_root), pause_s=0.06)  # ~6 s for SmolLM2's 94 MiB
    runner, url = await serve(hub)
    monkeypatch.setenv("HF_ENDPOINT", url)
    manifests = tmp_path / "models"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(
        f"name: hubbed\nmodel: hf://{REPO}:q4_1\nengine: llamacpp\nreplicas: 1\nmax_batch_size: 1\n"
        "context_length: 512\n"
    )
    cache = tmp_path / "hub-cache"
    config = settings(manifests, model_root, instance, hub_cache=cache)
    gateway = GatewaySettings(host="127.0.0.1", port=0, loading_comment_interval_s=0.3)
    try:
        async with running_controller(config, gateway=gateway) as rc:
            comments, answer = await held_stream(f"{rc.gateway_url}/v1/chat/completions")
            await wait_ready(rc, "hubbed", 1)
            kinds = [(e.kind, e.reason) for e in rc.reports.current().events]
            [container] = managed(docker_client, instance)
            command = container.attrs["Config"]["Cmd"]
            mounts = [(m["Destination"], m["RW"], m["Source"]) for m in container.attrs["Mounts"]]
    finally:
        remove_instance(docker_client, instance)
        await runner.cleanup()

    percents = [int(c.split("pulling ")[1].split("%")[0]) for c in comments if "% (" in c]
    assert all(c.startswith(": loading hubbed: pulling ") for c in comments if "pulling" in c), comments
    assert any(0 < p < 100 for p in percents), comments  # the held stream heard the pull's progress
    assert percents == sorted(percents), comments
    assert answer, comments  # and got its answer after the pull and the start
    assert hub.downloads == {GGUF: 1}
    assert any(kind == "pulling" for kind, _ in kinds) and any(
        kind == "pulled" and "100%" in reason for kind, reason in kinds
    ), kinds
    snapshot = f"/cache/huggingface/hub/models--stand-in--SmolLM2-135M-Instruct-GGUF/snapshots/{COMMIT}"
    assert command[:2] == ["-m", f"{snapshot}/{GGUF}"] and "-hf" not in command
    assert mounts == [("/cache", False, str(cache.resolve()))]


async def held_stream(url: str) -> tuple[list[str], str]:
    """A streamed chat request: the SSE comment lines it got, and the answer's text."""
    body = {
        "model": "hubbed",
        "stream": True,
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    comments, text = [], []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line.removeprefix("data: "))
                assert "error" not in chunk, chunk
                text += [c["delta"].get("content") or "" for c in chunk.get("choices", [])]
    return comments, "".join(text)
