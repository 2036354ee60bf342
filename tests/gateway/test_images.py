"""Images through every API the gateway speaks: refused in the API's own shape for a model that takes
none, refused by URL for llama.cpp (it would fetch them itself), bounded in number, and Ollama's bare
base64 turned into data: URLs whose media type comes from the image's first bytes. Real aiohttp
servers stand in for the replicas and record the body each one receives."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp import web

from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica, Target
from controller.gateway.doors import images
from controller.gateway.doors import ollama_translate as translate

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(40)).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(40)).decode()
GIF = base64.b64encode(b"GIF89a" + bytes(40)).decode()
WEBP = base64.b64encode(b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(40)).decode()
DATA_URL = f"data:image/png;base64,{PNG}"
NO_IMAGES = "model smollm2 takes no images: it has no projector (mmproj)"


def chat(model: str, *urls: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is in this image?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": parts}]}


def anthropic(model: str, source: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "image", "source": source}, {"type": "text", "text": "What is this?"}]
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": content}]}


def responses(model: str, url: str) -> dict[str, Any]:
    content = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": url}]
    return {"model": model, "input": [{"role": "user", "content": content}]}


@pytest.fixture
async def gateway(aiohttp_server: Any, start_gateway: Any) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """The gateway over smollm2 (llama.cpp, no projector), vlm (llama.cpp with one), qwen-vl (vLLM,
    vision) and hub (llama.cpp, vision unknown), all on one recording replica."""
    return await recorded(aiohttp_server, start_gateway)


async def recorded(
    aiohttp_server: Any, start_gateway: Any, **settings: Any
) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """``gateway`` with gateway ``settings``."""
    seen: list[tuple[str, dict[str, Any]]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.path, await request.json()))
        if request.path == "/v1/messages":
            return web.json_response({"type": "message", "content": [], "usage": {}})
        message = {"role": "assistant", "content": "a picture"}
        return web.json_response({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_post("/{path:.*}", answer)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")

    def entry(name: str, engine: str, vision: bool | None) -> ModelEndpoints:
        return ModelEndpoints(name, replicas=(Replica(name, url),), engine=engine, vision=vision)

    models = (
        entry("smollm2", "llamacpp", False),
        entry("vlm", "llamacpp", True),
        entry("qwen-vl", "vllm", True),
        entry("hub", "llamacpp", None),
    )
    return await start_gateway(EndpointTable(1, models), **settings), seen


async def post(client: Any, path: str, document: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post(path, json=document)
    return resp.status, await resp.json()


async def test_a_model_without_a_projector_refuses_images_in_every_apis_shape(gateway: Any) -> None:
    client, seen = gateway
    status, answer = await post(client, "/v1/chat/completions", chat("smollm2", DATA_URL))
    assert (status, answer["error"]["message"]) == (400, NO_IMAGES)
    assert answer["error"]["type"] == "invalid_request_error"
    source = {"type": "base64", "media_type": "image/png", "data": PNG}
    status, answer = await post(client, "/v1/messages", anthropic("smollm2", source))
    assert (status, answer["type"], answer["error"]["message"]) == (400, "error", NO_IMAGES)
    status, answer = await post(client, "/v1/responses", responses("smollm2", DATA_URL))
    assert (status, answer["error"]["message"]) == (400, NO_IMAGES)
    chat_ollama = {"model": "smollm2", "messages": [{"role": "user", "content": "?", "images": [PNG]}]}
    status, answer = await post(client, "/api/chat", chat_ollama)
    assert (status, answer) == (400, {"error": NO_IMAGES})
    status, answer = await post(client, "/api/generate", {"model": "smollm2", "prompt": "?", "images": [PNG]})
    assert (status, answer) == (400, {"error": NO_IMAGES})
    assert seen == []
    # The same model answers text, and an image-free body is not held up.
    assert (await post(client, "/v1/chat/completions", chat("smollm2")))[0] == 200


async def test_a_model_with_a_projector_takes_data_urls_from_every_api(gateway: Any) -> None:
    client, seen = gateway
    assert (await post(client, "/v1/chat/completions", chat("vlm", DATA_URL)))[0] == 200
    source = {"type": "base64", "media_type": "image/png", "data": PNG}
    assert (await post(client, "/v1/messages", anthropic("vlm", source)))[0] == 200
    assert (await post(client, "/v1/responses", responses("vlm", DATA_URL)))[0] == 200
    chat_ollama = {
        "model": "vlm",
        "stream": False,
        "messages": [{"role": "user", "content": "?", "images": [JPEG]}],
    }
    assert (await post(client, "/api/chat", chat_ollama))[0] == 200
    generate = {"model": "vlm", "stream": False, "prompt": "?", "images": [GIF, WEBP, PNG]}
    assert (await post(client, "/api/generate", generate))[0] == 200
    ollama_urls = [
        part["image_url"]["url"]
        for path, body in seen[3:]
        for part in body["messages"][-1]["content"]
        if part["type"] == "image_url"
    ]
    assert ollama_urls == [
        f"data:image/jpeg;base64,{JPEG}",
        f"data:image/gif;base64,{GIF}",
        f"data:image/webp;base64,{WEBP}",
        f"data:image/png;base64,{PNG}",
    ]


async def test_llamacpp_takes_no_image_by_url(gateway: Any) -> None:
    client, seen = gateway
    for model in ("vlm", "hub"):  # a projector, or vision unknown: the URL rule holds either way
        status, answer = await post(
            client, "/v1/chat/completions", chat(model, "http://169.254.169.254/x.png")
        )
        assert status == 400 and answer["error"]["message"].startswith("pass images as data: URLs"), answer
    status, answer = await post(
        client, "/v1/messages", anthropic("vlm", {"type": "url", "url": "https://x/y.png"})
    )
    assert status == 400 and "data: URLs" in answer["error"]["message"]
    status, answer = await post(client, "/v1/responses", responses("vlm", "https://x/y.png"))
    assert status == 400
    assert seen == []
    assert (await post(client, "/v1/chat/completions", chat("hub", DATA_URL)))[0] == 200  # vision unknown


async def test_vllm_fetches_images_by_url_only_where_the_gateway_allows_it(
    aiohttp_server: Any, start_gateway: Any
) -> None:
    """vLLM downloads an image URL from inside the replicas' network (a client could aim it at
    169.254.169.254): refused unless MODELCTL_GATEWAY_IMAGE_URLS, and llama.cpp never."""
    client, seen = await recorded(aiohttp_server, start_gateway)
    status, answer = await post(
        client, "/v1/chat/completions", chat("qwen-vl", "http://169.254.169.254/x.png")
    )
    assert status == 400 and "MODELCTL_GATEWAY_IMAGE_URLS=true" in answer["error"]["message"]
    status, _ = await post(
        client, "/v1/messages", anthropic("qwen-vl", {"type": "url", "url": "https://x/y.png"})
    )
    assert status == 400 and seen == []
    assert (await post(client, "/v1/chat/completions", chat("qwen-vl", DATA_URL)))[0] == 200
    client, seen = await recorded(aiohttp_server, start_gateway, image_urls=True)
    assert (await post(client, "/v1/chat/completions", chat("qwen-vl", "https://x/y.png")))[0] == 200
    status, answer = await post(client, "/v1/chat/completions", chat("vlm", "https://x/y.png"))
    assert status == 400 and "IMAGE_URLS" not in answer["error"]["message"]  # llama.cpp: no setting helps


async def test_images_are_counted(gateway: Any) -> None:
    client, seen = gateway
    most = images.MAX_IMAGES
    assert (await post(client, "/v1/chat/completions", chat("vlm", *[DATA_URL] * most)))[0] == 200
    status, answer = await post(client, "/v1/chat/completions", chat("vlm", *[DATA_URL] * (most + 1)))
    assert status == 400 and str(most) in answer["error"]["message"]
    generate = {"model": "vlm", "prompt": "?", "images": [PNG] * (most + 1)}
    assert (await post(client, "/api/generate", generate))[0] == 400
    assert len(seen) == 1


async def test_an_escaped_part_type_is_still_seen(gateway: Any) -> None:
    client, seen = gateway
    raw = json.dumps(chat("smollm2", DATA_URL)).replace('"type": "image_url"', '"\\u0074ype": "image_url"')
    resp = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400 and seen == []


async def test_ollama_images_that_are_no_image_are_refused(gateway: Any) -> None:
    client, seen = gateway
    for bad in (base64.b64encode(b"%PDF-1.7 not an image").decode(), "not base64!", ""):
        generate = {"model": "vlm", "prompt": "?", "images": [bad]}
        status, answer = await post(client, "/api/generate", generate)
        assert status == 400, bad
        assert "PNG, JPEG, GIF or WebP" in answer["error"] or "base64" in answer["error"]
    assert seen == []


@pytest.mark.parametrize(
    ("data", "kind"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
)
def test_media_types_from_magic_bytes(data: str, kind: str) -> None:
    assert translate.media_type(data) == kind
    assert translate.image_url(data)["image_url"]["url"] == f"data:{kind};base64,{data}"


def test_image_urls_in_every_shape() -> None:
    document = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:a"}}]},
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x"}}]}]},
        ],
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://y"},
                                               {"type": "input_image", "file_id": "file-1"}]}],
        "prompt": {"prompt_string": "<__media__>", "multimodal_data": ["AAAA"]},
    }  # fmt: skip
    assert sorted(images.image_urls(document)) == sorted(
        ["data:a", "data:", "https://x", "https://y", "file-1", "data:"]
    )
    target = Target(ModelEndpoints("m", engine="vllm", vision=True))
    images.check(target, {"messages": []}, b'{"messages": []}')  # nothing to walk, nothing refused
