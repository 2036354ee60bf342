"""Ollama's API in OpenAI's terms, as pure functions: requests in, answers and errors out.

``ollama.py`` serves the routes; everything here is plain data (tested by tables in
tests/gateway/test_ollama.py). Requests: ``/api/chat`` and ``/api/generate`` become chat
completions (``raw`` generate: a text completion), ``/api/embed`` and ``/api/embeddings``
embeddings; Ollama's ``options`` map to OpenAI's sampling fields (``OPTIONS``), ``format`` to
``response_format``. Answers: a whole chat.completion becomes Ollama's JSON, an event stream
becomes NDJSON lines (``NdjsonStream``), the last one ``done: true`` with counts from ``usage``
and durations in nanoseconds (llama-server's ``timings`` when it sends them, else the gateway's own
clock). Errors are ``{"error": "..."}``. Model lists: ``ollama_models``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller.endpoints.table import VLLM
from controller.gateway.forward.events import Translator

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
NDJSON = "application/x-ndjson"
# Ollama's option -> the OpenAI field (llama-server and vLLM accept top_k, min_p, repeat_penalty
# and typical_p as extensions). num_predict and repeat_penalty are handled apart.
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
# Image media types by their first bytes (Ollama sends bare base64, OpenAI wants a data URL).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class Invalid(ValueError):
    """The request cannot be translated; its message is the 400's error text."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def keep_alive_seconds(value: Any) -> float:
    """Ollama's ``keep_alive``: seconds (a number), or a Go duration ('10m', '1h30m', '500ms');
    negative keeps the model for ever (-1 returned), 0 unloads it now. Raises Invalid."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid("keep_alive must be a number of seconds or a duration such as '5m'")
    if isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        body = text.lstrip("-+")
        try:
            seconds = float(body)
        except ValueError:
            parts = _DURATION.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                raise Invalid(f"keep_alive {value!r} is not a duration such as '5m' or '1h'") from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
        value = -seconds if negative else seconds
    return -1.0 if value < 0 else float(value)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- requests --------------------------------------------------------------------------------------


def sampling(document: Mapping[str, Any], *, engine: str = "") -> dict[str, Any]:
    """OpenAI sampling fields from ``options`` and ``format`` (options Ollama has and OpenAI has not,
    such as num_ctx or mirostat, are left out: the engine was started with its own)."""
    options = document.get("options") or {}
    if not isinstance(options, dict):
        raise Invalid("options must be an object")
    fields = {ours: options[theirs] for theirs, ours in OPTIONS.items() if options.get(theirs) is not None}
    if isinstance(fields.get("stop"), str):
        fields["stop"] = [fields["stop"]]
    predict = options.get("num_predict")
    if isinstance(predict, int) and predict >= 0:  # -1: until done, -2: fill the context
        fields["max_tokens"] = predict
    if options.get("repeat_penalty") is not None:
        fields["repetition_penalty" if engine == VLLM else "repeat_penalty"] = options["repeat_penalty"]
    fmt = document.get("format")
    if fmt == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    elif fmt not in (None, ""):
        raise Invalid(f'format must be "json" or a JSON schema object, not {json.dumps(fmt)}')
    return fields


def _streaming(document: Mapping[str, Any]) -> dict[str, Any]:
    if document.get("stream", True) is False:
        return {"stream": False}
    return {"stream": True, "stream_options": {"include_usage": True}}


def media_type(data: str) -> str:
    """The media type of a bare base64 image, from its first bytes (png, jpeg, gif, webp); raises
    Invalid for anything else (or for text that is not base64)."""
    try:
        head = base64.b64decode(data[:24], validate=True)  # 18 bytes: every signature fits
    except (binascii.Error, ValueError):
        raise Invalid("images must be base64 text (Ollama's images: bare base64, no data: prefix)") from None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    raise Invalid("an image is not PNG, JPEG, GIF or WebP (by its first bytes)")


def image_url(data: str) -> dict[str, Any]:
    """An Ollama image (bare base64; a data: URL passes as it is) as an OpenAI ``image_url`` part."""
    url = data if data.startswith("data:") else f"data:{media_type(data)};base64,{data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _content(text: Any, images: Any) -> Any:
    if not images:
        return text if text is not None else ""
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise Invalid("images must be a list of base64 strings")
    return [{"type": "text", "text": text or ""}, *(image_url(i) for i in images)]


def chat_message(message: Any, calls: dict[str, str]) -> dict[str, Any]:
    """One Ollama message in OpenAI's shape. ``calls``: tool name -> the id its last call got, so a
    ``tool`` message (Ollama names the tool, OpenAI the call) answers the right call."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise Invalid("each message must be an object with a role")
    out: dict[str, Any] = {
        "role": message["role"],
        "content": _content(message.get("content"), message.get("images")),
    }
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        out["tool_calls"] = []
        for call in tool_calls:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            call_id = f"call_{len(calls)}_{function.get('name', '')}"
            calls[str(function.get("name", ""))] = call_id
            arguments = function.get("arguments", {})
            out["tool_calls"].append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": function.get("name", ""),
                        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                    },
                }
            )
    if message["role"] == "tool":
        name = message.get("tool_name") or message.get("name") or ""
        out["tool_call_id"] = calls.get(str(name), f"call_{name}")
    return out


