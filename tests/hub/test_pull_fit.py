"""Hub files beside the weights are checked against the weights once pulled, before any replica
starts: real reconcile passes (the controller's own manifest load, a fake runtime shaped like
DockerRuntime, the real Drainer) pull `make shapes`'s real files from the stand-in Hub with the
real puller. A pulled adapter or projector of another model is one located manifest error (in
/v1/status, ``modelctl status`` and the log), no container is created for it and a running
replica of the model's older version keeps serving; a pulled file that fits starts as before."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from controller.api import create_api
from controller.app import manifest_loader
from controller.cli.render import render_table
from controller.endpoints.store import EndpointStore
from controller.engines.common import HUB_CACHE_DIR
from controller.errors import InvalidManifests
from controller.gpus.inventory import Inventory
from controller.hub.cache import HubCache
from controller.hub.fit import check_pulled
from controller.hub.pull import Puller
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel, PulledFiles
from controller.reconcile.drain import Drainer
from controller.reconcile.lifecycle import LifecycleSettings
from controller.reconcile.loop import Reconciler
from controller.runtime.spec import ContainerSpec
from controller.settings import ControllerSettings
from tests.hub.conftest import MODELS
from tests.hub.standin import COMMIT, StandInHub
from tests.reconcile.test_events import FakeRuntime, Prober

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def snapshot(cache: HubCache, repo: str) -> Path:
    """A pulled repo's folder as the controller sees it."""
    return cache.hf_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT


@dataclass
class Runtime(FakeRuntime):
    """The fake runtime, keeping the specs it was handed."""

    specs: list[ContainerSpec] = field(default_factory=list)

    def start(self, spec: ContainerSpec) -> str:
        self.specs.append(spec)
        return super().start(spec)


class Controller:
    """A reconciler as the controller composes it, over manifests in a folder of the test's."""

    def __init__(self, folder: Path, cache: HubCache, url: str, *, shown_as: str | None = None) -> None:
        self.folder = folder
        settings = ControllerSettings(
            manifests=folder, model_roots=(MODELS,), hub_cache=cache.root, manifests_shown_as=shown_as
        )
        self.runtime, self.prober, self.clock = Runtime(), Prober(), [0.0]
        self.reconciler = Reconciler(
            runtime=self.runtime,  # type: ignore[arg-type]
            load_models=manifest_loader(settings),
            store=EndpointStore(),
            prober=self.prober,
            drainer=Drainer(self.runtime, self.prober.fetch, settle_s=0, poll_s=0),  # type: ignore[arg-type]
            lifecycle=LifecycleSettings(backoff_initial_s=2, backoff_max_s=300),
            read_inventory=Inventory,
            clock=lambda: self.clock[0],
            wall_clock=lambda: 1796170000.0 + self.clock[0],
            puller=Puller(cache, endpoint=url),
        )

    def write(self, text: str) -> None:
        (self.folder / "m.yaml").write_text(text)

    async def passes(self, n: int = 1) -> None:
        for _ in range(n):
            await self.reconciler.reconcile_once()
            for task in list(self.reconciler.drainer.tasks.values()):
                await task
            self.clock[0] += 0.5

    async def pulled(self) -> None:
        """A pass that starts a pull, then the pull's end (the pass after it loads the files)."""
        await self.passes()
        assert self.reconciler.pulls.busy
        for _ in range(3000):
            if not self.reconciler.pulls.busy:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the pull did not end within 30 s")

    def kinds(self) -> list[str]:
        return [e.kind for e in self.reconciler.events.events]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "manifests"
    path.mkdir()
    return path


