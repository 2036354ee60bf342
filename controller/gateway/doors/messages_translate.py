"""Anthropic Messages in OpenAI chat terms, as pure functions: requests in, answers and events out.

llama-server selects a LoRA adapter per request by the body's ``lora``, but its own ``/v1/messages``
builds a new body field by field and drops it (docs/model-shapes.md). So a Messages request for a
llama.cpp model with adapters is translated here into the chat completion llama-server would have
made of it, plus ``lora`` (``messages.py`` serves the door), and the answer back into a Message.

Requests (``chat_request``): ``system``, ``messages`` (text, base64 image, tool_use, tool_result and
thinking blocks), ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop_sequences``,
``stream``, ``tools`` (custom tools) and ``tool_choice``, ``thinking`` (its budget), and
llama-server's ``chat_template_kwargs``; ``metadata``, ``service_tier`` and ``cache_control``
change nothing on a local model and are left out. Anything else is refused (``Invalid``: the 400
names the field), as is every number that is not finite and in range. Answers (``message``): a
chat.completion becomes a Message (thinking, text, tool_use blocks; ``stop_reason`` from
``finish_reason``; usage from the replica's, its cached prompt tokens as
``cache_read_input_tokens``, as llama-server's own Messages answer counts them). Streams: ``messages_stream``.

Stop sequences: OpenAI's chunks do not say which stop string ended the answer, so a stop says
``end_turn`` with ``stop_sequence`` null (llama-server's own Messages answer says ``end_turn`` too).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

CHAT = "/v1/chat/completions"
# llama-server's default for a Messages request without max_tokens (server_chat_convert_anthropic_to_oai).
DEFAULT_MAX_TOKENS = 4096
MAX_TOKENS = 1 << 31  # a token count past this is no count
MAX_TOOLS = 1024  # tool calls in one answer, tools in one request
_SAMPLING = ("temperature", "top_p", "top_k")
# Fields that change nothing on a local model (a prompt cache hint: llama-server caches anyway):
# left out. ``lora`` is the gateway's to set.
_IGNORED = frozenset({"metadata", "service_tier", "cache_control", "lora"})
_TRANSLATED = frozenset(
    {"model", "messages", "system", "max_tokens", "stop_sequences", "stream", "tools", "tool_choice"}
    | {"thinking", "chat_template_kwargs", *_SAMPLING}
)
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


class Invalid(ValueError):
    """The request cannot be translated; its message (naming the field) is the 400's text."""


# --- requests --------------------------------------------------------------------------------------