def chat_request(document: Mapping[str, Any], model: str, *, engine: str = "") -> dict[str, Any]:
    """The OpenAI chat completion for an ``/api/chat`` body (to ``CHAT``). Raises Invalid."""
    messages = document.get("messages") or []
    if not isinstance(messages, list):
        raise Invalid("messages must be a list")
    calls: dict[str, str] = {}
    body: dict[str, Any] = {"model": model, "messages": [chat_message(m, calls) for m in messages]}
    if document.get("tools"):
        body["tools"] = document["tools"]  # the same shape in both APIs
    return body | sampling(document, engine=engine) | _streaming(document)


def generate_request(
    document: Mapping[str, Any], model: str, *, engine: str = ""
) -> tuple[str, dict[str, Any]]:
    """(path, body) for an ``/api/generate`` body: a chat completion of system + prompt (the
    model's own template applies, as in Ollama), or with ``raw`` a text completion. Raises Invalid."""
    prompt = document.get("prompt") or ""
    if not isinstance(prompt, str):
        raise Invalid("prompt must be a string")
    if document.get("suffix"):
        raise Invalid("suffix (fill in the middle) is not supported by this gateway")
    extra = sampling(document, engine=engine) | _streaming(document)
    if document.get("raw"):
        return COMPLETIONS, {"model": model, "prompt": prompt} | extra
    messages = []
    if isinstance(document.get("system"), str) and document["system"]:
        messages.append({"role": "system", "content": document["system"]})
    messages.append({"role": "user", "content": _content(prompt, document.get("images"))})
    return CHAT, {"model": model, "messages": messages} | extra


def embed_request(document: Mapping[str, Any], model: str, *, legacy: bool = False) -> dict[str, Any]:
    """The OpenAI embeddings body for ``/api/embed`` (``input``) or, ``legacy``, ``/api/embeddings``
    (``prompt``). Raises Invalid."""
    value = document.get("prompt") if legacy else document.get("input")
    if legacy and not isinstance(value, str):
        raise Invalid("prompt must be a string")
    if not legacy and not (isinstance(value, str) or (isinstance(value, list) and value)):
        raise Invalid("input must be a string or a non-empty list of strings")
    body: dict[str, Any] = {"model": model, "input": value}
    if isinstance(document.get("dimensions"), int):
        body["dimensions"] = document["dimensions"]
    return body


# --- answers ---------------------------------------------------------------------------------------


