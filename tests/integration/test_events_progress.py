"""Recent events and log tails through the controller's API, on a real llama.cpp replica.

One stack for the module (one SmolLM2 replica): /v1/events says it was created then became ready;
/v1/replicas/{container}/logs returns llama-server's own output, and 404 for a container that is
not this controller's; a replica killed with SIGKILL shows up as a crashed event with its reason,
then comes back (created, ready).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
import pytest_asyncio

from controller.app import RunningController

from .conftest import LLAMACPP_IMAGE
from .support import managed, one_replica, wait_ready

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("images"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, model_root: Path, docker_client: docker.DockerClient
) -> AsyncIterator[RunningController]:
    async with one_replica(tmp_path_factory, model_root, docker_client) as rc:
        yield rc


async def get(rc: RunningController, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"{rc.api_url}{path}") as resp:
        return resp.status, await resp.text()


async def events(rc: RunningController, after: int = 0) -> dict[str, Any]:
    status, text = await get(rc, f"/v1/events?after={after}")
    assert status == 200, text
    body: dict[str, Any] = json.loads(text)
    return body


def serving_container(rc: RunningController) -> str:
    (row,) = [r for r in rc.reports.current().replicas if r.state == "Ready"]
    assert row.container is not None
    return row.container


async def test_a_replica_is_created_then_ready(stack: RunningController) -> None:
    body = await events(stack)
    name = serving_container(stack)
    mine = [(e["kind"], e["model"], e["replica"]) for e in body["events"] if e["container"] == name]
    assert mine == [("created", "smollm2", 0), ("ready", "smollm2", 0)], body
    assert body["last"] == body["events"][-1]["seq"]
    assert (await events(stack, after=body["last"]))["events"] == []


async def test_a_replicas_log_tail_is_llama_servers_output(stack: RunningController) -> None:
    name = serving_container(stack)
    status, text = await get(stack, f"/v1/replicas/{name}/logs?tail=500")
    assert status == 200
    assert "load_model: loading model '/models/" in text and "llama_server: listening on" in text
    status, text = await get(stack, f"/v1/replicas/{name}/logs?tail=1")
    assert status == 200 and len(text.strip().splitlines()) == 1


async def test_a_container_that_is_not_this_controllers_is_not_found(
    stack: RunningController, docker_client: docker.DockerClient
) -> None:
    other = docker_client.containers.create(
        LLAMACPP_IMAGE, ["--version"], name=f"not-ours-{uuid.uuid4().hex[:8]}"
    )
    try:
        for key in (other.name, str(other.id)):
            status, text = await get(stack, f"/v1/replicas/{key}/logs")
            assert status == 404 and "not a replica of this controller" in text, text
    finally:
        other.remove(force=True)


async def test_a_killed_replica_is_a_crashed_event_with_its_reason(
    stack: RunningController, docker_client: docker.DockerClient
) -> None:
    last = (await events(stack))["last"]
    name = serving_container(stack)
    (victim,) = [c for c in managed(docker_client, stack.runtime.instance) if c.name == name]
    victim.kill()
    seen: list[dict[str, Any]] = []

    async def crashed() -> bool:
        seen[:] = (await events(stack, after=last))["events"]
        return any(e["kind"] == "crashed" for e in seen)

    await wait_until("a crashed event", crashed, lambda: str(seen))
    crash = next(e for e in seen if e["kind"] == "crashed")
    assert crash["container"] == name and crash["reason"].startswith("killed (exit code 137, SIGKILL)"), crash
    await wait_ready(stack, "smollm2", 1, timeout=60)
    after = (await events(stack, after=last))["events"]
    kinds = [e["kind"] for e in after]
    assert kinds[:2] == ["crashed", "backoff"] and kinds[-2:] == ["created", "ready"], after
    # The replacement has the same spec, so the same name (the name carries the spec's hash), and a new ID.
    assert after[-1]["container"] == serving_container(stack) == name
    (replacement,) = [c for c in managed(docker_client, stack.runtime.instance) if c.name == name]
    assert replacement.id != victim.id


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], detail: Callable[[], str]) -> None:
    """Poll the async ``check`` until true, or fail naming ``what`` after a minute."""
    deadline = time.monotonic() + 60
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within 60s. {detail()}")
        await asyncio.sleep(0.2)
