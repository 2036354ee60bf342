"""API keys with names: the keys file's two formats, usage per name, per-key limits, edits picked up.

Two named keys; one over its limit gets 429 with Retry-After in each API's shape (OpenAI's clients
RateLimitError, Anthropic's RateLimitError, Ollama's ``{"error": ...}``) while the other is served;
the metrics count both by name, never by key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient
from gateway_fakes import StartGateway, StartUpstream, table_of
from prometheus_client.parser import text_string_to_metric_families

from controller.gateway.auth import KeyCheck, access_line
from controller.gateway.settings import GatewaySettings, KeySpec, SettingsError, key_name, read_key_specs

CHAT = "/v1/chat/completions"
SECRET = b"the gateway's own secret"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
NAMED = """
# the team
alice: sk-alice-0123
bob:
  key: sk-bob-4567
  requests_per_minute: 2
carol: {key: sk-carol-89, tokens_per_minute: 5}
"""


def keys_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys"
    path.write_text(text)
    return path


def test_named_keys_with_limits(tmp_path: Path) -> None:
    assert read_key_specs(keys_file(tmp_path, NAMED), secret=SECRET) == [
        KeySpec("alice", "sk-alice-0123"),
        KeySpec("bob", "sk-bob-4567", requests_per_minute=2),
        KeySpec("carol", "sk-carol-89", tokens_per_minute=5),
    ]
    assert "sk-" not in repr(read_key_specs(keys_file(tmp_path, NAMED), secret=SECRET))


def test_the_plain_file_still_works_named_by_fingerprint(tmp_path: Path) -> None:
    specs = read_key_specs(keys_file(tmp_path, "# keys\nsk-one\n\n  *sk-two  \nsk-one\n"), secret=SECRET)
    assert specs == [
        KeySpec(key_name("sk-one", SECRET), "sk-one"),
        KeySpec(key_name("*sk-two", SECRET), "*sk-two"),
    ]
    assert key_name("sk-one", SECRET).startswith("key-") and "sk-one" not in key_name("sk-one", SECRET)


def test_a_fingerprint_is_keyed_not_a_bare_hash_of_the_key() -> None:
    bare = "key-" + hashlib.sha256(b"sk-one").hexdigest()[:8]
    assert key_name("sk-one", SECRET) != bare, "anyone could test guessed keys against a bare hash"
    assert key_name("sk-one", SECRET) != key_name("sk-one", b"another secret")
    one, other = GatewaySettings(api_keys=("sk-one",)), GatewaySettings(api_keys=("sk-one",))
    assert KeyCheck.from_settings(one).names() != KeyCheck.from_settings(other).names()
    worker = dataclasses.replace(one, workers_dir=Path("/tmp"))  # what a worker process gets
    assert KeyCheck.from_settings(worker).names() == KeyCheck.from_settings(one).names()
    assert one.key_secret.hex() not in repr(one)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("alice: {key: sk-a, requests_per_minit: 5}\n", "unknown field 'requests_per_minit'"),
        ("alice: {key: sk-a, tokens_per_minute: 0}\n", "tokens_per_minute must be a whole number >= 1"),
        ("alice: {key: sk-a, tokens_per_minute: 1.5}\n", "tokens_per_minute must be a whole number >= 1"),
        ("alice: sk-a\nbob: sk-a\n", "bob has the same key as alice"),
        ("al ice!: sk-a\n", "key name 'al ice!'"),
        ("alice: {requests_per_minute: 5}\n", "alice: give a key"),
        ("alice: sk a\n", "alice: a key must be non-empty ASCII without spaces"),
        ("alice: sk-a\n  bob: [\n", "not a YAML mapping of names to keys at line"),
    ],
)
def test_a_bad_keys_file_is_rejected_naming_the_name_never_the_key(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(SettingsError, match="MODELCTL_API_KEYS_FILE") as raised:
        read_key_specs(keys_file(tmp_path, text), secret=SECRET)
    assert says in str(raised.value)
    assert "sk-a" not in str(raised.value) and "sk a" not in str(raised.value)


def test_from_env_keeps_the_file_to_follow(tmp_path: Path) -> None:
    path = keys_file(tmp_path, NAMED)
    settings = GatewaySettings.from_env({"MODELCTL_API_KEYS_FILE": str(path)})
    assert settings.api_keys_file == path
    assert settings.api_keys == ()
    assert "3 configured (3 in" in access_line(settings)


def test_an_edit_is_picked_up_and_a_broken_edit_refuses_the_files_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = keys_file(tmp_path, "alice: sk-alice\n")
    now = [100.0]
    check = KeyCheck(["sk-env"], keys_file=path, clock=lambda: now[0], secret=SECRET)
    assert check.names() == [key_name("sk-env", SECRET), "alice"]
    path.write_text("bob: sk-bob\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    check.refresh(100.5)  # looked at once a second at most
    assert check.match("sk-alice") is not None
    check.refresh(101.5)
    assert check.match("sk-alice") is None, "a key taken out of the file is revoked"
    assert check.match("sk-bob") is not None and check.match("sk-env") is not None
    path.write_text("bob: {key: sk-bob, oops: 1}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    with caplog.at_level(logging.INFO):
        check.refresh(103.0)
    assert check.match("sk-bob") is None, "a broken file fails closed: bob may have been revoked in it"
    assert check.match("sk-env") is not None, "a key from MODELCTL_API_KEYS is not the file's"
    assert "API keys file unusable" in caplog.text and "sk-bob" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        check.refresh(104.5)
    assert "API keys file unusable" in caplog.text, "said at every look that finds it broken"
    path.write_text("bob: sk-bob\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
    check.refresh(106.0)
    assert check.match("sk-bob") is not None, "readable again: its keys are back"


def test_a_keys_file_that_disappears_leaves_none_of_its_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = keys_file(tmp_path, "alice: sk-alice\n")
    check = KeyCheck(keys_file=path, clock=lambda: 100.0)
    assert check.match("sk-alice") is not None
    path.unlink()
    with caplog.at_level(logging.WARNING):
        check.refresh(101.5)
        check.refresh(102.6)
    assert check.match("sk-alice") is None, "a revoked key must stop working"
    assert caplog.text.count("API keys file unusable") == 2
    assert check, "still keyed: nobody gets in"


def test_the_start_up_line_says_the_truth_about_an_empty_or_broken_file(tmp_path: Path) -> None:
    empty = GatewaySettings(api_keys_file=keys_file(tmp_path, "# nobody yet\n"))
    line = access_line(empty)
    assert "none yet" in line and "refused" in line and "open" not in line
    broken = GatewaySettings(api_keys_file=keys_file(tmp_path, "alice: {key: sk-a, oops: 1}\n"))
    assert "refused" in access_line(broken) and "unknown field" in access_line(broken)
    assert "sk-a" not in access_line(broken)


async def test_a_keys_max_concurrent_requests_holds_streams_included(
    tmp_path: Path, start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    fake, url = await start_upstream("a")
    fake.gate = asyncio.Event()  # streams wait after their first chunk
    path = keys_file(tmp_path, "alice: {key: sk-alice, max_concurrent_requests: 2}\nbob: sk-bob\n")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=path)
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"x-api-key": "sk-bob"}
    stream = {**ASK, "stream": True}
    held = [await gateway.post(CHAT, json=stream, headers=alice) for _ in range(2)]
    assert [r.status for r in held] == [200, 200]
    refused = await gateway.post(CHAT, json=ASK, headers=alice)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["code"] == "key_concurrency_limited"
    messages = await gateway.post("/v1/messages", json={**ASK, "max_tokens": 5}, headers=alice)
    assert messages.status == 429 and (await messages.json())["type"] == "error", "Anthropic's shape"
    assert (await gateway.post(CHAT, json=ASK, headers=bob)).status == 200, "another key is not held"
    fake.gate.set()
    for resp in held:
        assert (await resp.read()).endswith(b"data: [DONE]\n\n")
    assert (await gateway.post(CHAT, json=ASK, headers=alice)).status == 200, "their ends freed it"


async def test_metrics_can_require_a_key_outside_its_limits(
    tmp_path: Path, start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    path = keys_file(tmp_path, "scraper: {key: sk-scrape, requests_per_minute: 1}\n")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=path, metrics_require_key=True)
    for where in ("/metrics", "/metrics/requests"):
        assert (await gateway.get(where)).status == 401
        for _ in range(2):  # over its request limit: a scrape is not a request to a model
            assert (await gateway.get(where, headers={"Authorization": "Bearer sk-scrape"})).status == 200
    assert (await gateway.get("/healthz")).status == 200 and (await gateway.get("/readyz")).status == 200
    open_gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=path)
    assert (await open_gateway.get("/metrics")).status == 200, "open unless asked"


def test_metrics_require_key_wants_keys_and_reads_its_flag() -> None:
    with pytest.raises(SettingsError, match="metrics_require_key needs API keys"):
        GatewaySettings(metrics_require_key=True)
    env = {"MODELCTL_API_KEYS": "sk-a", "MODELCTL_GATEWAY_METRICS_REQUIRE_KEY": "false"}
    assert not GatewaySettings.from_env(env).metrics_require_key
    assert GatewaySettings.from_env(
        {**env, "MODELCTL_GATEWAY_METRICS_REQUIRE_KEY": "true"}
    ).metrics_require_key
    with pytest.raises(SettingsError, match="MODELCTL_GATEWAY_METRICS_REQUIRE_KEY"):
        GatewaySettings.from_env({**env, "MODELCTL_GATEWAY_METRICS_REQUIRE_KEY": "maybe"})


def test_with_a_keys_file_the_gateway_is_never_open(tmp_path: Path) -> None:
    assert KeyCheck(keys_file=keys_file(tmp_path, "# nobody yet\n"))
    assert not KeyCheck()


async def scrape(gateway: TestClient[Any, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await gateway.get("/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


async def test_one_key_over_its_request_limit_gets_429_in_each_apis_shape_the_other_is_served(
    tmp_path: Path, start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    path = keys_file(tmp_path, NAMED)
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=path)
    base = str(gateway.make_url(""))
    bob = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-bob-4567", max_retries=0)
    alice = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-alice-0123", max_retries=0)
    async with bob, alice:
        for _ in range(2):
            await bob.chat.completions.create(**ASK)  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError) as raised:
            await bob.chat.completions.create(**ASK)  # type: ignore[call-overload]
        assert 1 <= int(raised.value.response.headers["Retry-After"]) <= 60
        assert raised.value.code == "key_rate_limited" and "'bob'" in raised.value.message
        for _ in range(3):
            await alice.chat.completions.create(**ASK)  # type: ignore[call-overload]
    async with anthropic.AsyncAnthropic(base_url=base, api_key="sk-bob-4567", max_retries=0) as claude:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await claude.messages.create(
                model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "Retry-After" in limited.value.response.headers
    resp = await gateway.post(
        "/api/chat", json={"model": "m"}, headers={"Authorization": "Bearer sk-bob-4567"}
    )
    assert resp.status == 429 and "Retry-After" in resp.headers
    document = await resp.json()
    assert set(document) == {"error"} and "over its limit" in document["error"]
    samples = await scrape(gateway)
    requests = "modelctl_gateway_key_requests_total"
    assert samples[(requests, labels(key="bob", status="200"))] == 2
    assert samples[(requests, labels(key="bob", status="429"))] == 3
    assert samples[(requests, labels(key="alice", status="200"))] == 3
    tokens = "modelctl_gateway_key_tokens_total"
    assert samples[(tokens, labels(key="alice", kind="prompt"))] == 3 * 5
    assert samples[(tokens, labels(key="alice", kind="completion"))] == 3 * 4
    text = await (await gateway.get("/metrics")).text()
    assert "sk-" not in text


async def test_a_key_over_its_token_limit_waits_for_the_minute(
    tmp_path: Path, start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=keys_file(tmp_path, NAMED))
    carol = {"Authorization": "Bearer sk-carol-89"}
    assert (await gateway.post(CHAT, json=ASK, headers=carol)).status == 200  # 5 + 4 tokens: over 5 now
    resp = await gateway.post(CHAT, json=ASK, headers=carol)
    assert resp.status == 429
    assert 55 <= int(resp.headers["Retry-After"]) <= 60
    assert (await resp.json())["error"]["type"] == "rate_limit_error"
    alice = {"Authorization": "Bearer sk-alice-0123"}
    assert (await gateway.post(CHAT, json=ASK, headers=alice)).status == 200


async def test_a_key_added_to_the_file_works_without_a_restart(
    tmp_path: Path, start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    _, url = await start_upstream("a")
    path = keys_file(tmp_path, "alice: sk-alice\n")
    gateway = await start_gateway(table_of(("m", (), [url])), api_keys_file=path)
    dave = {"Authorization": "Bearer sk-dave"}
    assert (await gateway.post(CHAT, json=ASK, headers=dave)).status == 401
    path.write_text("alice: sk-alice\ndave: sk-dave\n")
    deadline = time.monotonic() + 5
    while (await gateway.post(CHAT, json=ASK, headers=dave)).status != 200:
        assert time.monotonic() < deadline, "the new key was not picked up"
    resp = await gateway.post(CHAT, json=ASK, headers={"x-api-key": "sk-alice"})
    assert resp.status == 200
