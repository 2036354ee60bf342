"""Models on demand, on a real Docker engine with real llama.cpp replicas and the official openai
client with its default settings: scale from zero (streamed and not), to zero when idle, swaps
between two models whose memory budget fits one, autoscaling under load, and a controller
restarted mid-scale adopting what runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import docker
import openai
import pytest

from controller.app import RunningController, running_controller
from controller.gateway.settings import GatewaySettings
from controller.manifests.loader import load_folder
from controller.placement.memory import cpu_need
from controller.reconcile.scaling import ScalingSettings

from .support import GGUF, Load, managed, settings, wait_for, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("images")]

HI = [{"role": "user", "content": "Say hi."}]


def on_demand(name: str, extra: str = "") -> str:
    return (
        f"name: {name}\nmodel: {GGUF}\nmin_replicas: 0\nmax_replicas: 1\nmax_batch_size: 2\n"
        f"context_length: 512\n{extra}"
    )


def running(client: docker.DockerClient, instance: str, model: str | None = None) -> list[str]:
    """Names of this instance's running containers (of ``model``)."""
    return sorted(
        c.name
        for c in managed(client, instance)
        if c.status == "running" and (model is None or c.labels["io.modelctl.model"] == model)
    )


def gateway() -> GatewaySettings:
    return GatewaySettings(host="127.0.0.1", port=0, tune_gc=False)


async def first_pass(rc: RunningController) -> None:
    await wait_for("the first reconcile pass", lambda: rc.store.published, 30)


async def test_scale_from_zero_streamed_and_not_then_back_to_zero_when_idle(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    (tmp_path / "m.yaml").write_text(on_demand("smollm2", "idle_timeout: 4s\n"))
    async with running_controller(settings(tmp_path, model_root, instance), gateway=gateway()) as rc:
        await first_pass(rc)
        assert running(docker_client, instance) == []  # min_replicas 0: nothing runs until asked
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")  # defaults
        assert {m.id for m in (await client.models.list()).data} == {"smollm2"}

        started = time.monotonic()
        answer = await client.chat.completions.create(model="smollm2", max_tokens=8, messages=HI)
        cold = time.monotonic() - started
        assert answer.choices[0].message.content, answer
        assert len(running(docker_client, instance)) == 1
        print(f"cold start to a whole answer: {cold:.2f}s")

        await wait_for("scaled to zero after idle_timeout", lambda: not running(docker_client, instance), 60)
        status = {m.model: m for m in rc.reconciler.on_demand.scaling.values()}["smollm2"]
        assert status.desired == 0 and "idle" in status.reason and status.last_used
        assert {m.id for m in (await client.models.list()).data} == {"smollm2"}  # still listed

        # Streamed, from zero again: the raw stream starts with the loading comments.
        body = {"model": "smollm2", "stream": True, "max_tokens": 8, "messages": HI}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{rc.gateway_url}/v1/chat/completions", json=body) as resp,
        ):
            assert resp.status == 200
            first = await resp.content.readline()
            rest = (await resp.read()).decode()
        assert first.decode().startswith(": loading smollm2"), first
        assert '"content"' in rest and rest.rstrip().endswith("data: [DONE]")

        # And through the openai client: comments are invisible, the answer whole.
        await wait_for("scaled to zero again", lambda: not running(docker_client, instance), 60)
        stream = await client.chat.completions.create(model="smollm2", max_tokens=8, stream=True, messages=HI)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        async with aiohttp.ClientSession() as session, session.get(f"{rc.api_url}/metrics") as resp:
            text = await resp.text()
        assert 'modelctl_controller_scale_from_zero_total{model="smollm2"} 3.0' in text


