"""The prefix key that prefix affinity hashes: what a conversation's requests have in common.

A replica keeps the KV / prompt cache of the prompts it has seen (llama.cpp slots, vLLM prefix
caching), so sending every turn of a conversation to the same replica saves re-reading its history.
The key must therefore be the same for every turn of one conversation and differ between
conversations:

- chat (``messages``): every message up to and including the *first user message* (system prompt,
  few-shot turns, the opening question). Later turns only append, so the key is stable for the whole
  conversation; two users with the same system prompt but different openings get different keys.
  Each message counts by role and content (text parts joined; other parts, e.g. images, by their JSON).
- completions (``prompt``): the first ``prefix_chars`` characters of the prompt (of its first element
  when it is a list of strings; the first ``prefix_chars`` tokens of a token list). A later turn
  repeats the earlier prompt, so the key is stable once the first prompt is at least that long;
  a shorter first prompt is hashed whole, and the conversation may move once.
- anything else (embeddings, no prompt): no key, and the balancer falls back to least-outstanding.
"""

from __future__ import annotations

import json
from typing import Any

from controller.gateway.admission.hashring import hash64

# Separators that cannot be confused with ordinary text: unit and record separators.
_FIELD = "\x1f"
_RECORD = "\x1e"


def prefix_key(document: dict[str, Any], *, prefix_chars: int) -> int | None:
    """Return the 64-bit prefix key of a parsed request body, or None when it has none."""
    messages = document.get("messages")
    if isinstance(messages, list) and messages:
        return hash64(chat_prefix(messages).encode("utf-8", "surrogatepass"))
    prompt = document.get("prompt")
    text = prompt_prefix(prompt, prefix_chars)
    if text is None:
        return None
    return hash64(text.encode("utf-8", "surrogatepass"))


def chat_prefix(messages: list[Any]) -> str:
    """Return the text of ``messages`` up to and including the first user message."""
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            parts.append(json.dumps(message, sort_keys=True))
            continue
        role = message.get("role")
        parts.append(f"{role}{_FIELD}{_content_text(message.get('content'))}")
        if role == "user":
            break
    return _RECORD.join(parts)


def prompt_prefix(prompt: Any, prefix_chars: int) -> str | None:
    """Return the first ``prefix_chars`` characters (or tokens) of a completions prompt, or None."""
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, int):  # one prompt as token ids
            return ",".join(str(t) for t in prompt[:prefix_chars])
        prompt = first
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return ",".join(str(t) for t in prompt[:prefix_chars])
    if isinstance(prompt, str) and prompt:
        return prompt[:prefix_chars]
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) if isinstance(p, dict) and p.get("type") == "text" else _json(p)
            for p in content
        )
    return "" if content is None else _json(content)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
