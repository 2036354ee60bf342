"""Hub weights once pulled are sized from the pulled files, like local ones: a split GGUF from the
Hub (three real shards of SmolLM2 in a quant folder) brings every shard, and its estimate and
description count all of them; a projector pulled beside hub weights counts too and makes the
model take images. Before the pull there is nothing to read: the estimate says so."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from controller.cli import main
from controller.hub.cache import HubCache
from controller.hub.pull import Puller
from controller.placement.memory import cpu_need, estimate, estimate_files
from controller.weights.describe import describe, takes_images
from controller.weights.info import EstimateError
from tests.hub.conftest import MODELS, hub_model
from tests.hub.standin import SPLIT_REPO, HubFile, StandInHub

SHARDS = [f"SmolLM2-135M-Instruct.Q4_1-{k:05d}-of-00003.gguf" for k in (1, 2, 3)]
WHOLE = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
INVENTORY = Path(__file__).resolve().parents[1] / "fixtures" / "inventories" / "h200.json"


async def test_a_split_gguf_from_the_hub_is_pulled_whole_and_sized_by_every_shard(
    hub: tuple[StandInHub, str], cache: HubCache, repos: dict[str, dict[str, HubFile]]
) -> None:
    standin, url = hub
    model = hub_model(f"hf://{SPLIT_REPO}:q4_1", "llamacpp")
    with pytest.raises(EstimateError, match="weights not resolved"):
        estimate(model)  # not pulled: nothing to read yet
    pulled = await asyncio.to_thread(Puller(cache, endpoint=url).pull, model)
    assert standin.downloads == {f"Q4_1/{name}": 1 for name in SHARDS}  # the README stays
    assert pulled.path.endswith(f"/Q4_1/{SHARDS[0]}")

    [resolved] = cache.resolve([model])
    weights = resolved.readable_weights
    assert weights is not None and weights == cache.root / pulled.path
    assert sorted(p.name for p in weights.parent.iterdir()) == SHARDS
    found = estimate(resolved)
    whole = estimate_files(WHOLE, engine="llamacpp", context_length=None, max_batch_size=1)
    assert found.weights == whole.weights == 96_576_768  # every shard's tensors, as the unsplit file
    assert found == whole
    assert cpu_need(resolved) > found.weights  # a CPU replica gets a memory limit that holds the weights
    details = describe(resolved)
    sizes = [repos[SPLIT_REPO][f"Q4_1/{name}"].size for name in SHARDS]
    assert details.size == sum(sizes)  # Ollama's /api/tags size
    assert (details.family, details.quantization) == ("llama", "Q4_1")


async def test_a_projector_pulled_beside_hub_weights_is_counted_and_takes_images(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    _, url = hub
    model = hub_model("hf://test/tiny-vlm", "llamacpp")
    assert takes_images(model) is None  # not pulled: cannot tell
    pulled = await asyncio.to_thread(Puller(cache, endpoint=url).pull, model)
    assert pulled.mmproj is not None
    [resolved] = cache.resolve([model])
    assert resolved.files.mmproj is None  # the engine gets it from the pull (-hf's choice)
    assert resolved.readable_files.mmproj == cache.root / pulled.mmproj
    projector = (MODELS / "tiny-vlm" / "mmproj-tiny-vlm.gguf").stat().st_size
    assert 0 < estimate(resolved).projector <= projector
    assert takes_images(resolved) is True


async def test_modelctl_plan_sizes_a_pulled_hub_model_and_places_it_on_a_gpu(
    hub: tuple[StandInHub, str], cache: HubCache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = hub
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.yaml").write_text(f"name: split\nmodel: hf://{SPLIT_REPO}:Q4_1\nnum_gpus: 1\n")
    plan = ["plan", str(folder), "--inventory", str(INVENTORY), "--hub-cache", str(cache.root), "--json"]
    assert main(plan) == 0
    before = json.loads(capsys.readouterr().out)
    assert "weights not resolved" in before["pending"][0]["reason"]  # not pulled: nothing to size
    await asyncio.to_thread(
        Puller(cache, endpoint=url).pull, hub_model(f"hf://{SPLIT_REPO}:Q4_1", "llamacpp")
    )
    assert main(plan) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["pending"] == [] and len(after["assignments"]) == 1
    assert after["estimates"]["split"]["weights"] == 96_576_768


async def test_modelctl_plan_refuses_a_pulled_adapter_that_does_not_fit(
    hub: tuple[StandInHub, str],
    cache: HubCache,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.yaml").write_text(
        "name: vlm\nmodel: hf://test/tiny-vlm\nengine: llamacpp\n"
        "adapters:\n  - name: sea\n    path: hf://test/smollm2-lora\n"
    )
    plan = ["plan", str(folder), "--inventory", str(INVENTORY), "--hub-cache", str(cache.root)]
    assert main(plan) == 0  # not pulled: nothing to check yet
    pull = ["pull", str(folder), "--hub-cache", str(cache.root)]
    assert await asyncio.to_thread(main, pull) == 0
    capsys.readouterr()
    assert main(plan) == 1
    err = capsys.readouterr().err
    assert "m.yaml:6 field 'adapters.0.path': hf://test/smollm2-lora, pulled: " in err, err
