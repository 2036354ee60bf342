"""LoRA adapters by name: what a request for an adapter (or for a model that has adapters) sends its
replica, and on which APIs the engine honours the choice.

A model's adapters are routing targets of their own (``endpoints.table.Target``): the request goes
to a ready replica of the base model, and the replica's body selects the adapter. How, per engine
(docs/model-shapes.md has the measurements):

- llama.cpp starts every adapter at scale 0 (``--lora-scaled PATH:0``, the k-th adapter has id
  k) and takes the selection per request in the body's ``lora``. Every request to a model with
  adapters carries the whole list, the chosen adapter at 1.0 and every other at 0.0 (all zeros for
  the base model): a request without ``lora`` would reuse a prompt cache computed under another
  adapter (the prompt-cache trap). The client's own ``lora`` is replaced: it may not pick other
  adapters or scales. llama-server honours ``lora`` on chat completions, completions and
  Responses; its Messages API drops it (it converts the body field by field), so a Messages
  request for such a model (an adapter, or the base: its answer could start from another
  adapter's cache) is translated to a chat completion by the gateway (``messages``). Counting a
  Messages request's tokens runs no model: the count is the tokenizer's, the same for every adapter.
- vLLM serves each adapter under its own name (``--lora-modules name=path``): the body's ``model``
  becomes the adapter's name (so ``base:adapter`` works), and the base's name for the base model
  when the client used another (Ollama's ``:latest``).

A model without adapters is forwarded byte for byte, as before. A rewrite splices ``lora`` after
the object's opening brace when the client sent none; otherwise the document is written again.
"""

from __future__ import annotations

import json
from typing import Any

from controller.endpoints.table import VLLM, Target
from controller.gateway import errors
from controller.gateway.admission.hashring import hash64

# The replica paths where llama-server honours a request's ``lora`` (measured: docs/model-shapes.md).
LORA_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
# llama-server's Messages API drops ``lora``: nothing sent there to a model with adapters is right
# (the Messages door translates such requests to chat completions first).
MESSAGES = "/v1/messages"
# Counting tokens runs no model: the same count under every adapter.
COUNT_TOKENS = "/v1/messages/count_tokens"


def translates_messages(target: Target) -> bool:
    """True if a Messages request for ``target`` must go to its replica as a chat completion: a
    llama.cpp model with adapters (its /v1/messages would drop the adapter choice)."""
    return bool(target.entry.adapters) and target.entry.engine != VLLM


def check_api(target: Target, path: str) -> None:
    """Raise Refusal (400) for a call to ``path`` whose adapter choice the engine would not honour."""
    entry = target.entry
    if not entry.adapters or entry.engine == VLLM or path in LORA_PATHS or path == COUNT_TOKENS:
        return
    if target.adapter is not None:
        raise errors.bad_request(
            f"The adapter '{target.name}' of model '{entry.name}' is served on /v1/chat/completions, "
            "/v1/completions, /v1/responses and /v1/messages (and Ollama's /api/chat, /api/generate), "
            f"not on {path}: llama-server does not take the adapter choice there."
        )
    if path == MESSAGES:  # not translated (``translates_messages``): a bug, never forwarded as is
        raise errors.bad_request(
            f"The model '{entry.name}' has LoRA adapters, and llama-server's /v1/messages drops the "
            "per-request adapter choice: its answer could start from another adapter's prompt cache."
        )


def lora(target: Target) -> list[dict[str, Any]]:
    """llama-server's per-request ``lora``: every adapter, the chosen one at 1.0, the others 0.0."""
    chosen = target.adapter
    return [{"id": k, "scale": 1.0 if k == chosen else 0.0} for k in range(len(target.entry.adapters))]


def changes(target: Target, document: dict[str, Any]) -> dict[str, Any]:
    """The members the replica's body must have that ``document`` lacks ({}: forward it as it is)."""
    entry = target.entry
    if not entry.adapters:
        return {}
    if entry.engine == VLLM:  # it serves the model under its names and aliases, adapters by name
        served = entry.names if target.adapter is None else (target.name,)
        return {} if document.get("model") in served else {"model": target.name}
    return {"lora": lora(target)}


def replica_body(target: Target, document: dict[str, Any], body: bytes) -> tuple[bytes, dict[str, Any]]:
    """(the replica's body, the document it holds) for a request for ``target``; ``body`` is the JSON
    object ``document`` was parsed from, returned untouched when nothing changes."""
    change = changes(target, document)
    if not change:
        return body, document
    changed = {**document, **change}
    at = body.find(b"{")
    if change.keys() == {"lora"} and "lora" not in document and at >= 0 and not body[:at].strip():
        member = b'"lora":' + json.dumps(change["lora"], separators=(",", ":")).encode() + b","
        return body[: at + 1] + member + body[at + 1 :], changed
    return json.dumps(changed).encode(), changed


def prefix_key(key: int | None, target: Target) -> int | None:
    """The prefix key of a request for ``target``: an adapter's conversations keep a replica of their
    own (its prompt cache was computed under that adapter)."""
    if key is None or target.adapter is None:
        return key
    return key ^ hash64(target.name.encode())
