"""The controller API's boundary, tried as an attacker and as a careless client would.

Examples first (each one failed before the boundary was typed and guarded): the issue's report that
killed the reconcile loop, names that are no model, a flood of reporters, foreign Host and Origin
headers, bodies that are not JSON or too large, and ``POST /v1/plan`` asked about host paths and
variables. Then properties (hypothesis): random and hostile methods, paths, query strings, headers
and bodies on every route never get a 5xx, the demand board stays bounded, and a normal request
still works afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.endpoints.demand import FUTURE_SLACK_S
from controller.errors import ModelctlError
from controller.reconcile.demand import MAX_REPORTERS
from controller.settings import ControllerSettings

from .controller_api_stack import NOW, ControllerApi, controller_api

JSON = {"Content-Type": "application/json"}
ISSUE_BODY = '{"reporter":"x","models":{"smollm2":{"last_active":1e300}}}'


@pytest.fixture(autouse=True)
def hf_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running manifests refer to ${HF_TOKEN}; a variable they do not refer to is also set."""
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    monkeypatch.setenv("SOME_SET_VARIABLE", "a value")
    monkeypatch.delenv("SOME_UNSET_VARIABLE", raising=False)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[ControllerApi, TestClient[Any, Any]]]:
    stack = controller_api(tmp_path)
    client: TestClient[Any, Any] = TestClient(TestServer(stack.app))
    await client.start_server()
    try:
        yield stack, client
    finally:
        await stack.store.close()
        await client.close()


def report(**models: dict[str, Any]) -> dict[str, Any]:
    return {"reporter": "gw-1", "models": models}


# --- POST /v1/demand -------------------------------------------------------------------------------


async def test_the_issues_report_is_refused_and_the_loop_runs_on(api: tuple[ControllerApi, Any]) -> None:
    stack, client = api
    plain = await client.post("/v1/demand", data=ISSUE_BODY, headers={"Content-Type": "text/plain"})
    assert plain.status == 415 and "application/json" in (await plain.json())["error"]
    refused = await client.post("/v1/demand", data=ISSUE_BODY, headers=JSON)
    body = await refused.json()
    assert refused.status == 400 and body["field"] == "models.smollm2.last_active", body
    huge = await client.post("/v1/demand", json=report(smollm2={"in_flight": 10**400}))
    assert huge.status == 400 and (await huge.json())["field"] == "models.smollm2.in_flight"
    for token in ("NaN", "Infinity", "-Infinity", "1e400"):
        text = '{"reporter": "gw-1", "models": {"smollm2": {"last_active": TOKEN}}}'.replace("TOKEN", token)
        assert (await client.post("/v1/demand", data=text, headers=JSON)).status == 400, token
    assert stack.board.current() == {}
    await stack.reconciler.reconcile_once()  # what died of the issue's report: a whole pass
    ok = await client.post("/v1/demand", json=report(smollm2={"waiting": 1, "last_active": NOW}))
    assert ok.status == 204 and stack.board.demand("smollm2").waiting == 1
    await stack.reconciler.reconcile_once()


async def test_last_active_may_be_a_little_ahead_of_the_controller_clock_not_more(
    api: tuple[ControllerApi, Any],
) -> None:
    stack, client = api
    ahead = NOW + FUTURE_SLACK_S - 1
    assert (await client.post("/v1/demand", json=report(smollm2={"last_active": ahead}))).status == 204
    far = await client.post("/v1/demand", json=report(smollm2={"last_active": NOW + 60}))
    assert far.status == 400 and "ahead of the controller's clock" in (await far.json())["error"]
    ancient = await client.post("/v1/demand", json=report(smollm2={"last_active": 1.0}))
    assert ancient.status == 400 and "years ago" in (await ancient.json())["error"]
    assert stack.board.demand("smollm2").last_active == ahead


async def test_names_that_are_no_model_are_ignored_and_counted(api: tuple[ControllerApi, Any]) -> None:
    stack, client = api
    body = report(
        smollm2={"waiting": 1, "last_active": NOW},
        smollm={"in_flight": 2, "last_active": NOW - 1},  # the alias: counted for smollm2
        **{f"junk-{i}": {"in_flight": 1} for i in range(50)},
    )
    assert (await client.post("/v1/demand", json=body)).status == 204
    assert set(stack.board.current()) == {"smollm2"}
    demand = stack.board.demand("smollm2")
    assert (demand.in_flight, demand.waiting, demand.last_active) == (2, 1, NOW)
    metrics = await (await client.get("/metrics")).text()
    assert "modelctl_demand_unknown_models_total 50.0" in metrics