async def test_two_models_in_a_budget_for_one_swap_without_a_failed_request(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    (tmp_path / "a.yaml").write_text(on_demand("alpha"))
    (tmp_path / "b.yaml").write_text(on_demand("beta"))
    need = cpu_need(load_folder(tmp_path, model_roots=[model_root])[0])
    budget = int(need * 1.5)  # one fits, two do not
    ctl = settings(tmp_path, model_root, instance, cpu_memory=budget)
    async with running_controller(ctl, gateway=gateway()) as rc:
        await first_pass(rc)
        client = openai.AsyncOpenAI(base_url=f"{rc.gateway_url}/v1", api_key="unused")
        for name in ("alpha", "beta", "alpha", "beta"):
            answer = await client.chat.completions.create(model=name, max_tokens=4, messages=HI)
            assert answer.choices[0].message.content
            assert running(docker_client, instance) == running(docker_client, instance, name)  # only it
        assert rc.reconciler.on_demand.evictions == 3

        # Both at once: one waits for the other to finish, then swaps in.
        both = await asyncio.gather(
            *(client.chat.completions.create(model=n, max_tokens=4, messages=HI) for n in ("alpha", "beta"))
        )
        assert all(a.choices[0].message.content for a in both)

        # A model with a stream in flight is never evicted: its stream ends whole.
        holder = "beta" if running(docker_client, instance, "beta") else "alpha"
        other = "alpha" if holder == "beta" else "beta"
        evictions = rc.reconciler.on_demand.evictions
        stream = await client.chat.completions.create(
            model=holder, max_tokens=120, stream=True, messages=[{"role": "user", "content": "Tell a story."}]
        )
        waiting = asyncio.create_task(client.chat.completions.create(model=other, max_tokens=4, messages=HI))
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert rc.reconciler.on_demand.evictions == evictions  # not while the stream ran
        assert (await waiting).choices[0].message.content
        assert rc.reconciler.on_demand.evictions == evictions + 1


async def test_autoscaling_up_under_load_and_back_down_without_a_failed_request(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    (tmp_path / "m.yaml").write_text(
        f"name: smollm2\nmodel: {GGUF}\nmin_replicas: 1\nmax_replicas: 2\nmax_batch_size: 1\n"
        "target_requests: 1\ncontext_length: 512\n"
    )
    ctl = settings(tmp_path, model_root, instance, scaling=ScalingSettings(up_window_s=2, down_window_s=8))
    async with running_controller(ctl, gateway=gateway()) as rc:
        await wait_ready(rc, "smollm2", 1)
        assert rc.store.current().lookup("smollm2") is not None
        async with Load(str(rc.gateway_url), workers=3) as load:
            await wait_ready(rc, "smollm2", 2, timeout=90)  # 3 in flight at 1 per replica: up to max
            await asyncio.sleep(3)
        assert load.sent > 0 and load.failed == [], load.failed[:3]
        assert len(load.served_by) == 2, load.served_by  # both replicas served
        await wait_for("back down to one replica", lambda: len(running(docker_client, instance)) == 1, 60)
        assert rc.reconciler.on_demand.scaling["smollm2"].desired == 1


async def test_a_controller_restarted_mid_scale_adopts_what_runs(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    (tmp_path / "m.yaml").write_text(
        f"name: smollm2\nmodel: {GGUF}\nmin_replicas: 0\nmax_replicas: 2\nmax_batch_size: 1\n"
        "target_requests: 1\ncontext_length: 512\nidle_timeout: 10m\n"
    )
    ctl = settings(tmp_path, model_root, instance)
    async with running_controller(ctl, gateway=gateway()) as rc:
        await first_pass(rc)
        async with Load(str(rc.gateway_url), workers=2) as load:
            await wait_ready(rc, "smollm2", 2, timeout=90)
        assert load.failed == []
        before = {c.id for c in managed(docker_client, instance)}
        assert len(before) == 2
    async with running_controller(ctl, gateway=gateway()) as rc:
        await wait_ready(rc, "smollm2", 2, timeout=30)
        for _ in range(3):  # several passes: no duplicate, no orphan, nothing restarted
            await asyncio.sleep(1.5)
            assert {c.id for c in managed(docker_client, instance)} == before
        assert rc.reconciler.on_demand.scaling["smollm2"].desired == 2


async def test_ollamas_keep_alive_sets_how_long_an_on_demand_model_stays(
    tmp_path: Path, model_root: Path, instance: str, docker_client: docker.DockerClient
) -> None:
    """`keep_alive: 0` (the official ollama client) unloads a model whose idle_timeout is 10 minutes
    once its request is answered; a later request with `keep_alive: -1` keeps it."""
    import ollama

    (tmp_path / "m.yaml").write_text(on_demand("smollm2", "idle_timeout: 10m\n"))
    async with running_controller(settings(tmp_path, model_root, instance), gateway=gateway()) as rc:
        await first_pass(rc)
        client = ollama.AsyncClient(host=str(rc.gateway_url))
        answer = await client.generate(
            model="smollm2", prompt="Say hi.", options={"num_predict": 4}, keep_alive=0
        )
        assert answer.response
        await wait_for(
            "unloaded after its request (keep_alive 0)", lambda: not running(docker_client, instance), 30
        )
        await client.generate(model="smollm2", prompt="Say hi.", options={"num_predict": 4}, keep_alive=-1)
        await asyncio.sleep(8)  # several passes and demand reports: it stays
        assert len(running(docker_client, instance)) == 1
        assert "idle" not in rc.reconciler.on_demand.scaling["smollm2"].reason
