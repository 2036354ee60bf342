"""Optional API keys: open by default, bearer tokens checked on /v1/*, probes and metrics open."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gateway_fakes import StartGateway, StartUpstream, table_of

from controller.gateway import GatewaySettings
from controller.gateway.auth import KeyCheck
from controller.gateway.serving.server import access_line

CHAT = "/v1/chat/completions"
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
KEYS = ("sk-one", "sk-two")


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        pytest.param("Bearer sk-one", True, id="first key"),
        pytest.param("Bearer sk-two", True, id="second key"),
        pytest.param("bearer  sk-two", True, id="scheme case and spacing"),
        pytest.param("Bearer sk-on", False, id="prefix of a key"),
        pytest.param("Bearer sk-one2", False, id="key plus more"),
        pytest.param("Basic sk-one", False, id="other scheme"),
        pytest.param("Bearer", False, id="no token"),
        pytest.param("Bearer ключ", False, id="not ASCII"),
        pytest.param(None, False, id="no header"),
    ],
)
def test_key_check(header: str | None, accepted: bool) -> None:
    assert KeyCheck(KEYS).accepts(header) is accepted


async def test_keys_guard_v1_but_not_probes_or_metrics(
    start_gateway: StartGateway, start_upstream: StartUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])), api_keys=KEYS)
    for headers, message in [
        ({}, "didn't provide an API key"),
        ({"Authorization": "Bearer nope"}, "Incorrect"),
    ]:
        for method, path in [("POST", CHAT), ("GET", "/v1/models"), ("POST", "/v1/anything")]:
            resp = await client.request(method, path, json=ASK, headers=headers)
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            error = (await resp.json())["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
            assert message in error["message"]
    assert not fake.requests
    for path in ("/healthz", "/health", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200
    resp = await client.post(CHAT, json=ASK, headers={"Authorization": "Bearer sk-two"})
    assert resp.status == 200
    assert "authorization" not in {k.lower() for k in fake.requests[0].headers}
    assert not any(k in r.getMessage() for r in caplog.records for k in ("sk-one", "sk-two", "nope"))


async def test_no_keys_means_open(start_gateway: StartGateway, start_upstream: StartUpstream) -> None:
    _, url = await start_upstream("a")
    client = await start_gateway(table_of(("m", (), [url])))
    assert (await client.post(CHAT, json=ASK)).status == 200


def test_the_start_up_line_says_open_or_how_many_keys_never_which() -> None:
    assert "open" in access_line(GatewaySettings())
    line = access_line(GatewaySettings(api_keys=KEYS))
    assert "2 configured" in line and "sk-" not in line
    assert "sk-" not in repr(GatewaySettings(api_keys=KEYS))


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nsk-file-1\n\n  sk-file-2  \nsk-env\n")
    env = {"MODELCTL_API_KEYS": "sk-env, sk-env-2,", "MODELCTL_API_KEYS_FILE": str(keys_file)}
    settings = GatewaySettings.from_env(env)
    assert settings.api_keys == ("sk-env", "sk-env-2"), "the file's keys stay the file's: it is followed"
    assert settings.api_keys_file == keys_file
    check = KeyCheck.from_settings(settings)
    assert all(check.match(k) is not None for k in ("sk-env", "sk-env-2", "sk-file-1", "sk-file-2"))
    assert "4 configured (3 in" in access_line(settings)