async def test_reporters_are_capped_and_those_reporting_keep_their_place(
    api: tuple[ControllerApi, Any],
) -> None:
    stack, client = api
    for i in range(MAX_REPORTERS):
        posted = await client.post("/v1/demand", json={"reporter": f"r{i}", "models": {}})
        assert posted.status == 204
    extra = await client.post("/v1/demand", json={"reporter": "one-too-many", "models": {}})
    assert extra.status == 429 and "Retry-After" in extra.headers
    again = await client.post("/v1/demand", json={"reporter": "r0", "models": {"smollm2": {"in_flight": 1}}})
    assert again.status == 204 and stack.board.demand("smollm2").in_flight == 1
    assert stack.board.reporters == MAX_REPORTERS
    stack.clock[0] += stack.board.stale_after_s + 1  # they all went silent: forgotten
    later = await client.post("/v1/demand", json={"reporter": "newcomer", "models": {}})
    assert later.status == 204 and stack.board.reporters == 1


# --- what any route accepts: Host, Origin, Content-Type, size --------------------------------------


async def test_host_names_it_does_not_serve_get_421(tmp_path: Path) -> None:
    stack = controller_api(tmp_path, hosts=("0.0.0.0", "api.internal"))
    async with TestClient(TestServer(stack.app)) as client:
        for host in ("evil.example", "evil.example:8081", "127.0.0.1.nip.io", "controller.evil.example"):
            refused = await client.get("/v1/status", headers={"Host": host})
            assert refused.status == 421, host
            assert "MODELCTL_API_ALLOWED_HOSTS" in (await refused.json())["error"]
        served = (
            "localhost", "LOCALHOST:8081", "localhost.", "console.localhost:8081", "127.0.0.1:8081",
            "[::1]:8081", "10.1.2.3", "controller:8081", "api.internal", "API.Internal:443",
        )  # fmt: skip
        for host in served:
            assert (await client.get("/v1/status", headers={"Host": host})).status == 200, host
        page = await client.post(
            "/v1/demand", json={"reporter": "r", "models": {}}, headers={"Host": "evil.example"}
        )
        assert page.status == 421 and stack.board.reporters == 0
        await stack.store.close()


async def test_cross_site_posts_are_refused_same_origin_ones_pass(api: tuple[ControllerApi, Any]) -> None:
    stack, client = api
    host = f"127.0.0.1:{client.port}"
    body = json.dumps({"reporter": "r", "models": {}})
    for origin in ("http://evil.example", "null", f"https://{host}", "http://127.0.0.1:1"):
        refused = await client.post("/v1/demand", data=body, headers={**JSON, "Origin": origin})
        assert refused.status == 403 and "cross-origin" in (await refused.json())["error"], origin
    assert stack.board.reporters == 0
    same = await client.post("/v1/demand", data=body, headers={**JSON, "Origin": f"http://{host}"})
    assert same.status == 204
    read = await client.get("/v1/status", headers={"Origin": "http://evil.example"})
    assert read.status == 200  # a page cannot read the answer (no CORS), and GET changes nothing


