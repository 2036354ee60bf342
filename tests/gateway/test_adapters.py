"""LoRA adapters by name through the gateway: real aiohttp servers stand in for the replicas and
record the bytes each one receives, so the tests check the body the engine gets (the exact
``lora`` list for llama.cpp, the ``model`` for vLLM, untouched bytes for a model without adapters),
where each request went, what the lists show and what the metrics count."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from gateway_fakes import eventually

from controller.endpoints.demand import DemandReport, ModelDemand
from controller.endpoints.table import EndpointTable, ModelEndpoints, Replica, Target
from controller.gateway import GatewaySettings, StaticTable, create_app
from controller.gateway.app import ADMISSION, METRICS
from controller.gateway.doors import targets

CHAT = "/v1/chat/completions"
ADAPTERS = ("smollm2-a", "smollm2-b")
SEA = [{"role": "user", "content": "Write one sentence about the sea."}]


class Recorder:
    """A replica that records every request's path and raw body and answers a small chat.completion
    (Messages and Ollama's translation read it too)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, bytes]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, await request.read()))
        if request.path == "/v1/messages":
            return web.json_response(
                {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "hi"}],
                 "model": "m", "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}
            )  # fmt: skip
        message = {"role": "assistant", "content": f"from {self.name}"}
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        return web.json_response(
            {"object": "chat.completion", "model": "m", "usage": usage,
             "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}
        )  # fmt: skip

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _, raw in self.seen]


@pytest.fixture
async def replicas(aiohttp_server: Any) -> list[tuple[Recorder, str]]:
    started = []
    for name in ("r0", "r1"):
        recorder = Recorder(name)
        server = await aiohttp_server(recorder.app())
        started.append((recorder, str(server.make_url("")).rstrip("/")))
    return started


def model(name: str, urls: list[str], **fields: Any) -> ModelEndpoints:
    replicas = tuple(Replica(f"{name}-{i}", url, max_concurrency=4) for i, url in enumerate(urls))
    return ModelEndpoints(name, replicas=replicas, **fields)


def table(replicas: list[tuple[Recorder, str]], **extra: Any) -> EndpointTable:
    """smollm2 (llama.cpp, adapters a and b) on both replicas; plain (llama.cpp, no adapters) and
    qwen (vLLM, adapters) on the first."""
    urls = [url for _, url in replicas]
    return EndpointTable(
        version=1,
        models=(
            model("smollm2", urls, aliases=("smol",), engine="llamacpp", adapters=ADAPTERS, **extra),
            model("plain", urls[:1], engine="llamacpp"),
            model("qwen", urls[:1], aliases=("qw",), engine="vllm", adapters=("qwen-sql", "qwen-poems")),
        ),
    )  # fmt: skip


def lora(chosen: int | None) -> list[dict[str, Any]]:
    return [{"id": k, "scale": 1.0 if k == chosen else 0.0} for k in (0, 1)]


