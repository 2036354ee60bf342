"""Ollama's API on the gateway against fake llama-server replicas: what reaches the replica, what
the client gets (NDJSON streams, JSON, Ollama-shaped errors), and that translated calls keep what
chat has (admission's 429/503, retries before the first byte, cancel on disconnect, metrics)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import ollama
import pytest
from aiohttp.test_utils import TestClient
from gateway_fakes import PIECES, StartGateway, StartUpstream, eventually, refused_url, table_of

from controller.endpoints.table import Details, EndpointTable, ModelEndpoints, Replica
from controller.gateway.app import BALANCER

USER = [{"role": "user", "content": "Hi"}]


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def test_chat_streams_ndjson_from_an_openai_stream(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    client = await start_gateway(table_of(("smollm2", ("smollm",), [url])))
    request = {
        "model": "smollm",
        "messages": USER,
        "options": {"temperature": 0, "num_predict": 8, "seed": 1},
    }
    resp = await client.post("/api/chat", json=request)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    assert resp.headers["X-Modelctl-Replica"] == "smollm2-0"
    parts = ndjson(await resp.text())
    assert "".join(p["message"]["content"] for p in parts) == "".join(PIECES)
    last = parts[-1]
    assert last["done"] is True and last["done_reason"] == "stop" and last["model"] == "smollm"
    assert (last["prompt_eval_count"], last["eval_count"]) == (6, len(PIECES))
    seen = fake.requests[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.body == {
        "model": "smollm2",
        "messages": USER,
        "temperature": 0,
        "max_tokens": 8,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_chat_and_generate_not_streamed(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])))
    resp = await client.post(
        "/api/chat", json={"model": "m", "messages": USER, "stream": False, "format": "json"}
    )
    answer = await resp.json()
    assert resp.status == 200
    assert answer["message"] == {"role": "assistant", "content": "hello from a"}
    assert (answer["done"], answer["prompt_eval_count"], answer["eval_count"]) == (True, 5, 4)
    assert fake.requests[-1].body["response_format"] == {"type": "json_object"}
    resp = await client.post("/api/generate", json={"model": "m", "prompt": "Hi", "stream": False})
    assert (await resp.json())["response"] == "hello from a"
    resp = await client.post(
        "/api/generate", json={"model": "m", "prompt": "Once", "raw": True, "stream": False}
    )
    assert (await resp.json())["response"] == "hello from a"
    assert fake.requests[-1].path == "/v1/completions"


async def test_generate_streamed(start_gateway: StartGateway, start_upstream: StartUpstream) -> None:
    _, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])))
    resp = await client.post("/api/generate", json={"model": "m", "prompt": "Hi"})
    parts = ndjson(await resp.text())
    assert "".join(p["response"] for p in parts) == "".join(PIECES) and parts[-1]["done"] is True


async def test_an_empty_chat_or_prompt_is_ollamas_load_call(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])))
    for path, body in (("/api/chat", {"messages": []}), ("/api/generate", {})):
        resp = await client.post(path, json={"model": "m", **body})
        assert (await resp.json())["done_reason"] == "load"
    assert fake.requests == []


async def test_embed_and_the_older_embeddings(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url]), task="embed"))
    resp = await client.post("/api/embed", json={"model": "m", "input": ["a", "b"]})
    assert (await resp.json())["embeddings"] == [[0.25, -0.5, 0.0], [0.25, -0.5, 1.0]]
    assert fake.requests[-1].path == "/v1/embeddings"
    resp = await client.post("/api/embeddings", json={"model": "m", "prompt": "a"})
    assert await resp.json() == {"embedding": [0.25, -0.5, 0.0]}


DETAILS = Details(format="gguf", family="llama", parameter_size="135M", quantization="Q4_1", size=1000)


async def test_lists_come_from_the_table(start_gateway: StartGateway, start_upstream: StartUpstream) -> None:
    table = EndpointTable(
        version=1,
        models=(
            ModelEndpoints(
                "m", ("alias",), 1764120000, (Replica("m-0", "http://x", gpus=("0", "1")),), details=DETAILS
            ),
            ModelEndpoints("cold", unload_after_s=60.0),
        ),
    )
    client = await start_gateway(table)
    assert (await (await client.get("/api/version")).json())["version"]
    assert await (await client.get("/")).text() == "Ollama is running"
    tags = (await (await client.get("/api/tags")).json())["models"]
    assert [(m["name"], m["details"]["quantization_level"]) for m in tags] == [
        ("m", "Q4_1"),
        ("alias", "Q4_1"),
        ("cold", ""),
    ]
    ps = (await (await client.get("/api/ps")).json())["models"]
    assert [(m["name"], m["gpus"], m["size_vram"]) for m in ps] == [("m", ["0", "1"], 1000)]
    shown = await (await client.post("/api/show", json={"model": "alias"})).json()
    assert shown["details"]["family"] == "llama"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "/api/chat", {"model": "gpt-9", "messages": USER}, 404, 'model "gpt-9" not found'),
        ("POST", "/api/show", {"model": "gpt-9"}, 404, "not found"),
        ("POST", "/api/chat", "{not json", 400, "invalid JSON"),
        ("POST", "/api/chat", {"messages": USER}, 400, "model is required"),
        ("POST", "/api/generate", {"model": "m", "prompt": "x", "format": "xml"}, 400, "format"),
        ("POST", "/api/pull", {"model": "llama3"}, 501, "manifests folder"),
        ("DELETE", "/api/delete", {"model": "m"}, 501, "manifests folder"),
        ("POST", "/api/copy", {"source": "m", "destination": "n"}, 501, "manifests folder"),
        ("GET", "/api/nothing", None, 404, "no such Ollama API call"),
    ],
)
async def test_errors_are_ollama_shaped(
    start_gateway: StartGateway,
    start_upstream: StartUpstream,
    method: str,
    path: str,
    body: Any,
    status: int,
    words: str,
) -> None:
    _, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])))
    data = body if isinstance(body, str) else json.dumps(body) if body is not None else None
    resp = await client.request(method, path, data=data)
    assert resp.status == status
    document = await resp.json()
    assert list(document) == ["error"] and words in document["error"]


async def test_the_engines_own_errors_pass_with_their_status(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a", status=400)
    client = await start_gateway(table_of(("m", (), [url])))
    for stream in (False, True):
        resp = await client.post("/api/chat", json={"model": "m", "messages": USER, "stream": stream})
        assert resp.status == 400
        assert await resp.json() == {"error": "Loading model"}  # the fake's message, in Ollama's shape


async def busy_gateway(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> tuple[TestClient[Any, Any], Any]:
    fake, url = await start_upstream("busy")
    fake.hold = asyncio.Event()
    client = await start_gateway(
        table_of(("busy", (), [url]), ("cold", (), []), max_concurrency=1),
        queue_timeout_s=0,
        cold_start_wait_s=0.05,
    )
    return client, fake


async def test_admission_refusals_are_ollama_shaped_with_retry_after(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    client, fake = await busy_gateway(start_gateway, start_upstream)
    holder = asyncio.create_task(client.post("/api/chat", json={"model": "busy", "messages": USER}))
    await eventually(lambda: fake.active == 1)
    resp = await client.post("/api/chat", json={"model": "busy", "messages": USER})
    assert resp.status == 429 and resp.headers["Retry-After"]
    assert "capacity" in (await resp.json())["error"]
    resp = await client.post(
        "/api/generate", json={"model": "cold", "prompt": "x"}
    )  # streamed: held silently
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert "did not become ready" in (await resp.json())["error"]
    assert fake.hold is not None
    fake.hold.set()
    await (await holder).read()


async def test_a_failed_replica_is_retried_before_the_first_byte(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("good")
    client = await start_gateway(table_of(("m", (), [refused_url(), url]), balancing="round-robin"))
    for _ in range(2):
        resp = await client.post("/api/chat", json={"model": "m", "messages": USER, "stream": False})
        assert (await resp.json())["message"]["content"] == "hello from good"


async def test_a_client_that_leaves_cancels_the_replicas_stream(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.endless = True
    client = await start_gateway(table_of(("m", (), [url])))
    resp = await client.post("/api/chat", json={"model": "m", "messages": USER})
    assert json.loads(await resp.content.readline())["message"]["content"] == PIECES[0]
    resp.close()
    await asyncio.wait_for(fake.cancelled.wait(), 5)


async def test_metrics_count_ollama_calls(start_gateway: StartGateway, start_upstream: StartUpstream) -> None:
    _, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])))
    await (await client.post("/api/chat", json={"model": "m", "messages": USER})).read()
    await (await client.post("/api/chat", json={"model": "m", "messages": USER, "stream": False})).read()
    text = await (await client.get("/metrics")).text()
    assert 'api="ollama"' in text
    requests = [
        ln
        for ln in text.splitlines()
        if ln.startswith("modelctl_gateway_requests_total{") and 'api="ollama"' in ln
    ]
    assert sum(float(ln.rsplit(" ", 1)[1]) for ln in requests) == 2
    tokens = [
        ln
        for ln in text.splitlines()
        if ln.startswith("modelctl_gateway_tokens_total{") and 'kind="completion"' in ln
    ]
    assert sum(float(ln.rsplit(" ", 1)[1]) for ln in tokens) == len(PIECES) + 4  # streamed + whole


async def test_the_official_client(start_gateway: StartGateway, start_upstream: StartUpstream) -> None:
    _, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("smollm2", ("smollm",), [url])))
    client = ollama.AsyncClient(host=str(gateway.make_url("")))
    names = [m.model for m in (await client.list()).models]
    assert names == ["smollm2", "smollm"]
    answer = await client.chat(model="smollm", messages=USER)
    assert answer.message.content == "hello from a" and answer.eval_count == 4
    streamed = [part async for part in await client.chat(model="smollm", messages=USER, stream=True)]
    assert "".join(p.message.content or "" for p in streamed) == "".join(PIECES) and streamed[-1].done
    with pytest.raises(ollama.ResponseError) as caught:
        await client.chat(model="nope", messages=USER)
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        await client.pull("llama3")
    assert caught.value.status_code == 501


def counted(text: str, name: str, **labels: str) -> float:
    """The sum of ``modelctl_gateway_<name>`` samples whose labels include ``labels``."""
    total = 0.0
    for ln in text.splitlines():
        if ln.startswith(f"modelctl_gateway_{name}{{") and all(f'{k}="{v}"' in ln for k, v in labels.items()):
            total += float(ln.rsplit(" ", 1)[1])
    return total


async def test_a_client_that_leaves_after_the_done_line_was_served(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    """Honest counts: the replica ends its body later than its last event (``linger_s``); a client
    that hangs up once it has the done line got the whole answer: a 200 with its tokens."""
    fake, url = await start_upstream("a")
    fake.linger_s = 0.5
    client = await start_gateway(table_of(("m", (), [url])))
    for _ in range(2):
        async with aiohttp.ClientSession() as session:
            resp = await session.post(client.make_url("/api/chat"), json={"model": "m", "messages": USER})
            async for raw in resp.content:
                if json.loads(raw)["done"]:
                    break
            resp.close()
    await eventually(lambda: client.app[BALANCER].in_flight("m-0") == 0)
    text = await (await client.get("/metrics")).text()
    assert counted(text, "requests_total", api="ollama", status="200") == 2
    assert counted(text, "requests_total", api="ollama", status="499") == 0
    assert counted(text, "tokens_total", api="ollama", kind="completion") == 2 * len(PIECES)


async def test_too_large_and_unauthorised_are_ollama_shaped(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])), max_body_bytes=1024, api_keys=("sk-right",))
    headers = {"Authorization": "Bearer sk-right"}
    resp = await client.post(
        "/api/chat", json={"model": "m", "messages": USER, "pad": "x" * 2048}, headers=headers
    )
    assert resp.status == 413 and "larger than" in (await resp.json())["error"]
    resp = await client.get("/api/tags", headers={"Authorization": "Bearer sk-wrong"})
    assert resp.status == 401 and isinstance((await resp.json())["error"], str)
    resp = await client.post(
        "/api/chat", json={"model": "m:latest", "messages": USER, "stream": False}, headers=headers
    )
    assert (await resp.json())["model"] == "m:latest"


async def test_a_replica_that_breaks_mid_stream_ends_it_with_an_error_line(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.break_after_first = True
    client = await start_gateway(table_of(("m", (), [url])))
    resp = await client.post("/api/chat", json={"model": "m", "messages": USER})
    parts = ndjson(await resp.text())
    assert parts[0]["message"]["content"] == PIECES[0]
    assert parts[-1] == {"error": "The model server failed mid-stream."}


async def test_a_replica_that_breaks_inside_an_event_ends_it_with_an_error_line(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    """The half event the replica left is no chunk; the error after it must still be said, not
    lost in that event's JSON (the stream then ended with a plain done line)."""
    fake, url = await start_upstream("a")
    fake.break_mid_event = True
    client = await start_gateway(table_of(("m", (), [url])))
    resp = await client.post("/api/chat", json={"model": "m", "messages": USER})
    parts = ndjson(await resp.text())
    assert parts[0]["message"]["content"] == PIECES[0]
    assert parts[-1] == {"error": "The model server failed mid-stream."}
    assert not any(p.get("done") for p in parts)


async def test_a_large_json_answer_is_translated_whole(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    """Over 1 MiB the proxy streams a JSON answer instead of reading it whole: kept, then translated."""
    _, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url]), task="embed"))
    resp = await client.post("/api/embed", json={"model": "m", "input": ["a"] * 20_000})
    assert resp.status == 200
    vectors = (await resp.json())["embeddings"]
    assert len(vectors) == 20_000 and vectors[-1] == [0.25, -0.5, 19_999.0]
