"""Requests with ``tools`` through the gateway to real engines, with the flags modelctl now sets.

vLLM answers 400 to any request with ``tools`` unless it was started with
``--enable-auto-tool-choice --tool-call-parser NAME``; modelctl chooses the parser from the
weights' config.json and chat template (controller/engines/parsers.py). SmolLM2 is a Llama
(LlamaForCausalLM) with a ChatML template that renders no tools: the table gives it Hermes's
parser, and the model answers in text, which the parser passes through as content. llama.cpp gets
``--jinja`` and ``--reasoning-format deepseek``. One stack for the module: the vLLM stand-in
serving SmolLM2 as safetensors, and llama-server serving its GGUF (vLLM starts in ~35-60 s here).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import docker
import ollama
import openai
import pytest
import pytest_asyncio

from controller.app import RunningController, running_controller
from controller.gateway.settings import GatewaySettings
from controller.runtime import labels

from .support import GGUF, managed, remove_instance, settings, wait_ready

pytestmark = [
    pytest.mark.docker,
    pytest.mark.vllm,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]

VLLM_MODEL = "smol-vllm"
LLAMACPP_MODEL = "smol-gguf"
MANIFESTS = f"""\
name: {VLLM_MODEL}
model: smollm2-safetensors
engine: vllm
replicas: 1
max_batch_size: 2
context_length: 1024
args: ["--dtype", "bfloat16"]
env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
---
name: {LLAMACPP_MODEL}
model: {GGUF}
replicas: 1
max_batch_size: 1
context_length: 1024
"""
READY_TIMEOUT_S = 300
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
INSTANCE: list[str] = []  # the module stack's controller instance, for listing its containers
ASK: Any = [{"role": "user", "content": "What is the weather in Oslo?"}]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    manifests = tmp_path_factory.mktemp("manifests")
    (manifests / "models.yaml").write_text(MANIFESTS)
    config = settings(manifests, model_root, f"test-{uuid.uuid4().hex[:8]}")
    INSTANCE[:] = [config.instance]
    try:
        async with running_controller(config, gateway=GatewaySettings(host="127.0.0.1", port=0)) as rc:
            await wait_ready(rc, LLAMACPP_MODEL, 1, READY_TIMEOUT_S)
            await wait_ready(rc, VLLM_MODEL, 1, READY_TIMEOUT_S)
            yield rc
    finally:
        remove_instance(docker_client, config.instance)


async def test_the_engines_start_with_the_tool_flags(
    stack: RunningController, docker_client: docker.DockerClient
) -> None:
    found = {
        container.labels[labels.ENGINE]: list(container.attrs["Config"]["Cmd"] or [])
        for container in managed(docker_client, INSTANCE[0])
    }
    vllm = found["vllm"]
    at = vllm.index("--enable-auto-tool-choice")
    assert vllm[at + 1 : at + 3] == ["--tool-call-parser", "hermes"], vllm
    assert "--jinja" in found["llamacpp"], found["llamacpp"]
    assert found["llamacpp"][found["llamacpp"].index("--reasoning-format") + 1] == "deepseek"


def openai_client(rc: RunningController) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", [VLLM_MODEL, LLAMACPP_MODEL])
async def test_a_tools_request_is_answered_through_the_openai_client(
    stack: RunningController, model: str
) -> None:
    client = openai_client(stack)
    answer = await client.chat.completions.create(
        model=model,
        messages=ASK,
        tools=[WEATHER],
        max_tokens=24,
        temperature=0,
    )
    message = answer.choices[0].message
    print(f"{model} (openai): content={message.content!r} tool_calls={message.tool_calls!r}")
    assert message.content or message.tool_calls, answer
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


async def test_a_streamed_tools_request_on_vllm(stack: RunningController) -> None:
    client = openai_client(stack)
    stream = await client.chat.completions.create(
        model=VLLM_MODEL,
        messages=ASK,
        tools=[WEATHER],
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    parts: list[str] = []
    async for chunk in stream:
        if chunk.choices and (chunk.choices[0].delta.content or chunk.choices[0].delta.tool_calls):
            parts.append(str(chunk.choices[0].delta.content or chunk.choices[0].delta.tool_calls))
    print(f"{VLLM_MODEL} (openai, streamed): {''.join(parts)!r}")
    assert parts


async def test_a_tools_request_through_the_anthropic_client(stack: RunningController) -> None:
    client = anthropic.AsyncAnthropic(base_url=str(stack.gateway_url), api_key="unused", max_retries=0)
    tool: Any = {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "input_schema": WEATHER["function"]["parameters"],
    }
    answer = await client.messages.create(
        model=VLLM_MODEL,
        max_tokens=24,
        tools=[tool],
        messages=ASK,
    )
    print(f"{VLLM_MODEL} (anthropic): {[block.model_dump() for block in answer.content]!r}")
    assert answer.content and answer.content[0].type in ("text", "tool_use"), answer


async def test_a_tools_request_through_the_ollama_client(stack: RunningController) -> None:
    client = ollama.AsyncClient(host=str(stack.gateway_url))
    answer = await client.chat(
        model=VLLM_MODEL, messages=ASK, tools=[WEATHER], options={"num_predict": 24, "temperature": 0}
    )
    print(f"{VLLM_MODEL} (ollama): {answer.message!r}")
    assert answer.message.content or answer.message.tool_calls, answer
