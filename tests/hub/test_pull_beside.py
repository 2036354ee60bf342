"""The files beside the weights named as hub references (``draft``, ``mmproj``, ``adapters[].path``:
``hf://``), pulled with the real huggingface_hub from the stand-in Hub into the cache with the
weights' own puller: one pull for every hub file a model names, its progress over all of them, then
cached without a request; the engines' specs name the cached files inside the read-only /cache
mount, and the memory estimate counts them once pulled."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from controller.engines import llamacpp, vllm
from controller.engines.common import HUB_CACHE_DIR
from controller.errors import HubError
from controller.hub.cache import HubCache, hub_refs
from controller.hub.pull import Progress, Puller, PullPlan
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.memory import estimate
from controller.reconcile.events import EventLog
from controller.reconcile.pulls import Pulls
from controller.reconcile.supervise import Failures
from controller.runtime.spec import ContainerSpec
from tests.hub.conftest import GGUF_REPO, MODELS, ST_REPO
from tests.hub.standin import COMMIT, HubFile, StandInHub

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LORA = "smollm2-lora-a.gguf"


def snapshot(repo: str) -> str:
    """A file's folder inside the engine's /cache mount."""
    return f"{HUB_CACHE_DIR}/huggingface/hub/models--{repo.replace('/', '--')}/snapshots/{COMMIT}"


def local_model(document: dict[str, object], weights: Path | None) -> LoadedModel:
    """A model as the loader makes it: host weights resolved (or a hub reference), hub files
    beside them left out of ``files`` (the loader does not look them up)."""
    manifest = ModelManifest.model_validate({"name": "m", **document})
    return LoadedModel(manifest, "models/m.yaml", None, weights)


async def pull_watched(puller: Puller, model: LoadedModel) -> tuple[list[PullPlan], list[Progress]]:
    plans: list[PullPlan] = []
    seen: list[Progress] = []
    task = asyncio.ensure_future(asyncio.to_thread(puller.pull, model, on_plan=plans.append))
    while not task.done():
        if plans:
            seen.append(puller.measure(*plans))
        await asyncio.sleep(0.01)
    task.result()
    seen.append(puller.measure(*plans))
    return plans, seen


def mounts_at_cache(spec: ContainerSpec) -> list[tuple[str, bool]]:
    return [(m.source, m.read_only) for m in spec.mounts if m.target == HUB_CACHE_DIR]


async def test_a_hub_draft_and_adapter_are_pulled_then_named_in_the_cache(
    hub: tuple[StandInHub, str], cache: HubCache, repos: dict[str, dict[str, HubFile]]
) -> None:
    standin, url = hub
    standin.pause_s = 0.005
    model = local_model(
        {
            "model": GGUF,
            "draft": f"hf://{GGUF_REPO}:Q4_1",
            "adapters": [{"name": "a", "path": "hf://test/smollm2-lora"}],
        },
        MODELS / GGUF,
    )
    assert [role for role, _ in hub_refs(model)] == ["draft", "adapter:a"]
    puller = Puller(cache, endpoint=url)
    assert puller.cached(model) is None and cache.resolve([model]) == [model]  # not pulled yet
    waiting = list(llamacpp.container_spec(model, 0, ()).command)  # decided, then held by the gate
    assert waiting[waiting.index("-md") + 1] == "/cache/not-pulled/draft"
    assert waiting[waiting.index("--lora-scaled") + 1] == "/cache/not-pulled/adapter-a:0"

    plans, seen = await pull_watched(puller, model)
    want = repos[GGUF_REPO][GGUF].size + repos["test/smollm2-lora"][LORA].size
    assert [str(p.ref) for p in plans] == [f"hf://{GGUF_REPO}:Q4_1", "hf://test/smollm2-lora"]
    assert seen[-1] == Progress(want, want)  # one progress over both files
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert standin.downloads == {GGUF: 1, LORA: 1}  # the draft without the README

    before = standin.requests
    (pulled,) = cache.resolve([model])
    assert standin.requests == before  # found with stat calls only
    assert pulled.pulled is not None and pulled.pulled.path == ""  # the weights are not hub's
    draft, adapter = pulled.files.draft, pulled.files.adapters[0].path
    assert draft is not None and draft.name == GGUF and draft.is_relative_to(cache.root)
    assert hashlib.sha256(adapter.read_bytes()).hexdigest() == repos["test/smollm2-lora"][LORA].sha256

    spec = llamacpp.container_spec(pulled, 0, ())
    command = list(spec.command)
    assert command[command.index("-m") + 1] == f"/models/m/{GGUF}"  # the host weights, as before
    assert command[command.index("-md") + 1] == f"{snapshot(GGUF_REPO)}/{GGUF}"
    assert command[command.index("--lora-scaled") + 1] == f"{snapshot('test/smollm2-lora')}/{LORA}:0"
    assert mounts_at_cache(spec) == [(str(cache.root.resolve()), True)]  # the cache once, read-only

    parts = estimate(pulled)  # the draft's weights and KV cache and the adapter's tensors count
    assert parts.draft > repos[GGUF_REPO][GGUF].size // 2 and 0 < parts.adapters <= want
    assert parts.total > estimate(model).total + parts.draft // 2


async def test_a_hub_projector_brings_the_projector_alone(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    standin, url = hub
    model = local_model(
        {"model": "tiny-vlm/tiny-vlm.gguf", "mmproj": "hf://test/tiny-vlm"},
        MODELS / "tiny-vlm" / "tiny-vlm.gguf",
    )
    await asyncio.to_thread(Puller(cache, endpoint=url).pull, model)
    assert standin.downloads == {"mmproj-tiny-vlm.gguf": 1}  # not the repo's model GGUF
    (pulled,) = cache.resolve([model])
    command = list(llamacpp.container_spec(pulled, 0, ()).command)
    assert command.count("--mmproj") == 1
    assert command[command.index("--mmproj") + 1] == f"{snapshot('test/tiny-vlm')}/mmproj-tiny-vlm.gguf"
    assert estimate(pulled).projector > 0


async def test_vllm_hub_weights_and_peft_adapter_share_one_pull_and_one_mount(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    standin, url = hub
    model = local_model(
        {
            "model": f"hf://{ST_REPO}",
            "engine": "vllm",
            "adapters": [{"name": "a", "path": "hf://test/smollm2-lora-peft"}],
        },
        None,
    )
    pulled = await asyncio.to_thread(Puller(cache, endpoint=url).pull, model)
    assert standin.downloads["adapter_model.safetensors"] == 1 and standin.downloads["model.safetensors"] == 1
    assert pulled.of("adapter:a") == snapshot("test/smollm2-lora-peft").removeprefix(f"{HUB_CACHE_DIR}/")
    (resolved,) = cache.resolve([model])
    spec = vllm.container_spec(resolved, 0, ())
    command = list(spec.command)
    assert command[command.index("--lora-modules") + 1] == f"a={snapshot('test/smollm2-lora-peft')}"
    assert command[command.index("--max-lora-rank") + 1] == "8"  # read from the cached adapter_config.json
    assert mounts_at_cache(spec) == [(str(cache.root.resolve()), True)]


async def test_an_adapter_repo_with_several_loras_and_no_tag_is_one_error_before_any_download(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    standin, url = hub
    model = local_model(
        {
            "model": GGUF,
            "draft": f"hf://{GGUF_REPO}:Q4_1",
            "adapters": [{"name": "a", "path": "hf://test/smollm2-loras"}],
        },
        MODELS / GGUF,
    )
    with pytest.raises(HubError) as caught:
        await asyncio.to_thread(Puller(cache, endpoint=url).pull, model)
    assert str(caught.value) == (
        "hf://test/smollm2-loras: several LoRA GGUF files in the repo (smollm2-lora-a.gguf, "
        "smollm2-lora-b.gguf): name one with :TAG"
    )
    assert standin.downloads == {}  # every reference is planned before the first download
    tagged = local_model(
        {"model": GGUF, "adapters": [{"name": "b", "path": "hf://test/smollm2-loras:b"}]}, MODELS / GGUF
    )
    found = await asyncio.to_thread(Puller(cache, endpoint=url).pull, tagged)
    assert (found.of("adapter:b") or "").endswith("/smollm2-lora-b.gguf")


async def test_the_reconciler_holds_a_start_until_every_hub_file_is_cached(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    """Host weights with a hub adapter: the start waits for the pull (Pulling, the adapter's
    reference in the event), then goes with the model the cache resolves."""
    _standin, url = hub
    ended = asyncio.Event()
    events = EventLog()
    pulls = Pulls(Puller(cache, endpoint=url), wake=ended.set, failures=Failures(), events=events)
    model = local_model(
        {"model": GGUF, "adapters": [{"name": "a", "path": "hf://test/smollm2-lora"}]}, MODELS / GGUF
    )
    spec = llamacpp_start(model)
    failed: list[str] = []

    def start_failed(slot: tuple[str, int], why: str) -> float:
        failed.append(why)
        return 1.0

    assert pulls.needs(model)
    assert pulls.gate([spec], [model], start_failed) == ()  # held: the pull starts instead
    assert pulls.busy and pulls.loading([model])["m"].startswith(("pull", "pulling"))
    await asyncio.wait_for(ended.wait(), 30)
    assert not pulls.busy and failed == []
    pulled = [e for e in events.after(0) if e.kind == "pulled"]
    assert pulled and pulled[0].reason.startswith("hf://test/smollm2-lora (adapter:a): pulling 100%")
    (resolved,) = cache.resolve([model])
    assert not pulls.needs(resolved)
    assert pulls.gate([spec], [resolved], start_failed) == (spec,)


def llamacpp_start(model: LoadedModel) -> ContainerSpec:
    """A decided start of ``model``: only its name and replica matter to the gate."""
    return ContainerSpec(model.name, 0, "llamacpp", "image", (), 8080, "/health", 1)