async def test_bodies_are_json_only_and_at_most_a_mebibyte(api: tuple[ControllerApi, Any]) -> None:
    _, client = api
    body = json.dumps({"reporter": "r", "models": {}})
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        refused = await client.post("/v1/demand", data=body, headers={"Content-Type": kind})
        assert refused.status == 415, kind
    charset = {"Content-Type": "application/json; charset=utf-8"}
    utf8 = await client.post("/v1/demand", data=body, headers=charset)
    assert utf8.status == 204
    big = json.dumps({"files": {"a.yaml": "#" * (1024 * 1024)}})
    too_big = await client.post("/v1/plan", data=big, headers=JSON)
    assert too_big.status == 413 and "larger than" in (await too_big.json())["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: found out while reading
        for _ in range(20):
            yield b" " * 65536
        yield body.encode()

    chunked = await client.post("/v1/demand", data=chunks(), headers=JSON)
    assert chunked.status == 413 and "larger than" in (await chunked.json())["error"]
    metrics = await (await client.get("/metrics")).text()
    assert 'modelctl_api_refused_total{status="413"} 2.0' in metrics


async def test_metrics_can_want_a_key(tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text("console: sk-console-1\n")
    keys = tmp_path / "keys.yaml"
    for required, keyless in ((True, 401), (False, 200)):
        stack = controller_api(tmp_path / str(required), keys_file=keys, metrics_require_key=required)
        async with TestClient(TestServer(stack.app)) as client:
            assert (await client.get("/metrics")).status == keyless
            keyed = await client.get("/metrics", headers={"Authorization": "Bearer sk-console-1"})
            assert keyed.status == 200 and "modelctl_api_refused_total" in await keyed.text()
            assert (await client.get("/healthz")).status == 200
        await stack.store.close()


def test_the_new_settings_come_from_the_environment_and_are_checked(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    settings = ControllerSettings.from_env(
        {
            "MODELCTL_API_ALLOWED_HOSTS": " api.internal, Modelctl.Example ,,",
            "MODELCTL_METRICS_REQUIRE_KEY": "true",
            "MODELCTL_CONTROLLER_KEYS_FILE": str(keys),
        }
    )
    assert settings.api_allowed_hosts == ("api.internal", "modelctl.example")
    assert settings.metrics_require_key
    with pytest.raises(ModelctlError, match="needs keys"):
        ControllerSettings.from_env({"MODELCTL_METRICS_REQUIRE_KEY": "yes"})
    with pytest.raises(ModelctlError, match="give true or false"):
        ControllerSettings.from_env({"MODELCTL_METRICS_REQUIRE_KEY": "maybe"})
    with pytest.raises(ModelctlError, match="host names"):
        ControllerSettings.from_env({"MODELCTL_API_ALLOWED_HOSTS": "http://api.internal/"})


# --- POST /v1/plan ---------------------------------------------------------------------------------


def manifest(model: str, env: str = "") -> dict[str, Any]:
    text = f"name: probe\nmodel: {model}\ngpu_memory: 1GiB\n" + (f"env: {{X: '{env}'}}\n" if env else "")
    return {"files": {"probe.yaml": text}}


async def plan(client: TestClient[Any, Any], body: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post("/v1/plan", json=body)
    return resp.status, await resp.json()


async def test_plan_does_not_tell_whether_a_host_path_exists(api: tuple[ControllerApi, Any]) -> None:
    stack, client = api
    (stack.root / "inside.gguf").write_bytes(b"not really")
    assert Path("/etc/passwd").exists() and not Path("/etc/no-such-file-here").exists()
    for existing, missing in (
        ("/etc/passwd", "/etc/no-such-file-here"),
        ("../../../../../../etc/passwd", "../../../../../../etc/no-such-file-here"),
        (f"{stack.root}/../../../../etc/passwd", f"{stack.root}/../../../../etc/no-such-file-here"),
    ):
        there, absent = await plan(client, manifest(existing)), await plan(client, manifest(missing))
        assert there == absent, (there, absent)
        assert there[0] == 422 and "under the model roots" in there[1]["errors"][0]
    link = stack.root / "link.gguf"
    link.symlink_to("/etc/passwd")  # a link under a root pointing out: its target is not named
    status, body = await plan(client, manifest("link.gguf"))
    assert status == 422 and "under the model roots" in body["errors"][0]
    assert "/etc/passwd" not in json.dumps(body)


async def test_plan_does_not_tell_whether_a_variable_is_set(api: tuple[ControllerApi, Any]) -> None:
    _, client = api
    hub = "hf://org/probe:Q4"
    set_one = await plan(client, manifest(hub, "${SOME_SET_VARIABLE}"))
    unset = await plan(client, manifest(hub, "${SOME_UNSET_VARIABLE}"))
    assert set_one[0] == unset[0] == 422
    as_set = json.dumps(set_one).replace("SOME_SET_VARIABLE", "V")
    assert as_set == json.dumps(unset).replace("SOME_UNSET_VARIABLE", "V")
    assert "own manifests refer to" in set_one[1]["errors"][0]
    for name in ("MODELCTL_CONTROLLER_KEYS_FILE", "PATH"):
        assert (await plan(client, manifest(hub, f"${{{name}}}")))[0] == 422, name
    used = await plan(client, manifest(hub, "${HF_TOKEN}"))  # the running manifests refer to it
    assert used[0] == 200 and "hf-secret" not in json.dumps(used)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"files": {"a\x00.yaml": "x: 1"}}, "files.a\x00.yaml.[key]", id="NUL in a name"),
        pytest.param({"files": {"x" * 300 + ".yaml": ""}}, None, id="a name part too long"),
        pytest.param({"files": {"a.yaml": 3}}, "files.a.yaml", id="text not a string"),
        pytest.param({"files": {f"{i}.yaml": "" for i in range(1001)}}, "files", id="too many files"),
        pytest.param({"files": {}, "extra": 1}, "extra", id="a field it does not know"),
        pytest.param({"files": []}, "files", id="files not an object"),
        pytest.param({"nothing": 1}, "files", id="no files"),
        pytest.param([{"files": {}}], "(body)", id="not an object"),
    ],
)
async def test_plan_bodies_are_typed(api: tuple[ControllerApi, Any], body: Any, field: str | None) -> None:
    _, client = api
    status, answer = await plan(client, body)
    assert status == 400, answer
    assert field is None or answer["field"] == field, answer
    assert '{"files"' in answer["error"]


async def test_plan_of_a_yaml_bomb_is_the_callers_error(api: tuple[ControllerApi, Any]) -> None:
    _, client = api
    deep = "a: " + "[" * 5000 + "]" * 5000 + "\n"
    status, answer = await plan(client, {"files": {"deep.yaml": deep}})
    assert status in (400, 422) and answer.get("errors"), answer
    assert re.search(r"deep\.yaml|could not be loaded", json.dumps(answer)), answer