def chat_request(document: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI chat completion (to ``CHAT``) for a Messages body, for the served ``model``.
    Raises Invalid for a field it does not translate or a value out of range."""
    unknown = sorted(set(document) - _TRANSLATED - _IGNORED)
    if unknown:
        raise Invalid(
            f"{unknown[0]}: this field is not translated for a llama.cpp model with LoRA adapters "
            "(its Messages requests go to the engine as chat completions)"
        )
    body: dict[str, Any] = {"model": model, "messages": system(document.get("system"))}
    body["messages"] += chat_messages(document.get("messages"))
    body["max_tokens"] = count("max_tokens", document.get("max_tokens", DEFAULT_MAX_TOKENS), least=1)
    for name in _SAMPLING:
        if document.get(name) is not None:
            body[name] = number(name, document[name])
    if document.get("stop_sequences") is not None:
        body["stop"] = strings("stop_sequences", document["stop_sequences"])
    if document.get("tools") is not None:
        body["tools"] = tools(document["tools"])
    if document.get("tool_choice") is not None:
        body |= tool_choice(document["tool_choice"])
    body |= thinking(document.get("thinking"))
    kwargs = document.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise Invalid("chat_template_kwargs: must be an object")
        body["chat_template_kwargs"] = kwargs
    stream = document.get("stream", False)
    if not isinstance(stream, bool):
        raise Invalid("stream: must be true or false")
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def number(field: str, value: Any) -> float | int:
    """A finite number from the request; raises Invalid naming ``field``."""
    # The range check also refuses inf and nan (no comparison with nan holds), and never converts
    # a huge int to a float (math.isfinite would raise OverflowError).
    if isinstance(value, bool) or not isinstance(value, int | float) or not -MAX_TOKENS < value < MAX_TOKENS:
        raise Invalid(f"{field}: must be a finite number in range")
    return value


def count(field: str, value: Any, *, least: int = 0) -> int:
    """A whole count from the request, at least ``least``; raises Invalid naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value < MAX_TOKENS:
        raise Invalid(f"{field}: must be a whole number from {least}")
    return value


def strings(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise Invalid(f"{field}: must be a list of strings")
    return list(value)


def text_of(field: str, block: Any) -> str:
    """A text block's text (its cache_control and citations mean nothing to the engine)."""
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise Invalid(f'{field}: must be a block {{"type": "text", "text": "..."}}')
    return str(block["text"])


def system(value: Any) -> list[dict[str, Any]]:
    """The system message (none for no system), from a string or a list of text blocks."""
    if value is None:
        return []
    if isinstance(value, list):
        value = "".join(text_of(f"system[{i}]", block) for i, block in enumerate(value))
    if not isinstance(value, str):
        raise Invalid("system: must be a string or a list of text blocks")
    return [{"role": "system", "content": value}]


def chat_messages(value: Any) -> list[dict[str, Any]]:
    """The chat messages for Messages' ``messages``: each one, or (tool results) several."""
    if not isinstance(value, list):
        raise Invalid("messages: must be a list of messages")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        field = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise Invalid(f'{field}: must be a message with role "user" or "assistant"')
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif isinstance(content, list):
            out += blocks(f"{field}.content", message["role"], content)
        else:
            raise Invalid(f"{field}.content: must be a string or a list of content blocks")
    return out


def blocks(field: str, role: str, content: list[Any]) -> list[dict[str, Any]]:
    """One message's blocks as chat messages: tool results first (each a ``tool`` message, answering
    the call before them), then the message itself (its parts, tool calls and reasoning)."""
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    reasoning = ""
    for j, block in enumerate(content):
        where = f"{field}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": text_of(where, block)})
        elif kind == "image" and role == "user":
            parts.append(image(where, block))
        elif kind == "tool_use" and role == "assistant":
            calls.append(tool_call(where, block))
        elif kind == "tool_result" and role == "user":
            results.append(tool_result(where, block))
        elif kind == "thinking" and role == "assistant":
            reasoning += str(block.get("thinking") or "")
        else:
            raise Invalid(f"{where}.type: a {role} block of type {json.dumps(kind)} is not translated")
    out = list(results)
    if parts or calls or reasoning:
        message: dict[str, Any] = {"role": role, "content": parts if parts else ""}
        if calls:
            message["tool_calls"] = calls
        if reasoning:
            message["reasoning_content"] = reasoning
        out.append(message)
    return out


def image(field: str, block: dict[str, Any]) -> dict[str, Any]:
    """A base64 image block as an ``image_url`` data: URL part (a URL source was refused before,
    ``images.check``: llama.cpp would download it itself)."""
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        raise Invalid(f"{field}.source: must be a base64 image source")
    media, data = source.get("media_type"), source.get("data")
    if not isinstance(media, str) or not media.startswith("image/") or not isinstance(data, str):
        raise Invalid(f"{field}.source: needs media_type (image/...) and data (base64 text)")
    return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}


def tool_call(field: str, block: dict[str, Any]) -> dict[str, Any]:
    name, call_id, arguments = block.get("name"), block.get("id"), block.get("input", {})
    if not isinstance(name, str) or not isinstance(call_id, str) or not isinstance(arguments, dict):
        raise Invalid(f"{field}: a tool_use block needs id, name and an input object")
    function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
    return {"id": call_id, "type": "function", "function": function}


