"""A LoRA adapter named as a hub reference (``adapters: [{name: a, path: hf://test/smollm2-lora}]``)
beside host weights: the controller pulls it from the stand-in Hub (``tests/hub/standin.py``
serves the real adapter GGUF of ``make shapes``) before the start, and a real llama.cpp replica
loads it from the read-only hub cache; the adapter, by its own name, answers otherwise than the
base model (temperature 0, the same prompt)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import docker
import pytest

from controller.app import running_controller
from controller.gateway.settings import GatewaySettings
from tests.hub.standin import COMMIT, StandInHub, beside_repos, serve

from .support import managed, remove_instance, settings, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LORA = "smollm2-lora-a.gguf"


async def test_a_hub_adapter_is_pulled_then_served_by_name(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    hub = StandInHub(beside_repos(model_root))
    runner, url = await serve(hub)
    monkeypatch.setenv("HF_ENDPOINT", url)
    manifests = tmp_path / "models"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(
        f"name: smollm2\nmodel: {GGUF}\nengine: llamacpp\nreplicas: 1\nmax_batch_size: 1\n"
        "context_length: 512\nadapters: [{name: smollm2-a, path: 'hf://test/smollm2-lora'}]\n"
    )
    cache = tmp_path / "hub-cache"
    config = settings(manifests, model_root, instance, hub_cache=cache)
    try:
        async with running_controller(config, gateway=GatewaySettings(host="127.0.0.1", port=0)) as rc:
            await wait_ready(rc, "smollm2", 1, timeout=240)
            base = await answer(f"{rc.gateway_url}/v1/chat/completions", "smollm2")
            adapted = await answer(f"{rc.gateway_url}/v1/chat/completions", "smollm2-a")
            kinds = [(e.kind, e.reason) for e in rc.reports.current().events]
            [container] = managed(docker_client, instance)
            command = container.attrs["Config"]["Cmd"]
            mounts = {m["Destination"]: (m["RW"], m["Source"]) for m in container.attrs["Mounts"]}
    finally:
        remove_instance(docker_client, instance)
        await runner.cleanup()

    assert hub.downloads == {LORA: 1}
    assert any(
        kind == "pulled" and reason.startswith("hf://test/smollm2-lora (adapter:smollm2-a)")
        for kind, reason in kinds
    ), kinds
    snapshot = f"/cache/huggingface/hub/models--test--smollm2-lora/snapshots/{COMMIT}"
    assert command[command.index("--lora-scaled") + 1] == f"{snapshot}/{LORA}:0"
    assert mounts["/cache"] == (False, str(cache.resolve()))  # read-only
    assert base and adapted and base != adapted, (base, adapted)


async def answer(url: str, model: str) -> str:
    body = {
        "model": model,
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Name a colour."}],
    }
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    return str(data["choices"][0]["message"]["content"])
