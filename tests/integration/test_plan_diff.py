"""`modelctl plan PATH --diff` against a real controller running one real llama.cpp replica: the
rows and exit codes a CI job on a manifests repository sees (0 nothing, 2 changes, 1 errors)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import docker
import pytest
import pytest_asyncio

from controller.app import RunningController

from .support import manifest, one_replica

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    async with one_replica(tmp_path_factory, model_root, docker_client) as rc:
        yield rc


async def plan_diff(url: str, folder: Path, *extra: str) -> Result:
    """The CLI as a user runs it, in its own process (the controller serves from this one)."""
    args = ["-m", "controller.cli", "plan", str(folder), "--diff", "--controller-url", url, *extra]
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=pipe, stderr=pipe)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def folder(tmp_path: Path, text: str, name: str = "smollm2.yaml") -> Path:
    path = tmp_path / "models"
    path.mkdir()
    (path / name).write_text(text)
    return path


async def test_the_running_manifests_change_nothing(stack: RunningController, tmp_path: Path) -> None:
    result = await plan_diff(stack.api_url, folder(tmp_path, manifest(replicas=1)))
    assert (result.code, result.out) == (0, "No changes: what runs matches these manifests.\n"), result.err


async def test_another_replica_is_a_create(stack: RunningController, tmp_path: Path) -> None:
    models = folder(tmp_path, manifest(replicas=2))
    result = await plan_diff(stack.api_url, models)
    assert result.code == 2, result.err
    assert result.out == "+ create smollm2-1\nPlan: 1 to create, 0 to roll, 0 to delete, 0 pending.\n"
    as_json = await plan_diff(stack.api_url, models, "--json")
    payload = json.loads(as_json.out)
    assert as_json.code == 2 and payload["changes"] is True and payload["errors"] == []
    assert [(r["action"], r["name"]) for r in payload["rows"]] == [
        ("keep", "smollm2-0"),
        ("create", "smollm2-1"),
    ]


async def test_a_changed_context_length_rolls_naming_it(stack: RunningController, tmp_path: Path) -> None:
    text = manifest(replicas=1).replace("context_length: 512", "context_length: 1024")
    result = await plan_diff(stack.api_url, folder(tmp_path, text))
    assert result.code == 2, result.err
    assert result.out.splitlines()[0] == "~ roll smollm2-0 (context_length 512 -> 1024)"


async def test_a_removed_model_is_a_delete_and_a_new_one_a_create(
    stack: RunningController, tmp_path: Path
) -> None:
    result = await plan_diff(stack.api_url, folder(tmp_path, manifest("tiny", replicas=1), "tiny.yaml"))
    assert result.code == 2, result.err
    assert result.out.splitlines()[:2] == ["- delete smollm2-0 (not in the manifests)", "+ create tiny-0"]


async def test_a_broken_manifest_is_exit_1_naming_file_and_line(
    stack: RunningController, tmp_path: Path
) -> None:
    models = folder(tmp_path, manifest(replicas=1, extra="contex_length: 1024\n"))
    result = await plan_diff(stack.api_url, models)
    assert result.code == 1 and result.out == ""
    assert f"{models}/smollm2.yaml:7 field 'contex_length': unknown field; did you mean" in result.err


async def test_weights_the_controller_cannot_find_are_exit_1_from_its_answer(
    stack: RunningController, tmp_path: Path
) -> None:
    """Weights are checked by the controller (its model roots): the error names the user's path."""
    models = folder(tmp_path, manifest(replicas=1).replace("SmolLM2-135M", "Missing"))
    result = await plan_diff(stack.api_url, models)
    assert result.code == 1 and result.out == ""
    first = result.err.splitlines()[0]
    assert first.startswith(f"{models}/smollm2.yaml:2 field 'model': weights 'Missing"), first
    assert "modelctl-plan-" not in result.err  # the controller's temporary folder never shows


async def test_an_unreachable_controller_is_one_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once it is closed
    result = await plan_diff(url, folder(tmp_path, manifest(replicas=1)))
    assert result.code == 1
    assert result.err.startswith(f"modelctl: error: cannot reach the controller at {url}/v1/plan:")
    assert "Traceback" not in result.err
    # the controller has the GPUs: a saved inventory has no place in a diff
    mixed = await plan_diff(url, tmp_path / "models", "--inventory", "saved.json")
    assert mixed.code == 1 and "leave out --inventory, --model-root" in mixed.err


async def test_the_watched_folder_and_bad_requests_over_http(stack: RunningController) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.api_url}/v1/plan") as resp:
            watched = await resp.json()
        assert resp.status == 200 and watched["changes"] is False, watched
        assert [r["line"] for r in watched["rows"]] == ["  keep smollm2-0"]
        async with session.post(f"{stack.api_url}/v1/plan", json={"files": {}}) as resp:
            emptied = await resp.json()  # an empty folder: everything would go
        assert resp.status == 200 and [r["line"] for r in emptied["rows"]] == [
            "- delete smollm2-0 (not in the manifests)"
        ]
        for body, problem in (
            ({"files": {"../x.yaml": "a: 1"}}, "a relative path inside the folder"),
            ({"files": {"x.txt": "a: 1"}}, "not a manifest file"),
            ({"files": {"a/x.yaml": "a: 1", "b/y.yaml": "b: 1"}}, "in one folder"),
            ({"nothing": 1}, '{"files"'),
        ):
            async with session.post(f"{stack.api_url}/v1/plan", json=body) as resp:
                assert resp.status == 400 and problem in (await resp.json())["error"], body
