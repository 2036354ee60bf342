"""Images in a request, checked before they reach a replica that would fail on them.

Every API the gateway speaks can carry images: OpenAI's chat ``image_url`` parts, Responses'
``input_image`` parts, Anthropic's ``image`` blocks (base64 or URL sources), llama-server's
``multimodal_data`` on completions, and Ollama's ``images`` (``ollama_translate`` turns those into
``image_url`` parts first). The engines answer such a request badly when it cannot be served:
llama-server without a projector answers 500 ("image input is not supported"), and given an
http(s) URL it downloads the image itself, from inside the replica's network. So, per request:

- a model that takes no images (the table's ``vision`` false) gets a 400 naming the model;
- images come as ``data:`` URLs only (base64 Anthropic sources are those): an engine handed an
  http(s) URL fetches it from inside the replicas' network, where a client could aim it at any
  address (vLLM does so too, measured). A gateway may let vLLM replicas fetch URLs
  (``GatewaySettings.image_urls``); llama.cpp never;
- at most ``MAX_IMAGES`` images (the body limit already bounds their bytes).

A model whose ``vision`` is unknown (None: hub weights, an older controller) is not checked for
vision. A body that names no image member at all is not walked (a bytes search, as the usage
splice does), unless it escapes characters (``\\u``) and so could spell one unseen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from controller.endpoints.table import LLAMACPP, Target
from controller.gateway import errors

MAX_IMAGES = 16  # images in one request (vLLM's default --limit-mm-per-prompt is 1 per kind, ...)
_MARKS = (b"image", b"multimodal_data", b"\\u")
# Part types that carry an image, in every API's spelling.
_PART_TYPES = frozenset({"image_url", "input_image", "image"})
DATA = "data:"


def may_hold_images(body: bytes) -> bool:
    """False when ``body`` certainly names no image member (nothing to walk)."""
    return any(mark in body for mark in _MARKS)


def image_urls(document: Any) -> Iterator[str]:
    """The URL of every image in a parsed request (``data:...`` for inline ones), in any API's shape.
    Stops being asked once the caller has seen too many: a generator, walked without recursion."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        if node.get("type") in _PART_TYPES:
            url = part_url(node)
            if url is not None:
                yield url
                continue
        data = node.get("multimodal_data")
        if isinstance(data, list):
            yield from (DATA for _ in data)
        stack.extend(v for v in node.values() if isinstance(v, list | dict))


def part_url(part: dict[str, Any]) -> str | None:
    """The URL an image part points at (``data:`` for inline data), or None if it holds no image."""
    kind = part["type"]
    if kind == "image":  # Anthropic: {"source": {"type": "base64" | "url", ...}}
        source = part.get("source")
        if not isinstance(source, dict):
            return None
        return DATA if source.get("type") == "base64" else str(source.get("url") or source.get("type") or "")
    value = part.get("image_url", part.get("file_id", ""))  # Responses: a string (or a file id)
    if isinstance(value, dict):  # OpenAI chat: {"image_url": {"url": ...}}
        value = value.get("url", "")
    return value if isinstance(value, str) else ""


def check(target: Target, document: dict[str, Any], body: bytes | None = None, *, urls: bool = False) -> None:
    """Raise Refusal (400) for images ``target`` cannot take. ``body``: the bytes ``document`` was
    parsed from (None: walk it anyway); ``urls``: whether a vLLM replica may fetch images by URL."""
    if body is not None and not may_hold_images(body):
        return
    entry = target.entry
    for count, url in enumerate(image_urls(document), start=1):
        if entry.vision is False:
            raise errors.bad_request(f"model {target.name} takes no images: {_why_not(entry.engine)}")
        if count > MAX_IMAGES:
            raise errors.bad_request(f"A request may hold at most {MAX_IMAGES} images.")
        if not url.startswith(DATA) and (entry.engine == LLAMACPP or not urls):
            allow = (
                "" if entry.engine == LLAMACPP else " (MODELCTL_GATEWAY_IMAGE_URLS=true allows it for vLLM)"
            )
            raise errors.bad_request(
                f"pass images as data: URLs (base64): the gateway lets no replica of model "
                f"{target.name} fetch an image by URL{allow}"
            )


def _why_not(engine: str) -> str:
    if engine == LLAMACPP:
        return "it has no projector (mmproj)"
    return "its weights' config.json has no vision_config"
