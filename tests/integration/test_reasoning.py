"""Reasoning through a real engine, in every API the gateway serves: llama-server (b11434, with the
``--reasoning-format deepseek`` modelctl passes) parses the model's thinking out of its answer, and
each API gets it where its clients look for it.

The model is SmolLM2 with a reasoning model's chat template (``smollm2-think``, made by
``make shapes``: QwQ-32B's template, whose generation prompt opens a ``<think>`` block), so what
the model writes is thinking until it writes ``</think>``. A grammar (a llama-server request field)
makes it close the block and answer, for the one test that needs both parts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import docker
import ollama
import openai
import pytest
import pytest_asyncio

from controller.app import RunningController, running_controller
from controller.gateway.settings import GatewaySettings

from .support import remove_instance, settings, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images"), pytest.mark.asyncio(loop_scope="module")]

MODEL = "smol-think"
MANIFEST = f"""\
name: {MODEL}
model: smollm2-think/SmolLM2-135M-Instruct-think.gguf
replicas: 1
max_batch_size: 2
context_length: 1024
"""
ASK: Any = [{"role": "user", "content": "Say hello."}]
# Thinking, then the answer: a few words each (at most 30 characters each: with max_tokens 160
# the answer is never cut before it starts, even at one token per character).
GRAMMAR = r'root ::= [a-z ]{3,30} "</think>" [a-z ]{3,30}'


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    if not (model_root / "smollm2-think").is_dir():
        pytest.fail(f"{model_root}/smollm2-think is missing; run `make shapes`")
    manifests = tmp_path_factory.mktemp("manifests")
    (manifests / "models.yaml").write_text(MANIFEST)
    config = settings(manifests, model_root, f"test-{uuid.uuid4().hex[:8]}")
    try:
        async with running_controller(config, gateway=GatewaySettings(host="127.0.0.1", port=0)) as rc:
            await wait_ready(rc, MODEL, 1)
            yield rc
    finally:
        remove_instance(docker_client, config.instance)


def openai_client(rc: RunningController) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused", max_retries=0)


async def test_openai_chat_returns_the_thinking_as_reasoning_content(stack: RunningController) -> None:
    answer = await openai_client(stack).chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=16, temperature=0
    )
    message = answer.choices[0].message
    thinking = (message.model_extra or {}).get("reasoning_content")
    print(f"openai: reasoning_content={thinking!r} content={message.content!r}")
    assert isinstance(thinking, str) and thinking.strip(), answer
    assert "<think>" not in (message.content or "")


async def test_a_streamed_answer_has_its_thinking_and_its_answer_apart(stack: RunningController) -> None:
    stream = await openai_client(stack).chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=160, temperature=0, stream=True, extra_body={"grammar": GRAMMAR}
    )
    thinking, content = [], []
    async for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        thinking.append((delta.model_extra or {}).get("reasoning_content") or "")
        content.append(delta.content or "")
    print(f"openai streamed: reasoning={''.join(thinking)!r} content={''.join(content)!r}")
    assert "".join(thinking).strip() and "".join(content).strip()
    assert "</think>" not in "".join(content) and "</think>" not in "".join(thinking)


async def test_anthropic_messages_have_a_thinking_block(stack: RunningController) -> None:
    client = anthropic.AsyncAnthropic(base_url=str(stack.gateway_url), api_key="unused", max_retries=0)
    answer = await client.messages.create(model=MODEL, max_tokens=16, messages=ASK)
    kinds = [block.type for block in answer.content]
    print(f"anthropic: {[block.model_dump() for block in answer.content]!r}")
    assert "thinking" in kinds, kinds
    block = next(b for b in answer.content if b.type == "thinking")
    assert block.thinking.strip()  # type: ignore[union-attr]


async def test_responses_have_a_reasoning_item(stack: RunningController) -> None:
    ask = {"model": MODEL, "input": "Say hello.", "max_output_tokens": 16}
    url = f"{stack.gateway_url}/v1/responses"
    async with aiohttp.ClientSession() as session, session.post(url, json=ask) as resp:
        body = await resp.json()
    print(f"responses: {body.get('output')!r}")
    assert resp.status == 200, body
    reasoning = [item for item in body["output"] if item["type"] == "reasoning"]
    assert reasoning and reasoning[0]["content"][0]["text"].strip(), body


@pytest.mark.parametrize("stream", [False, True])
async def test_ollama_chat_returns_the_thinking(stack: RunningController, stream: bool) -> None:
    client = ollama.AsyncClient(host=str(stack.gateway_url))
    options = {"num_predict": 16, "temperature": 0}
    if stream:
        thinking = ""
        async for part in await client.chat(model=MODEL, messages=ASK, options=options, stream=True):
            thinking += part.message.thinking or ""
    else:
        answer = await client.chat(model=MODEL, messages=ASK, options=options)
        thinking = answer.message.thinking or ""
    print(f"ollama (stream={stream}): thinking={thinking!r}")
    assert thinking.strip()