def durations(started: float, first_token: float | None, timings: Mapping[str, Any] | None) -> dict[str, int]:
    """Ollama's durations (nanoseconds): llama-server's own ``timings`` where sent, else the clock
    since the gateway got the request (``started``, monotonic) and since the first token."""
    ended = time.monotonic()
    first = first_token if first_token is not None else ended
    prompt_ns, eval_ns = int((first - started) * 1e9), int((ended - first) * 1e9)
    if isinstance(timings, Mapping):
        prompt_ns = int(_number(timings.get("prompt_ms")) * 1e6) or prompt_ns
        eval_ns = int(_number(timings.get("predicted_ms")) * 1e6) or eval_ns
    return {
        "total_duration": int((ended - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_duration": prompt_ns,
        "eval_duration": eval_ns,
    }


def _number(value: Any) -> float:
    """A replica's number, if it is one that fits (finite, not negative, below 2**53); else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value) if -(2**63) < value < 2**63 else math.inf
    return number if 0 <= number < 2**53 else 0.0


def counts(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {
        "prompt_eval_count": int(_number(usage.get("prompt_tokens"))),
        "eval_count": int(_number(usage.get("completion_tokens"))),
    }


def ollama_tool_calls(calls: Iterable[Any]) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as JSON text) as Ollama's (arguments as an object)."""
    out = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except (ValueError, RecursionError):
            parsed = {"arguments": arguments}  # the model wrote no JSON: keep its text
        out.append({"function": {"name": function.get("name", ""), "arguments": parsed}})
    return out


def reasoning(message: dict[str, Any]) -> str | None:
    """The thinking in an OpenAI message or delta: llama-server's ``reasoning_content``, vLLM's
    ``reasoning`` (vLLM 0.32 dropped ``reasoning_content``)."""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else None


def _message(
    content: str, thinking: str | None = None, tool_calls: list[Any] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def answer(kind: str, model: str, document: Any, started: float) -> dict[str, Any]:
    """A whole OpenAI answer (chat.completion or text_completion) as Ollama's ``/api/chat``
    (``kind`` "chat") or ``/api/generate`` JSON."""
    choice = (document.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") if "message" in choice else choice.get("text")
    out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
    if kind == "chat":
        calls = ollama_tool_calls(message.get("tool_calls") or [])
        out["message"] = _message(text or "", reasoning(message), calls)
    else:
        out["response"] = text or ""
        if reasoning(message):
            out["thinking"] = reasoning(message)
    out |= {"done": True, "done_reason": choice.get("finish_reason") or "stop"}
    return out | durations(started, None, document.get("timings")) | counts(document.get("usage"))


def embed_answer(model: str, document: Any, started: float, *, legacy: bool = False) -> dict[str, Any]:
    """OpenAI's embeddings list as ``/api/embed``'s (or, ``legacy``, ``/api/embeddings``') JSON."""
    data = sorted(document.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in data]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    usage = document.get("usage") or {}
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": int((time.monotonic() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
    }


def line(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode() + b"\n"


class NdjsonStream(Translator):
    """An OpenAI event stream, fed as it arrives, out as Ollama's NDJSON lines (``Translator``:
    ``feed``, ``end``). An error event becomes ``{"error": "..."}`` and ends the stream; the end
    says the ``done`` line if ``data: [DONE]`` never came. An event longer than
    ``events.MAX_EVENT_BYTES`` raises ``events.EventTooLarge`` (the relay then feeds the error
    event that ends it); an event that is not what OpenAI sends is skipped.
    """

    __slots__ = ("_calls", "_first", "_kind", "_model", "_reason", "_started", "_timings", "_usage")

    def __init__(self, kind: str, model: str, started: float) -> None:
        super().__init__()
        self._kind = kind  # "chat" or "generate"
        self._model = model
        self._started = started
        self._first: float | None = None
        self._reason = "stop"
        self._usage: Any = None
        self._timings: Any = None
        self._calls: dict[int, dict[str, Any]] = {}  # tool call deltas by index, joined

    def usage(self) -> tuple[int, int] | None:
        """(prompt, completion) tokens of the stream's usage, once it came."""
        found = counts(self._usage)
        return (found["prompt_eval_count"], found["eval_count"]) if found else None

    def _error(self, document: dict[str, Any]) -> bytes:
        self.done = self.failed = True
        return line({"error": error_text(document)})

    def _chunk(self, document: dict[str, Any]) -> bytes:
        if document.get("usage"):
            self._usage = document["usage"]
        if document.get("timings"):
            self._timings = document["timings"]
        choices = document.get("choices") or []
        if not choices:
            return b""
        choice = choices[0]
        if choice.get("finish_reason"):
            self._reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or ():
            self._join_call(call)
        text = delta.get("content") if "delta" in choice else choice.get("text")
        thinking = reasoning(delta)
        if not text and not thinking:
            return b""
        if self._first is None:
            self._first = time.monotonic()
        return line(self._part(text or "", thinking))

    def _join_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", 0)
        if not isinstance(index, int) or not 0 <= index < 1024:  # the tools a model calls at once
            raise ValueError(f"a tool call index of {str(index)[:20]}")
        call = self._calls.setdefault(index, {"function": {"name": "", "arguments": ""}})
        function = delta.get("function") or {}
        call["function"]["name"] += str(function.get("name") or "")
        call["function"]["arguments"] += str(function.get("arguments") or "")

    def _part(self, text: str, thinking: str | None = None, calls: list[Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self._model, "created_at": now_rfc3339()}
        if self._kind == "chat":
            out["message"] = _message(text, thinking, calls)
        else:
            out["response"] = text
            if thinking:
                out["thinking"] = thinking
        out["done"] = False
        return out

    def _final(self) -> bytes:
        self.done = True
        out = b""
        if self._calls:  # Ollama sends whole tool calls, in a line of their own before the last
            calls = ollama_tool_calls(self._calls[i] for i in sorted(self._calls))
            out = line(self._part("", calls=calls))
        last = self._part("")
        last |= {"done": True, "done_reason": self._reason}
        last |= durations(self._started, self._first, self._timings) | counts(self._usage)
        return out + line(last)


# --- errors ----------------------------------------------------------------------------------------


def error_text(document: Any) -> str:
    """The message of an OpenAI or llama-server error document (or of Ollama's own)."""
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return "unknown error"


def not_found(model: str, served: Iterable[str]) -> str:
    names = sorted(served)
    listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return (
        f'model "{model}" not found: modelctl serves the models its manifests declare '
        f"({listed or 'none yet'}); add a manifest to serve another"
    )


def managed_elsewhere(path: str) -> str:
    return (
        f"{path} is not available: modelctl serves the models declared in its manifests folder. "
        "To add, change or remove a model, edit its manifest there; the controller pulls and starts it."
    )
