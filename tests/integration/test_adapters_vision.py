"""LoRA adapters by name and images, served for real: a controller, the gateway and llama-server.

(a) SmolLM2 with two GGUF adapters (``make shapes``: smollm2-lora-{a,b}.gguf, seeded random LoRA
weights) on two replicas of one slot each. Through the official openai client, temperature 0, the
base model and each adapter answer the same prompt differently; every answer is the same on both
replicas and whatever ran before on the slot (the gateway sends the whole ``lora`` list on every
request: docs/model-shapes.md, the prompt-cache trap); ``smollm2:smollm2-a`` is ``smollm2-a``;
requests for both adapters spread over both replicas; /v1/models lists the adapters with their parent.
Through the official anthropic client (Messages, translated to chat by the gateway: llama-server's
own /v1/messages drops ``lora``) each name answers what chat answers, whole and streamed.

(b) tiny-vlm (a tiny random SmolVLM, ``make shapes``) with its projector answers an image through
OpenAI's, Anthropic's and Ollama's shapes; SmolLM2, without a projector, is refused by the gateway
with a 400 naming it (llama-server would answer 500).
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import docker
import openai
import pytest

from controller.gateway.settings import GatewaySettings

from .support import GGUF, scrape, serving, settings, total

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

SEA = [{"role": "user", "content": "Write one sentence about the sea."}]
SPIDER = "How many legs does a spider have? Answer briefly."
ADAPTERS = ("smollm2-lora-a.gguf", "smollm2-lora-b.gguf")
VLM, PROJECTOR = "tiny-vlm/tiny-vlm.gguf", "tiny-vlm/mmproj-tiny-vlm.gguf"


def need(model_root: Path, *paths: str) -> None:
    missing = [p for p in paths if not (model_root / p).is_file()]
    if missing:
        pytest.fail(f"{model_root} lacks {', '.join(missing)}; run `make shapes`")


async def sea(client: openai.AsyncOpenAI, model: str) -> tuple[str, str]:
    """(the answer, the replica that gave it) to the sea prompt, temperature 0, 16 tokens."""
    raw = await client.chat.completions.with_raw_response.create(
        model=model,
        messages=SEA,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=16,
    )
    answer = raw.parse()
    return str(answer.choices[0].message.content), raw.headers["x-modelctl-replica"]


async def test_adapters_by_name_over_two_replicas(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    need(model_root, *ADAPTERS)
    (tmp_path / "m.yaml").write_text(
        f"name: smollm2\nmodel: {GGUF}\nreplicas: 2\nmax_batch_size: 1\ncontext_length: 512\n"
        "adapters:\n"
        f"  - {{name: smollm2-a, path: {ADAPTERS[0]}}}\n"
        f"  - {{name: smollm2-b, path: {ADAPTERS[1]}}}\n"
    )
    config = settings(tmp_path, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    async with serving(config, gateway, {"smollm2": 2}, docker_client) as rc:
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")
        answers: dict[str, set[str]] = {}
        replicas: dict[str, Counter[str]] = {}
        # Sequential requests alternate over the replicas, so each name meets each replica, and each
        # slot has just served another adapter (or the base) when the next request comes.
        for name in ("smollm2", "smollm2", "smollm2-a", "smollm2-a", "smollm2-b", "smollm2-b") * 2:
            text, replica = await sea(client, name)
            answers.setdefault(name, set()).add(text)
            replicas.setdefault(name, Counter())[replica] += 1
        assert all(len(texts) == 1 for texts in answers.values()), answers  # same everywhere, every time
        base, a, b = (answers[n].pop() for n in ("smollm2", "smollm2-a", "smollm2-b"))
        assert len({base, a, b}) == 3, (base, a, b)
        assert all(sorted(replicas[n].values()) == [2, 2] for n in replicas), replicas
        assert (await sea(client, "smollm2:smollm2-a"))[0] == a

        responses = await client.responses.create(
            model="smollm2-b", input=SEA[0]["content"], temperature=0, max_output_tokens=16
        )
        assert responses.output_text == b  # llama-server honours lora on /v1/responses too

        listed = {m.id: m for m in (await client.models.list()).data}
        assert {n: getattr(listed[n], "parent", None) for n in ("smollm2", "smollm2-a", "smollm2-b")} == {
            "smollm2": None,
            "smollm2-a": "smollm2",
            "smollm2-b": "smollm2",
        }
        samples = await scrape(rc)
        assert total(samples, "modelctl_gateway_requests_total", model="smollm2-a", status="200") == 5
        assert total(samples, "modelctl_gateway_requests_total", model="smollm2-b", status="200") == 5


async def claude_sea(claude: anthropic.AsyncAnthropic, model: str, *, stream: bool = False) -> str:
    """The answer to the sea prompt through Anthropic Messages (temperature 0, 16 tokens), whole or
    streamed (the text as the stream's deltas spelled it)."""
    ask: dict[str, Any] = {"model": model, "max_tokens": 16, "messages": SEA}
    temperature = {"temperature": 0}  # this client has no temperature of its own: the body's field
    if not stream:
        message = await claude.messages.create(**ask, extra_body=temperature)
        assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 16
        return "".join(block.text for block in message.content if block.type == "text")
    async with claude.messages.stream(**ask, extra_body=temperature) as events:
        text = "".join([piece async for piece in events.text_stream])
        final = await events.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 16
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 0
    return text


async def test_messages_select_the_adapter_as_chat_does(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    """llama-server's /v1/messages drops ``lora``: the gateway translates Messages for a model with
    adapters to chat completions, so the official anthropic client gets each adapter's own answer,
    the same as chat's, whole and streamed, and its tokens counted from the replica's usage."""
    need(model_root, *ADAPTERS)
    (tmp_path / "m.yaml").write_text(
        f"name: smollm2\nmodel: {GGUF}\nreplicas: 1\nmax_batch_size: 1\ncontext_length: 512\n"
        "adapters:\n"
        f"  - {{name: smollm2-a, path: {ADAPTERS[0]}}}\n"
        f"  - {{name: smollm2-b, path: {ADAPTERS[1]}}}\n"
    )
    config = settings(tmp_path, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    async with serving(config, gateway, {"smollm2": 1}, docker_client) as rc:
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")
        claude = anthropic.AsyncAnthropic(base_url=rc.gateway_url, api_key="unused", max_retries=0)
        names = ("smollm2", "smollm2-a", "smollm2-b")
        chat = {name: (await sea(client, name))[0] for name in names}
        whole = {name: await claude_sea(claude, name) for name in names}
        streamed = {name: await claude_sea(claude, name, stream=True) for name in names}
        assert len(set(chat.values())) == 3, chat  # each adapter answers its own
        assert whole == chat and streamed == chat, (chat, whole, streamed)
        assert await claude_sea(claude, "smollm2:smollm2-b") == chat["smollm2-b"]
        counted = await claude.messages.count_tokens(model="smollm2-a", messages=SEA)  # type: ignore[arg-type]
        assert counted.input_tokens > 0

        samples = await scrape(rc)
        tokens = "modelctl_gateway_tokens_total"
        assert total(samples, tokens, model="smollm2-a", api="anthropic", kind="completion") == 16 * 2
        assert total(samples, tokens, model="smollm2-b", api="anthropic", kind="prompt") > 0
        ok = "modelctl_gateway_requests_total"
        assert total(samples, ok, model="smollm2-b", api="anthropic", status="200") == 3


async def test_a_slot_never_answers_from_kv_computed_under_another_adapter(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    """llama-server's RAM prompt cache keys saved prompts by tokens, not adapters: with it on, the
    sequence below answered the base's request from KV computed under adapter a (cache_n 36, the
    answer neither the base's nor a's: docs/model-shapes.md). Replicas with adapters run without
    it (--cache-ram 0); a model of the same weights without adapters gives the truth."""
    need(model_root, *ADAPTERS)
    (tmp_path / "m.yaml").write_text(
        f"name: smollm2\nmodel: {GGUF}\nreplicas: 1\nmax_batch_size: 2\ncontext_length: 512\n"
        f"adapters:\n  - {{name: smollm2-a, path: {ADAPTERS[0]}}}\n"
        "---\n"
        f"name: plain\nmodel: {GGUF}\nreplicas: 1\nmax_batch_size: 1\ncontext_length: 512\n"
    )
    config = settings(tmp_path, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    async with serving(config, gateway, {"smollm2": 1, "plain": 1}, docker_client) as rc:
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")
        truth, _ = await sea(client, "plain")
        adapted, _ = await sea(client, "smollm2-a")  # slot 0: the sea prompt under adapter a
        for other in ("List three colours of autumn leaves please, thanks.", SPIDER):
            await client.chat.completions.create(  # slot 1, then slot 0 again (LRU): a saved, in RAM
                model="smollm2", messages=[{"role": "user", "content": other}], temperature=0, max_tokens=16
            )
        base, _ = await sea(client, "smollm2")  # slot 1 (LRU): the RAM cache held a's sea prompt
        assert adapted != truth
        assert base == truth, (base, truth, adapted)


def png(width: int = 40, height: int = 24) -> bytes:
    """A small RGB PNG (a gradient), written by hand: no imaging library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 6 % 256, y * 10 % 256, 128))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def test_images_through_every_api(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    need(model_root, VLM, PROJECTOR)
    (tmp_path / "m.yaml").write_text(
        f"name: tiny-vlm\nmodel: {VLM}\nmmproj: {PROJECTOR}\nreplicas: 1\nmax_batch_size: 1\n"
        "context_length: 512\n---\n"
        f"name: smollm2\nmodel: {GGUF}\nreplicas: 1\nmax_batch_size: 1\ncontext_length: 512\n"
    )
    image = base64.b64encode(png()).decode()
    parts: list[Any] = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
    ]
    config = settings(tmp_path, model_root, instance)
    gateway = GatewaySettings(host="127.0.0.1", port=0)
    async with serving(config, gateway, {"tiny-vlm": 1, "smollm2": 1}, docker_client) as rc:
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")
        answer = await client.chat.completions.create(
            model="tiny-vlm", max_tokens=4, messages=[{"role": "user", "content": parts}]
        )
        assert answer.usage is not None and answer.usage.prompt_tokens > 40  # the image's tokens count

        claude = anthropic.AsyncAnthropic(base_url=rc.gateway_url, api_key="unused")
        source = {"type": "base64", "media_type": "image/png", "data": image}
        message = await claude.messages.create(
            model="tiny-vlm",
            max_tokens=4,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": source}, {"type": "text", "text": "?"}],
                }
            ],  # type: ignore[list-item]
        )
        assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 40

        async with aiohttp.ClientSession() as session:
            ollama = {"model": "tiny-vlm", "stream": False, "options": {"num_predict": 4}}
            ollama["messages"] = [{"role": "user", "content": "What is in this image?", "images": [image]}]
            async with session.post(f"{rc.gateway_url}/api/chat", json=ollama) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["prompt_eval_count"] > 40

            refused = ollama | {"model": "smollm2"}
            async with session.post(f"{rc.gateway_url}/api/chat", json=refused) as resp:
                assert resp.status == 400
                assert (await resp.json())[
                    "error"
                ] == "model smollm2 takes no images: it has no projector (mmproj)"

        with pytest.raises(
            openai.BadRequestError, match=r"model smollm2 takes no images: it has no projector"
        ):
            await client.chat.completions.create(
                model="smollm2", max_tokens=4, messages=[{"role": "user", "content": parts}]
            )
        with pytest.raises(anthropic.BadRequestError, match="takes no images"):
            await claude.messages.create(
                model="smollm2",
                max_tokens=4,
                messages=[{"role": "user", "content": [{"type": "image", "source": source}]}],  # type: ignore[list-item]
            )
