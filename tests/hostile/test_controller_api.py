"""The controller API's boundary, tried as an attacker and as a careless client would.

Examples first (each one failed before the boundary was typed and guarded): the issue's report that
killed the reconcile loop, names that are no model, a flood of reporters, foreign Host and Origin
headers, bodies that are not JSON or too large, and ``POST /v1/plan`` asked about host paths and
variables. Then properties (hypothesis): random and hostile methods, paths, query strings, headers
and bodies on every route never get a 5xx, the demand board stays bounded, and a normal request
still works afterwards.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("engine", "field"),
    [("llamacpp", "mmproj"), ("llamacpp", "draft"), ("llamacpp", "adapters"), ("vllm", "adapters")],
)
async def test_plan_does_not_tell_whether_a_file_beside_the_weights_exists(
    api: tuple[ControllerApi, Any], engine: str, field: str
) -> None:
    """The files beside the weights are host paths too: the same answer whether they exist or not,
    and a link under a root pointing out is not followed in the answer."""
    stack, client = api
    (stack.root / "inside.gguf").write_bytes(b"not really")
    (stack.root / "inside").mkdir(exist_ok=True)
    suffix = ".gguf" if engine == "llamacpp" else ""
    out = stack.root.parent / f"outside{suffix}"  # beside the model root, not under it
    if suffix:
        out.write_bytes(b"GGUF")
    else:
        out.mkdir(exist_ok=True)

    def posted(path: str) -> dict[str, Any]:
        value = f"[{{name: probe-a, path: '{path}'}}]" if field == "adapters" else f"'{path}'"
        text = f"name: probe\nmodel: inside{suffix}\nengine: {engine}\ngpu_memory: 1GiB\n{field}: {value}\n"
        return {"files": {"probe.yaml": text}}

    for existing, missing in (
        (str(out), f"{out}-not-here{suffix}"),
        (f"../{out.name}", f"../no-such{suffix}"),
    ):
        there, absent = await plan(client, posted(existing)), await plan(client, posted(missing))
        assert there == absent, (there, absent)
        assert there[0] == 422 and "under the model roots" in there[1]["errors"][0]
    link = stack.root / f"link{suffix}"
    link.symlink_to(out)
    status, body = await plan(client, posted(link.name))
    assert status == 422 and "under the model roots" in body["errors"][0], body
    assert str(out) not in json.dumps(body)


async def test_plan_does_not_tell_whether_a_variable_is_set(api: tuple[ControllerApi, Any]) -> None:
    _, client = api
    hub = "hf://org/probe:Q4"
    set_one = await plan(client, manifest(hub, "${SOME_SET_VARIABLE}"))
    unset = await plan(client, manifest(hub, "${SOME_UNSET_VARIABLE}"))
    assert set_one[0] == unset[0] == 422
    as_set = json.dumps(set_one).replace("SOME_SET_VARIABLE", "V")
    assert as_set == json.dumps(unset).replace("SOME_UNSET_VARIABLE", "V")
    assert "which manifests may not use" in set_one[1]["errors"][0]  # manifests.envrefs allowlist
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


# --- properties: whatever comes, no 5xx, the board bounded, a normal request still served ----------

# One event loop and one API for all the examples of a property: what the examples leave behind
# (reporters, counters) is part of what is tested.


class Harness:
    """A controller API on a loop of its own, driven from hypothesis' (synchronous) examples."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.stack = controller_api(tmp)
        self.client: TestClient[Any, Any] = TestClient(TestServer(self.stack.app), loop=self.loop)
        self.run(self.client.start_server())
        self.run(self.stack.store.publish(()))
        self.run(self.stack.store.publish(()))  # ...and a version other than 1
        self.version = self.stack.store.current().version
        assert self.normal() == 204  # the normal reporter holds its place before the flood

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    def request(self, method: str, path: str, **options: Any) -> int:
        async def send() -> int:
            try:
                async with self.client.request(method, path, allow_redirects=False, **options) as resp:
                    await resp.read()
                    return resp.status
            except aiohttp.ClientResponseError as exc:  # aiohttp's own 400 to a HEAD with a huge line
                return exc.status

        return int(self.run(send()))

    def normal(self) -> int:
        body = {"reporter": "gw-normal", "models": {"smollm2": {"in_flight": 1, "last_active": NOW}}}
        return self.request("POST", "/v1/demand", json=body)

    def check_after(self, status: int) -> None:
        event(f"status {status}")  # the spread of answers, in --hypothesis-show-statistics
        assert status < 500, status
        board = self.stack.board
        assert board.reporters <= MAX_REPORTERS
        assert set(board.current()) <= {"smollm2"}  # only a model it knows, whatever was sent
        assert self.normal() == 204
        assert self.request("GET", "/v1/status") == 200

    def close(self) -> None:
        self.run(self.stack.store.close())
        self.run(self.client.close())
        self.run(self.stack.reconciler.reconcile_once())  # and a whole pass still runs
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