async def post(client: TestClient[Any, Any], path: str, document: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post(path, json=document)
    return resp.status, await resp.json()


# --- the table -------------------------------------------------------------------------------------


def test_resolve_names_models_adapters_and_base_colon_adapter() -> None:
    entry = ModelEndpoints("smollm2", aliases=("smol",), adapters=("smollm2-a", "smollm2-b"))
    other = ModelEndpoints("qwen", adapters=("qwen-sql",))
    found = EndpointTable(1, (entry, other))
    assert found.resolve("smollm2") == Target(entry)
    assert found.resolve("smol") == Target(entry)
    assert found.resolve("smollm2-b") == Target(entry, 1)
    assert found.resolve("smollm2:smollm2-a") == Target(entry, 0)
    assert found.resolve("smol:smollm2-b") == Target(entry, 1)
    assert found.resolve("qwen-sql") == Target(other, 0)
    assert found.resolve("smollm2:qwen-sql") is None  # another model's adapter
    assert found.resolve("smollm2:") is None
    assert found.resolve("nope") is None
    assert found.resolve("smollm2-b").name == "smollm2-b"  # type: ignore[union-attr]
    assert found.resolve("smol").name == "smollm2"  # type: ignore[union-attr]
    assert found.lookup("smollm2-a") is None  # lookup keeps meaning models only


def test_the_wire_format_carries_adapters_and_vision_and_older_tables_parse() -> None:
    entry = ModelEndpoints("smollm2", adapters=("smollm2-a", "smollm2-b"), vision=False)
    wire = EndpointTable(3, (entry, ModelEndpoints("vlm", vision=True)), epoch="e").to_json()
    assert wire["models"][0]["adapters"] == ["smollm2-a", "smollm2-b"]
    assert wire["models"][0]["vision"] is False
    assert EndpointTable.from_json(json.loads(json.dumps(wire))).models == (
        entry,
        ModelEndpoints("vlm", vision=True),
    )
    old = {"version": 1, "models": [{"name": "smollm2", "replicas": []}]}
    parsed = EndpointTable.from_json(old).models[0]
    assert parsed.adapters == () and parsed.vision is None
    with pytest.raises(ValueError, match="vision"):
        EndpointTable.from_json({"version": 1, "models": [{"name": "m", "vision": "yes"}]})


def test_an_adapter_keeps_a_prefix_key_of_its_own() -> None:
    entry = ModelEndpoints("smollm2", adapters=("smollm2-a", "smollm2-b"))
    keys = {targets.prefix_key(42, Target(entry, k)) for k in (None, 0, 1)}
    assert len(keys) == 3 and targets.prefix_key(42, Target(entry)) == 42
    assert targets.prefix_key(None, Target(entry, 0)) is None


# --- the body the replica gets ---------------------------------------------------------------------


async def test_llamacpp_gets_the_whole_lora_list_on_every_request(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    for name in ("smollm2-a", "smollm2", "smollm2:smollm2-b", "smol", "smol:smollm2-a"):
        status, _ = await post(client, CHAT, {"model": name, "messages": SEA, "temperature": 0})
        assert status == 200, name
    seen = [body for recorder, _ in replicas for body in recorder.bodies()]
    assert sorted(json.dumps(b["lora"]) for b in seen) == sorted(
        json.dumps(lora(k)) for k in (0, None, 1, None, 0)
    )
    # Everything else as the client sent it.
    assert all(b["messages"] == SEA and b["temperature"] == 0 for b in seen)


async def test_the_clients_lora_is_replaced(replicas: list[tuple[Recorder, str]], start_gateway: Any) -> None:
    client = await start_gateway(table(replicas))
    sneaky = [{"id": 1, "scale": 5.0}, {"id": 0, "scale": 0.5}]
    for name in ("smollm2-a", "smollm2"):
        status, _ = await post(client, CHAT, {"model": name, "messages": SEA, "lora": sneaky})
        assert status == 200
    seen = [body["lora"] for recorder, _ in replicas for body in recorder.bodies()]
    assert sorted(map(json.dumps, seen)) == sorted(map(json.dumps, [lora(0), lora(None)]))


async def test_completions_and_responses_carry_the_choice(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    assert (await post(client, "/v1/completions", {"model": "smollm2-b", "prompt": "The sea"}))[0] == 200
    assert (await post(client, "/v1/responses", {"model": "smollm2-a", "input": "The sea"}))[0] == 200
    seen = {path: json.loads(raw) for recorder, _ in replicas for path, raw in recorder.seen}
    assert seen["/v1/completions"]["lora"] == lora(1)
    assert seen["/v1/responses"]["lora"] == lora(0)


async def test_a_model_without_adapters_gets_the_clients_bytes(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    raw = b'  {"messages": [{"role":"user","content":"caf\\u00e9 \xc3\xa9"}],\n "model" : "plain", "lora": 7}'
    resp = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    [(recorder, _), _] = replicas
    assert recorder.seen == [(CHAT, raw)]


async def test_an_adapter_body_is_spliced_not_rewritten(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    raw = b'{"model": "smollm2-b",  "messages": [{"role": "user", "content": "caf\\u00e9"}]}'
    resp = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    [(_, got)] = [seen for recorder, _ in replicas for seen in recorder.seen]
    assert got == b'{"lora":[{"id":0,"scale":0.0},{"id":1,"scale":1.0}],' + raw[1:]


async def test_vllm_gets_the_adapters_name_as_model(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    for name in ("qwen:qwen-sql", "qw:qwen-poems", "qwen-sql", "qw", "qwen"):
        status, _ = await post(client, CHAT, {"model": name, "messages": SEA})
        assert status == 200, name
    [(recorder, _), _] = replicas
    assert [b["model"] for b in recorder.bodies()] == ["qwen-sql", "qwen-poems", "qwen-sql", "qw", "qwen"]
    assert all("lora" not in b for b in recorder.bodies())
    # A body that already names what vLLM serves is not touched.
    raw = b'{"model":"qwen-sql" , "messages":[]}'
    await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert recorder.seen[-1] == (CHAT, raw)


async def test_messages_go_as_chat_with_the_choice_and_other_apis_refuse_it(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    messages = {"model": "smollm2-a", "max_tokens": 8, "messages": SEA}
    for name in ("smollm2-a", "smollm2"):  # llama-server's /v1/messages would drop lora: translated
        status, answer = await post(client, "/v1/messages", messages | {"model": name})
        assert status == 200 and answer["type"] == "message" and answer["model"] == name
        assert answer["content"][0]["text"].startswith("from r")
    seen = [(path, json.loads(raw)) for recorder, _ in replicas for path, raw in recorder.seen]
    assert sorted(json.dumps(body["lora"]) for _, body in seen) == sorted(
        [json.dumps(lora(0)), json.dumps(lora(None))]
    )
    assert {path for path, _ in seen} == {CHAT}
    status, answer = await post(client, "/v1/embeddings", {"model": "smollm2:smollm2-b", "input": "x"})
    assert status == 400 and "smollm2-b" in answer["error"]["message"]
    assert sum(len(recorder.seen) for recorder, _ in replicas) == 2
    # vLLM selects by name on every API; a model without adapters is as before.
    assert (await post(client, "/v1/messages", messages | {"model": "qwen-sql"}))[0] == 200
    assert (await post(client, "/v1/messages", messages | {"model": "plain"}))[0] == 200
    assert replicas[0][0].seen[-1][0] == "/v1/messages"


async def test_ollama_calls_carry_the_choice(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    chat = {"model": "smollm2-a", "messages": SEA, "stream": False}
    status, answer = await post(client, "/api/chat", chat)
    assert status == 200 and answer["model"] == "smollm2-a"
    assert (
        await post(client, "/api/generate", {"model": "smollm2:smollm2-b", "prompt": "x", "stream": False})
    )[0] == 200
    assert (await post(client, "/api/chat", chat | {"model": "qwen-poems:latest"}))[0] == 200
    status, answer = await post(client, "/api/embed", {"model": "smollm2-a", "input": "x"})
    assert status == 400 and "smollm2-a" in answer["error"]
    seen = [body for recorder, _ in replicas for body in recorder.bodies()]
    assert sorted(json.dumps(b.get("lora")) for b in seen if b["model"] == "smollm2") == sorted(
        [json.dumps(lora(0)), json.dumps(lora(1))]
    )
    assert [b["model"] for b in seen if b["model"].startswith("qwen")] == ["qwen-poems"]


# --- balancing, counting, demand -------------------------------------------------------------------


async def test_adapter_requests_spread_over_the_bases_replicas_and_count_under_their_names(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    for name in ("smollm2-a", "smollm2-a", "smollm2-b", "smollm2-b") * 2:
        assert (await post(client, CHAT, {"model": name, "messages": SEA}))[0] == 200
    assert [len(recorder.seen) for recorder, _ in replicas] == [4, 4]
    for recorder, _ in replicas:  # each replica got both adapters
        assert {json.dumps(b["lora"]) for b in recorder.bodies()} == {
            json.dumps(lora(0)),
            json.dumps(lora(1)),
        }
    assert (await post(client, CHAT, {"model": "smollm2:smollm2-a", "messages": SEA}))[0] == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'requests_total{api="openai",model="smollm2-a",replica="smollm2-0",status="200"} 3.0' in metrics
    assert 'requests_total{api="openai",model="smollm2-b",replica="smollm2-1",status="200"} 2.0' in metrics
    assert 'tokens_total{api="openai",kind="completion",model="smollm2-a"} 10.0' in metrics
    assert 'model="smollm2:smollm2-a"' not in metrics
    recent = (await (await client.get("/metrics/requests")).json())["models"]
    assert sorted(recent) == ["smollm2-a", "smollm2-b"] and len(recent["smollm2-a"]) == 5
    # Demand is the base model's: a request for an adapter keeps (and wakes) the base.
    figures = client.app[ADMISSION].demand.figures({})
    assert sorted(figures) == ["smollm2"]
    assert client.app[METRICS] is not None


# --- lists ------------------------------------------------------------------------------------------


async def test_lists_show_adapters_with_their_base(
    replicas: list[tuple[Recorder, str]], start_gateway: Any
) -> None:
    client = await start_gateway(table(replicas))
    listed = {m["id"]: m for m in (await (await client.get("/v1/models")).json())["data"]}
    assert listed["smollm2-a"]["parent"] == "smollm2" and listed["qwen-poems"]["parent"] == "qwen"
    assert "parent" not in listed["smollm2"] and "parent" not in listed["smol"]
    one = await (await client.get("/v1/models/smollm2:smollm2-b")).json()
    assert one["id"] == "smollm2:smollm2-b" and one["parent"] == "smollm2"
    tags = {m["name"]: m for m in (await (await client.get("/api/tags")).json())["models"]}
    assert tags["smollm2-b"]["details"]["parent_model"] == "smollm2"
    assert tags["smollm2"]["details"]["parent_model"] == ""
    shown = await (await client.post("/api/show", json={"model": "smollm2-a"})).json()
    assert shown["details"]["parent_model"] == "smollm2"
    status, answer = await post(client, CHAT, {"model": "smollm2-c", "messages": SEA})
    assert status == 404 and "smollm2-a" in answer["error"]["message"]


# --- the engines' runtime adapter endpoints ---------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/lora-adapters", "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/../lora-adapters"]
)
async def test_runtime_adapter_endpoints_are_never_reachable(
    replicas: list[tuple[Recorder, str]], start_gateway: Any, path: str
) -> None:
    client = await start_gateway(table(replicas))
    body = {"model": "smollm2", "lora_name": "x", "lora_path": "/models/x", "id": 0, "scale": 1.0}
    resp = await client.post(path, json=[body] if path.endswith("lora-adapters") else body)
    assert resp.status == 404
    assert (await client.get(path)).status in (404, 405)
    assert all(not recorder.seen for recorder, _ in replicas)


async def test_a_request_for_an_adapter_of_a_cold_model_wakes_the_base(
    replicas: list[tuple[Recorder, str]], aiohttp_client: Any
) -> None:
    reports: list[DemandReport] = []

    async def sink(report: DemandReport) -> None:
        reports.append(report)

    cold = EndpointTable(1, (ModelEndpoints("smollm2", engine="llamacpp", adapters=ADAPTERS),))
    source = StaticTable(cold)
    app = create_app(source, GatewaySettings(table_poll_s=0.01), demand_sink=sink)
    client = await aiohttp_client(app)
    request = asyncio.create_task(client.post(CHAT, json={"model": "smollm2:smollm2-b", "messages": SEA}))
    await eventually(lambda: any(r.models.get("smollm2", ModelDemand()).waiting == 1 for r in reports))
    assert all(set(r.models) <= {"smollm2"} for r in reports)  # never the adapter's name
    source.set(table(replicas))  # the base is ready: the held request goes to it, adapter selected
    assert (await request).status == 200
    [(_, raw)] = [seen for recorder, _ in replicas for seen in recorder.seen]
    assert json.loads(raw)["lora"] == lora(1)
    metrics = await (await client.get("/metrics")).text()
    assert 'cold_starts_total{model="smollm2-b"} 1.0' in metrics