def tool_result(field: str, block: dict[str, Any]) -> dict[str, Any]:
    """A tool_result block as a ``tool`` message (text content only)."""
    call_id, content = block.get("tool_use_id"), block.get("content", "")
    if not isinstance(call_id, str):
        raise Invalid(f"{field}.tool_use_id: must be a string")
    if isinstance(content, list):
        content = "".join(text_of(f"{field}.content[{k}]", part) for k, part in enumerate(content))
    if not isinstance(content, str):
        raise Invalid(f"{field}.content: must be a string or a list of text blocks")
    if block.get("is_error") is True:
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def tools(value: Any) -> list[dict[str, Any]]:
    """Custom tools as OpenAI functions; Anthropic's server tools (bash, web search, ...) are refused."""
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise Invalid(f"tools: must be a list of at most {MAX_TOOLS} tools")
    out = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise Invalid(f"tools[{i}].type: only custom tools are translated, not {json.dumps(kind)}")
        name, schema = tool.get("name"), tool.get("input_schema", {"type": "object"})
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise Invalid(f"tools[{i}]: a tool needs a name and an input_schema object")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def tool_choice(value: Any) -> dict[str, Any]:
    """OpenAI's ``tool_choice`` (and ``parallel_tool_calls``) for Anthropic's."""
    kind = value.get("type") if isinstance(value, dict) else None
    choices: dict[str, Any] = {"auto": "auto", "any": "required", "none": "none"}
    if kind in choices:
        out: dict[str, Any] = {"tool_choice": choices[kind]}
    elif kind == "tool" and isinstance(value.get("name"), str):
        out = {"tool_choice": {"type": "function", "function": {"name": value["name"]}}}
    else:
        raise Invalid(
            'tool_choice: must be {"type": "auto" | "any" | "none"} or {"type": "tool", "name": ...}'
        )
    if value.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def thinking(value: Any) -> dict[str, Any]:
    """llama-server's thinking budget for Anthropic's ``thinking`` (as its own Messages API maps it)."""
    if value is None:
        return {}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "enabled":
        return {"thinking_budget_tokens": count("thinking.budget_tokens", value.get("budget_tokens"))}
    if kind in ("disabled", "adaptive"):
        return {}
    raise Invalid('thinking: must be {"type": "enabled", "budget_tokens": N} or {"type": "disabled"}')


# --- answers ---------------------------------------------------------------------------------------


def message_id(chat_id: Any) -> str:
    """A Message id from the completion's (``chatcmpl-X`` -> ``msg_X``), or a fresh one."""
    if isinstance(chat_id, str) and chat_id and len(chat_id) <= 200:
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex


def stop_reason(finish: Any) -> str:
    return _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def tokens(value: Any) -> int:
    """A replica's token count, if it is one (a whole number in range); else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_TOKENS else 0


def usage(value: Any) -> dict[str, int]:
    """Anthropic's usage for OpenAI's: the cached prompt tokens apart, as llama-server counts them."""
    value = value if isinstance(value, dict) else {}
    details = value.get("prompt_tokens_details")
    cached = tokens(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = tokens(value.get("prompt_tokens"))
    out = {"input_tokens": max(prompt - cached, 0), "output_tokens": tokens(value.get("completion_tokens"))}
    return out | ({"cache_read_input_tokens": min(cached, prompt)} if cached else {})


def thinking_of(message: Mapping[str, Any]) -> str:
    """The reasoning in an OpenAI message or delta (llama-server's ``reasoning_content``)."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else ""


def tool_input(arguments: Any) -> Any:
    """A tool call's arguments (JSON text) as an object; what is not a JSON object: {}."""
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def message(document: Any, model: str) -> dict[str, Any]:
    """A whole chat.completion as a Message for the ``model`` the client named. Raises ValueError
    (or TypeError, AttributeError) for an answer that is not OpenAI's."""
    choice = document["choices"][0]
    answer = choice["message"]
    content: list[dict[str, Any]] = []
    if thinking_of(answer):
        content.append({"type": "thinking", "thinking": thinking_of(answer), "signature": ""})
    if isinstance(answer.get("content"), str) and answer["content"]:
        content.append({"type": "text", "text": answer["content"]})
    for call in answer.get("tool_calls") or ():
        function = call.get("function") or {}
        block = {"type": "tool_use", "id": str(call.get("id") or f"toolu_{len(content)}")}
        content.append(
            block | {"name": str(function.get("name", "")), "input": tool_input(function.get("arguments"))}
        )
    return {
        "id": message_id(document.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": usage(document.get("usage")),
    }
