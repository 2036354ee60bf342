"""The official ``anthropic`` client against the gateway over fake replicas: answers pass through,
the gateway's own errors come in Anthropic's shape, so the client raises the class for the status.

401 AuthenticationError (no key, wrong key; ``x-api-key`` as the client sends it), 404
NotFoundError (unknown model), 429 RateLimitError (the model's queue: at capacity), 503
ServiceUnavailableError (no ready replica), 400 BadRequestError (a body that is not JSON).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import pytest
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, StartUpstream, eventually, table_of
from prometheus_client.parser import text_string_to_metric_families

from controller.gateway.app import BALANCER

KEY = "sk-right"
ASK: dict[str, Any] = {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def client_for(gateway: TestClient[Any, Any], key: str = KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(gateway.make_url("")), api_key=key, max_retries=0, timeout=10
    )


async def scrape(gateway: TestClient[Any, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await gateway.get("/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_messages_pass_through_streamed_and_not_with_usage_counted(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", ("m-alias",), [url])), api_keys=(KEY,))
    async with client_for(gateway) as client:
        message = await client.messages.create(model="m-alias", **ASK)
        assert message.content[0].text == "hello from a"  # type: ignore[union-attr]
        async with client.messages.stream(model="m", **ASK) as stream:
            text = "".join([piece async for piece in stream.text_stream])
        assert text == "hello from a"
    assert [seen.path for seen in fake.requests] == ["/v1/messages", "/v1/messages"]
    # The key reached the gateway as x-api-key and never the replica.
    assert not any("x-api-key" in {k.lower() for k in seen.headers} for seen in fake.requests)
    await eventually(lambda: gateway.app[BALANCER].in_flight("m-0") == 0)
    samples = await scrape(gateway)
    requests = "modelctl_gateway_requests_total"
    labels = (("api", "anthropic"), ("model", "m"), ("replica", "m-0"), ("status", "200"))
    assert samples[(requests, labels)] == 2
    tokens = "modelctl_gateway_tokens_total"
    # Not streamed: 7 in, 3 out; streamed: 2 + 5 cached in (message_start), 3 out (message_delta).
    assert samples[(tokens, (("api", "anthropic"), ("kind", "prompt"), ("model", "m")))] == 7 + 7
    assert samples[(tokens, (("api", "anthropic"), ("kind", "completion"), ("model", "m")))] == 3 + 3


async def test_a_stream_without_message_start_is_mended_for_the_client(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.skip_message_start = True  # llama-server, when the first token ends inside a character
    gateway = await start_gateway(table_of(("m", ("m-alias",), [url])), api_keys=(KEY,))
    async with client_for(gateway) as client, client.messages.stream(model="m-alias", **ASK) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()  # the SDK asserts on a stream without message_start
    assert text == "hello from a" and final.model == "m" and final.usage.output_tokens == 3
    async with client_for(gateway) as client:
        fake.skip_message_start = False
        async with client.messages.stream(model="m", **ASK) as stream:
            final = await stream.get_final_message()
    assert final.id == "msg_1", "a stream that starts right passes untouched"


async def test_bearer_auth_token_is_accepted_too(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys=(KEY,))
    base = str(gateway.make_url(""))
    async with anthropic.AsyncAnthropic(base_url=base, auth_token=KEY, max_retries=0) as client:
        message = await client.messages.create(model="m", **ASK)
    assert message.usage.input_tokens == 7


@pytest.mark.parametrize("key", ["sk-wrong", None])
async def test_a_bad_or_missing_key_is_authentication_error(
    start_gateway: StartGateway, start_upstream: StartUpstream, key: str | None
) -> None:
    _, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys=(KEY,))
    if key is None:  # the client insists on a key: send none by hand
        resp = await gateway.post("/v1/messages", json={"model": "m", **ASK})
        assert resp.status == 401
        document = await resp.json()
        assert document["type"] == "error" and document["error"]["type"] == "authentication_error"
        return
    async with client_for(gateway, key) as client:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await client.messages.create(model="m", **ASK)
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


async def test_an_unknown_model_is_not_found_error(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])))
    async with client_for(gateway) as client:
        with pytest.raises(anthropic.NotFoundError) as raised:
            await client.messages.create(model="nope", **ASK)
    error = raised.value.body["error"]  # type: ignore[index]
    assert error["type"] == "not_found_error" and "'nope' does not exist" in error["message"]


async def test_a_model_at_capacity_is_rate_limit_error_with_retry_after(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.hold = asyncio.Event()
    gateway = await start_gateway(table_of(("m", (), [url]), max_concurrency=1), queue_timeout_s=0.05)
    async with client_for(gateway) as client:
        first = asyncio.create_task(client.messages.create(model="m", **ASK))
        await eventually(lambda: fake.active == 1)
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(model="m", **ASK)
        fake.hold.set()
        await first
    assert raised.value.response.headers["Retry-After"] == "1"
    assert raised.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_no_ready_replica_is_service_unavailable(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(table_of(("m", (), [])), cold_start_wait_s=0.05)
    async with client_for(gateway) as client:
        with pytest.raises(anthropic.ServiceUnavailableError) as raised:
            await client.messages.create(model="m", **ASK)
    assert raised.value.response.headers["Retry-After"] == "5"
    assert raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_a_body_that_is_not_json_is_invalid_request_error(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(table_of(("m", (), ["http://127.0.0.1:9"])))
    resp = await gateway.post("/v1/messages", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    document = json.loads(await resp.read())
    assert document["type"] == "error" and document["error"]["type"] == "invalid_request_error"


async def test_the_engines_own_errors_pass_through(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a", status=400)  # 400 is no reason to try another replica
    gateway = await start_gateway(table_of(("m", (), [url])))
    resp = await gateway.post("/v1/messages", json={"model": "m", **ASK})
    assert resp.status == 400
    assert (await resp.json()) == {"error": {"code": 400, "message": "Loading model"}}
    assert resp.headers["X-Modelctl-Replica"] == "m-0"


async def test_a_replica_failing_mid_stream_ends_it_with_an_error_event_the_client_raises(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.break_after_first = True
    gateway = await start_gateway(table_of(("m", (), [url])))
    async with client_for(gateway) as client:
        with pytest.raises(anthropic.APIStatusError) as raised:
            async with client.messages.stream(model="m", **ASK) as stream:
                async for _ in stream.text_stream:
                    pass
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "The model server failed mid-stream."},
    }


async def test_a_held_stream_refused_later_gets_anthropics_error_event(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(table_of(("m", (), [])), cold_start_wait_s=0.2)
    async with client_for(gateway) as client:
        with pytest.raises(anthropic.APIStatusError) as raised:
            async with client.messages.stream(model="m", **ASK) as stream:
                async for _ in stream.text_stream:
                    pass
    assert raised.value.response.status_code == 200  # the loading comments had started the answer
    error = raised.value.body["error"]  # type: ignore[index]
    assert error["type"] == "overloaded_error" and "is loading" in error["message"]