async def test_a_pulled_adapter_of_another_model_is_one_located_error_and_nothing_starts(
    hub: tuple[StandInHub, str], cache: HubCache, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """smollm2-lora-a.gguf from the Hub on tiny-vlm's weights (llama.cpp: 'has incorrect shape
    (hint: maybe wrong base model?)')."""
    standin, url = hub
    c = Controller(folder, cache, url)
    c.write(
        "name: vlm\nmodel: tiny-vlm/tiny-vlm.gguf\nadapters:\n  - name: a\n    path: hf://test/smollm2-lora\n"
    )
    await c.pulled()
    requests = standin.requests
    with caplog.at_level(logging.ERROR, logger="controller.reconcile.loop"):
        await c.passes(4)
    assert c.runtime.containers == []  # nothing created, now or on the passes after
    assert standin.requests == requests and c.kinds().count("pulled") == 1  # and nothing pulled again

    report = c.reconciler.reports.current()
    (error,) = report.manifest_errors
    adapter = snapshot(cache, "test/smollm2-lora") / "smollm2-lora-a.gguf"
    assert error.startswith(
        f"{folder / 'm.yaml'}:5 field 'adapters.0.path': hf://test/smollm2-lora, pulled: {adapter}: "
        "tensor 'blk.0."
    )
    assert "an adapter for another base model" in error and "maybe wrong base model?" in error
    assert f"manifest error (serving the last good set): {error}" in render_table(report.status_json())
    assert [r.getMessage().count(error) for r in caplog.records] == [1]  # logged once
    client = TestClient(
        TestServer(create_api(c.reconciler.store, c.reconciler.reports, c.reconciler.controls()))
    )
    await client.start_server()
    try:
        status = await (await client.get("/v1/status")).json()
    finally:
        await client.close()
    assert status["manifest_errors"] == [error]
    (row,) = status["replicas"]
    assert row["container"] is None and "see the manifest errors" in row["progress"]


async def test_a_pulled_projector_of_another_width_keeps_the_older_version_serving(
    hub: tuple[StandInHub, str], cache: HubCache, folder: Path
) -> None:
    """SmolLM2 with a LoRA from the Hub starts; its next version names tiny-vlm's projector from
    the Hub (64 wide, SmolLM2 is 576): refused once pulled, the running replica stays, serving."""
    _standin, url = hub
    c = Controller(folder, cache, url)
    good = f"name: s\nmodel: {GGUF}\nadapters: [{{name: a, path: 'hf://test/smollm2-lora'}}]\n"
    c.write(good)
    await c.pulled()
    await c.passes()
    (old,) = c.runtime.containers  # a pulled adapter that fits starts, with the cached file
    lora = snapshot(cache, "test/smollm2-lora") / "smollm2-lora-a.gguf"
    (spec,) = c.runtime.specs
    command = list(spec.command)
    assert command[command.index("--lora-scaled") + 1] == f"{HUB_CACHE_DIR}/{lora.relative_to(cache.root)}:0"
    c.prober.mark(old)
    await c.passes()
    assert [r.id for e in c.reconciler.store.current().models for r in e.replicas] == [old.name]

    c.write(good + "mmproj: hf://test/tiny-vlm\n")
    await c.pulled()
    await c.passes(4)
    assert c.runtime.containers == [old]  # not replaced, not removed, no new replica beside it
    assert [r.id for e in c.reconciler.store.current().models for r in e.replicas] == [old.name]
    (error,) = c.reconciler.manifest_errors
    projector = snapshot(cache, "test/tiny-vlm") / "mmproj-tiny-vlm.gguf"
    assert error == (
        f"{folder / 'm.yaml'}:4 field 'mmproj': hf://test/tiny-vlm, pulled: {projector}: the "
        "projector's output width (clip.vision.projection_dim 64) is not the text model's "
        "(llama.embedding_length 576): it belongs to another model (llama.cpp: mismatch between "
        "text model (n_embd = 576) and mmproj (n_embd = 64))"
    )

    c.write(good)  # put back: valid again, the same replica serves on
    await c.passes(2)
    assert c.reconciler.manifest_errors == [] and c.runtime.containers == [old]


async def test_hub_weights_are_checked_against_local_files_beside_them(
    hub: tuple[StandInHub, str], cache: HubCache, folder: Path
) -> None:
    """tiny-vlm's weights from the Hub with SmolLM2's local LoRA: the loader cannot check them
    (the weights are not here yet); the load after the pull does, and names the manifest as the
    user knows it (``manifests_shown_as``)."""
    _standin, url = hub
    c = Controller(folder, cache, url, shown_as="models")
    c.write(
        "name: vlm\nmodel: hf://test/tiny-vlm\nengine: llamacpp\n"
        "adapters: [{name: a, path: smollm2-lora-a.gguf}]\n"
    )
    await c.pulled()
    await c.passes(2)
    assert c.runtime.containers == []
    (error,) = c.reconciler.manifest_errors
    assert error.startswith(
        f"models/m.yaml:4 field 'adapters.0.path': with the weights hf://test/tiny-vlm, pulled: "
        f"{MODELS / 'smollm2-lora-a.gguf'}: tensor 'blk.0."
    )
    assert "an adapter for another base model" in error


def test_a_check_that_breaks_or_a_manifest_gone_is_still_one_error_at_its_file(tmp_path: Path) -> None:
    """The check after the pull is hostile-input code too: a bug in it is one error (its
    traceback logged), and a manifest removed since the load gives an error without a line."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: s\nmodel: hf://test/tiny-vlm\nengine: llamacpp\nmmproj: hf://test/tiny-vlm\n")
    model = LoadedModel(
        ModelManifest.model_validate(yaml.safe_load(manifest.read_text())),
        str(manifest),
        None,
        None,
        pulled=PulledFiles("", False, "w.gguf"),
        pulled_root=tmp_path / "hub",
    )
    cache = HubCache(tmp_path / "hub")

    def broken(model: LoadedModel) -> list[tuple[tuple[str | int, ...], str]]:
        raise RuntimeError(f"boom at {model.readable_weights}")

    def misfit(model: LoadedModel) -> list[tuple[tuple[str | int, ...], str]]:
        return [(("mmproj",), f"{model.readable_weights}: too narrow")]

    with pytest.raises(InvalidManifests) as caught:
        check_pulled([model], broken)
    (error,) = caught.value.errors
    weights = cache.root / "w.gguf"
    why = "cannot check the files beside the weights: RuntimeError: boom"
    assert str(error) == f"{manifest}:1: {why} at {weights}"  # the document's line
    with pytest.raises(InvalidManifests) as caught:
        check_pulled([model], misfit)
    assert [str(e) for e in caught.value.errors] == [
        f"{manifest}:4 field 'mmproj': hf://test/tiny-vlm, pulled: {cache.root / 'w.gguf'}: too narrow"
    ]
    manifest.unlink()
    with pytest.raises(InvalidManifests) as caught:
        check_pulled([model], misfit)
    assert [(e.line, e.field) for e in caught.value.errors] == [(None, "mmproj")]
    check_pulled([replace(model, pulled=None)], broken)  # not pulled: not checked
