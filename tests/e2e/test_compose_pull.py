"""End to end: an `hf://` model dropped into the manifests folder of a `docker compose up` stack is
pulled by the controller container, with progress in `modelctl status` and the events, into the
stack's hub cache volume, then served by a llama.cpp replica that mounts that volume read-only,
and answers the official `openai` client through the gateway.

The Hub cannot be reached from here, so HF_ENDPOINT points the controller at the stand-in of
tests/hub/standin.py (the Hub's file API over SmolLM2's real GGUF), run in this process on 0.0.0.0
of the host and reached from the controller container as `host.docker.internal`, which compose.yaml
maps to the host's gateway address. That is a real user's case (a Hub mirror or proxy on the host,
docs/hub.md) and the simplest way here: the stand-in needs no image or container of its own, and
the test can watch it (what was downloaded) and slow it, so the pull lasts until the test has seen
it in `modelctl status`, instead of racing a 94 MiB download on loopback.

The stack's hub cache is a volume of its own (MODELCTL_HUB_VOLUME), removed with the stack, so the
shared `modelctl-hub-cache` gets no leftovers from this test.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import openai
import pytest

from controller.runtime.docker import label_filter
from tests.hub.standin import COMMIT, HubFile, StandInHub, serve

from .support import GGUF, Stack, compose_stack, wrapper

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

REPO_ID = "test-org/SmolLM2-135M-Instruct-GGUF"
MODEL = "smollm2-hub"
MANIFEST = f"""\
name: {MODEL}
model: hf://{REPO_ID}:Q4_1
engine: llamacpp
replicas: 1
max_batch_size: 1
context_length: 512
"""
SLOW_S = 0.5  # the stand-in's pause per MiB until the test lets the pull finish (~47 s at most)


@contextmanager
def hub_on_host(hub: StandInHub) -> Iterator[int]:
    """``hub`` served on every address of the host (containers reach it by the host's gateway
    address), in a thread of its own; yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="standin-hub", daemon=True)
    thread.start()
    try:
        runner, url = asyncio.run_coroutine_threadsafe(serve(hub, host="0.0.0.0"), loop).result(30)
        try:
            yield int(url.rsplit(":", 1)[1])
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def api(stack: Stack, path: str) -> dict[str, Any]:
    """GET ``path`` of the controller's API, published on the host's loopback."""
    url = f"http://127.0.0.1:{stack.env['MODELCTL_API_PORT']}{path}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def row(stack: Stack) -> dict[str, Any] | None:
    """The hub model's replica row in /v1/status, once there is one (the controller may not be up)."""
    try:
        rows = api(stack, "/v1/status")["replicas"]
    except OSError:
        return None
    return next((r for r in rows if r["model"] == MODEL), None)


def wait_row(stack: Stack, done: Any, what: str, timeout: float) -> dict[str, Any]:
    """Poll the row until ``done(row)``; fail naming ``what`` and the last row after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = row(stack)
        if last is not None and done(last):
            return last
        if last is not None and last["state"] == "BackingOff":  # a failed pull says why
            pytest.fail(f"{MODEL} is {last['state']} while waiting until {what}: {last}")
        time.sleep(0.3)
    pytest.fail(f"{MODEL} not {what} within {timeout}s; last row: {last}")


def part_pulled(row: dict[str, Any]) -> bool:
    """A Pulling row with some of the bytes in the volume, not all: '10% (9.4 of 93.8 MiB)'."""
    percent = row["progress"].split("%")[0]
    return row["state"] == "Pulling" and percent.isdigit() and 0 < int(percent) < 100


def answer(stack: Stack, timeout: float = 60) -> str:
    """A chat completion through the gateway (it learns the ready replica by a long poll)."""
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            try:
                done = client.chat.completions.create(
                    model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Hello!"}]
                )
                return done.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.InternalServerError, openai.NotFoundError) as exc:
                last = exc
                time.sleep(0.5)
    finally:
        client.close()
    pytest.fail(f"no completion from {MODEL} within {timeout}s; last error: {last!r}")


def test_a_hub_model_is_pulled_by_the_compose_stack_then_served(
    tmp_path: Path, model_root: Path, docker_client: docker.DockerClient
) -> None:
    hub = StandInHub({REPO_ID: {GGUF: HubFile.of(model_root / GGUF)}}, pause_s=SLOW_S)
    manifests = tmp_path / "models"
    manifests.mkdir()
    with hub_on_host(hub) as port:
        with compose_stack(manifests, model_root, HF_ENDPOINT=f"http://host.docker.internal:{port}") as stack:
            volume = stack.env["MODELCTL_HUB_VOLUME"]
            (manifests / f"{MODEL}.yaml").write_text(MANIFEST)

            pulling = wait_row(stack, part_pulled, "part pulled", 180)
            status = wrapper(stack, "status")  # still pulling: the stand-in is slow until released
            hub.pause_s = 0.0
            ready = wait_row(stack, lambda r: r["state"] == "Ready", "Ready", 240)
            text = answer(stack)
            events = [
                (e["kind"], e["reason"]) for e in api(stack, "/v1/events")["events"] if e["model"] == MODEL
            ]
            [replica] = docker_client.containers.list(
                filters={"label": label_filter(stack.env["MODELCTL_INSTANCE"])}
            )
            command = replica.attrs["Config"]["Cmd"]
            mounts = [(m["Destination"], m["RW"], m.get("Name")) for m in replica.attrs["Mounts"]]
        volumes_left = [v.name for v in docker_client.volumes.list(filters={"name": volume})]

    print(f"pulling row: {pulling}\nmodelctl status:\n{status.stdout}\nready row: {ready}\nanswer: {text!r}")
    mib = f"{(model_root / GGUF).stat().st_size / 2**20:.1f}"  # 93.8
    of = rf"\d+% \(\d+\.\d of {mib} MiB\)"
    assert re.fullmatch(of, pulling["progress"]), pulling
    assert status.returncode == 0, status.stdout + status.stderr
    line = next((s for s in status.stdout.splitlines() if s.startswith(f"{MODEL} ")), "")
    assert " Pulling " in line and re.search(of, line), status.stdout
    assert text
    assert any(kind == "pulling" and f"hf://{REPO_ID}:Q4_1" in why for kind, why in events), events
    assert [(kind, why.split(": ")[-1]) for kind, why in events if kind == "pulled"] == [
        ("pulled", f"pulling 100% ({mib} of {mib} MiB)")
    ], events  # one pull, which ended with every byte (not a second one of the cached files)
    assert hub.downloads == {GGUF: 1}  # pulled once, by the controller; the replica read the cache
    snapshot = f"/cache/huggingface/hub/models--test-org--SmolLM2-135M-Instruct-GGUF/snapshots/{COMMIT}"
    assert command[:2] == ["-m", f"{snapshot}/{GGUF}"] and "-hf" not in command, command
    assert mounts == [("/cache", False, volume)], mounts
    assert volume != "modelctl-hub-cache" and volumes_left == []  # removed with the stack
