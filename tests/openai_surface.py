"""Every endpoint of the gateway driven by the official ``openai`` client, sync or async, summarized.

Shared by the gateway's tests against fake replicas (tests/gateway/test_openai_client.py) and the
compatibility tests against real llama.cpp replicas (tests/integration/test_openai_compat.py): the
same calls, one comparable shape for what the client saw. ``chat`` is the name (or alias) chat goes
to; the stream and the completion go to ``model``, the embeddings to ``embed`` (a model with
``task: embed``: the gateway refuses embeddings to a generator).
"""

from __future__ import annotations

from typing import Any

import openai

USER = [{"role": "user", "content": "hi"}]
Summary = dict[str, Any]


def summary(models: list[str], chat: Any, chunks: list[Any], text: Any, vectors: Any) -> Summary:
    """What the sync and the async client saw, in one comparable shape."""
    return {
        "models": models,
        "chat": chat.choices[0].message.content,
        "chat_usage": chat.usage.total_tokens if chat.usage else None,
        "streamed": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
        "stream_usage": chunks[-1].usage.completion_tokens if chunks[-1].usage else None,
        "text": text.choices[0].text,
        "vectors": [e.embedding for e in vectors.data],
    }


def summarize_sync(
    client: openai.OpenAI, *, chat: str, model: str, embed: str, max_tokens: int = 16
) -> Summary:
    models = [m.id for m in client.models.list()]
    answer = client.chat.completions.create(model=chat, messages=USER, max_tokens=max_tokens)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model=model,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = client.completions.create(model=model, prompt="Once upon", max_tokens=max_tokens)
    vectors = client.embeddings.create(model=embed, input=["a", "b"])
    return summary(models, answer, chunks, text, vectors)


async def summarize_async(
    client: openai.AsyncOpenAI, *, chat: str, model: str, embed: str, max_tokens: int = 16
) -> Summary:
    models = [m.id async for m in client.models.list()]
    answer = await client.chat.completions.create(model=chat, messages=USER, max_tokens=max_tokens)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(
        model=model,
        messages=USER,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = await client.completions.create(model=model, prompt="Once upon", max_tokens=max_tokens)
    vectors = await client.embeddings.create(model=embed, input=["a", "b"])
    return summary(models, answer, chunks, text, vectors)