HUGE = st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 1e308, -1e308, 5e-324])
FLOATS = st.floats(allow_nan=True, allow_infinity=True)  # NaN/Infinity as JSON tokens (json.dumps)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), HUGE, FLOATS, st.text(max_size=40))
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=30,
)
# Near-valid first (so the examples reach the checks behind the parsing), junk as an alternative.
NAMES = st.one_of(st.sampled_from(["smollm2", "smollm", "SMOLLM2", ""]), st.text(max_size=300))
COUNTS = st.one_of(st.integers(0, 10**6), st.integers(-5, 2 * 10**6), JUNK)
FIGURES = st.fixed_dictionaries(
    {},
    optional={
        "in_flight": COUNTS,
        "waiting": COUNTS,
        "last_active": st.one_of(st.floats(NOW - 1e9, NOW + 1e3), st.just(NOW), st.just(0), JUNK),
        "keep_alive_s": st.one_of(st.floats(-3, 1e10), st.just(-1), JUNK),
    },
)
REPORTS = st.fixed_dictionaries(
    {"reporter": st.one_of(st.text(min_size=1, max_size=300), JUNK)},
    optional={"models": st.one_of(st.dictionaries(NAMES, FIGURES, max_size=8), JUNK)},
) | st.dictionaries(st.sampled_from(["reporter", "models", "x"]), JUNK)
YAMLISH = st.one_of(
    st.sampled_from(
        [
            "name: a\nmodel: /etc/passwd\ngpu_memory: 1GiB\n",
            "name: a\nmodel: ../../../etc/passwd\ngpu_memory: 1GiB\n",
            "name: a\nmodel: hf://o/a:Q4\ngpu_memory: 1GiB\nenv: {X: '${PATH}'}\n",
            "name: a\nmodel: hf://o/a:Q4\ngpu_memory: 1GiB\nenv: {X: '${HF_TOKEN}'}\n",
            "name: smollm2\nmodel: hf://org/smollm2:Q4\ngpu_memory: 1GiB\nreplicas: 2\n",
            "a: " + "[" * 300 + "]" * 300,
            "a: &x [1]\nb: [*x, *x, *x]\n",
            "\x00\ufeff---\n...\n",
        ]
    ),
    st.text(max_size=300),
)
FILE_NAMES = st.one_of(
    st.sampled_from(["m.yaml", "n.yml", "o.json"]), st.sampled_from(["d/p.yaml", "../q.yaml"])
)
PLANS = st.one_of(
    st.fixed_dictionaries({"files": st.dictionaries(FILE_NAMES, YAMLISH, max_size=3)}),
    st.fixed_dictionaries({"files": st.dictionaries(st.text(max_size=40), YAMLISH, max_size=3)}),
    st.dictionaries(st.sampled_from(["files", "extra"]), JUNK),
)
PATHS = st.sampled_from(
    [
        ("GET", "/v1/endpoints"),
        ("GET", "/v1/status"),
        ("POST", "/v1/demand"),
        ("GET", "/v1/events"),
        ("GET", "/v1/replicas/{x}/logs"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/console/{x}"),
        ("GET", "/v1/console/series"),
        ("GET", "/v1/console/requests"),
        ("GET", "/v1/gpus"),
        ("GET", "/v1/plan"),
        ("POST", "/v1/plan"),
        ("GET", "/{x}"),
    ]
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
SEGMENTS = st.one_of(
    # No lone surrogates: they have no UTF-8 form, so no client can send them in a URL.
    st.text(st.characters(exclude_characters="/?#%", exclude_categories=("Cs",)), min_size=1, max_size=300),
    st.sampled_from(["a" * 300 + ".js", "..", "app.js", "%00", "\\x.css"]),  # long, up, real, odd
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "9" * 5000, "²", "0x10", ""]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=80),
)
HEADER_TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=80
)
HOSTS = st.sampled_from(
    ["localhost", "127.0.0.1:1", "[::1]", "controller:8081", "evil.example", "a.localhost"]
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Host": st.one_of(HOSTS, HEADER_TEXT),
        "Origin": st.one_of(st.sampled_from(["null", "http://evil.example"]), HEADER_TEXT),
        "Content-Type": st.one_of(st.just("application/json"), HEADER_TEXT),
        "Authorization": HEADER_TEXT,
        "X-Junk": HEADER_TEXT,
    },
)
PROPERTY = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def json_body(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


@PROPERTY
@given(body=st.one_of(REPORTS, JUNK).map(json_body) | st.binary(max_size=200))
@example(body=ISSUE_BODY.encode())
@example(body=b'{"reporter": "x", "models": {"smollm2": {"in_flight": 1' + b"0" * 400 + b"}}}")
def test_any_demand_body(harness: Harness, body: bytes) -> None:
    harness.check_after(harness.request("POST", "/v1/demand", data=body, headers=JSON))


@PROPERTY
@given(body=st.one_of(PLANS.map(json_body), st.binary(max_size=100)))
@example(body=json_body({"files": {"a\x00.yaml": "", "b" * 300 + ".yaml": ""}}))
def test_any_plan_body(harness: Harness, body: bytes) -> None:
    harness.check_after(harness.request("POST", "/v1/plan", data=body, headers=JSON))


@PROPERTY
@given(
    route=PATHS,
    method=st.one_of(st.none(), METHODS),
    segment=SEGMENTS,
    query=st.dictionaries(st.sampled_from(["after", "wait", "epoch", "tail", "x"]), QUERY_VALUES, max_size=4),
    headers=HEADERS,
    body=st.one_of(st.none(), REPORTS.map(json_body), JUNK.map(json_body), st.binary(max_size=100)),
)
@example(
    route=("GET", "/console/{x}"), method=None, segment="a" * 300 + ".js", query={}, headers={}, body=None
)
def test_any_request_on_any_route(
    harness: Harness,
    route: tuple[str, str],
    method: str | None,
    segment: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes | None,
) -> None:
    verb, template = route
    path = template.replace("{x}", quote(segment, safe=""))
    if query.get("after") == str(harness.version) and "wait" in query:
        query["after"] = "-1"  # the one poll that is meant to be held (up to a minute): not here
    status = harness.request(method or verb, path, params=query, headers=headers, data=body)
    harness.check_after(status)
