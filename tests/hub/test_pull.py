"""Pulls with the real huggingface_hub against the stand-in Hub: cold with progress to 100 %, then
cached without a request, a cut download resumed, a pull refused for disk space, the manifest's token
sent as a bearer header and never logged, vLLM's files and nothing else."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import pytest

from controller.errors import HubError
from controller.hub.cache import HubCache, HubRef
from controller.hub.pull import Progress, Puller, PullPlan
from controller.manifests.model import LoadedModel
from tests.hub.conftest import GGUF_REPO, ST_REPO, hub_model
from tests.hub.standin import HubFile, StandInHub

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def pull_watched(puller: Puller, model: LoadedModel) -> tuple[list[Progress], object]:
    """Run a pull in a thread, measuring its progress meanwhile; returns what was seen, and the
    result (or the error)."""
    plans: list[PullPlan] = []
    seen: list[Progress] = []
    task = asyncio.ensure_future(asyncio.to_thread(puller.pull, model, on_plan=plans.append))
    while not task.done():
        if plans:
            seen.append(puller.measure(plans[0]))
        await asyncio.sleep(0.01)
    try:
        result: object = task.result()
    except HubError as exc:
        result = exc
    if plans:
        seen.append(puller.measure(plans[0]))
    return seen, result


async def test_cold_pull_reaches_100_then_cached_needs_no_request(
    hub: tuple[StandInHub, str], cache: HubCache, repos: dict[str, dict[str, HubFile]]
) -> None:
    standin, url = hub
    standin.pause_s = 0.01  # about a second: progress is seen on its way
    puller = Puller(cache, endpoint=url)
    model = hub_model(f"hf://{GGUF_REPO}:q4_1", "llamacpp")  # the tag matched case-insensitively
    seen, pulled = await pull_watched(puller, model)
    assert not isinstance(pulled, HubError), pulled
    assert any(0 < p.percent < 100 for p in seen), seen
    assert seen[-1].percent == 100 and seen[-1].done == repos[GGUF_REPO][GGUF].size
    assert [p.done for p in seen] == sorted(p.done for p in seen)  # never goes back
    assert standin.downloads == {GGUF: 1}  # the quant's file only, not the README
    local = cache.root / pulled.path  # type: ignore[attr-defined]
    assert local.name == GGUF and sha256(local) == repos[GGUF_REPO][GGUF].sha256
    assert pulled.path.startswith("huggingface/hub/models--stand-in--SmolLM2-135M-Instruct-GGUF/snapshots/")  # type: ignore[attr-defined]

    before = standin.requests
    again = await asyncio.to_thread(puller.pull, model)
    assert again == pulled and standin.requests == before  # offline: not one request
    resolved = cache.resolve([model])[0]
    assert resolved.pulled == pulled


async def test_cut_download_resumes_with_a_range_request(
    hub: tuple[StandInHub, str], cache: HubCache, repos: dict[str, dict[str, HubFile]]
) -> None:
    standin, url = hub
    standin.cut_after[GGUF] = 10 << 20
    puller = Puller(cache, endpoint=url)
    model = hub_model(f"hf://{GGUF_REPO}:Q4_1", "llamacpp")
    _, first = await pull_watched(puller, model)
    if isinstance(first, HubError):  # the library gave up on the cut: the next pull resumes
        _, first = await pull_watched(puller, model)
    assert not isinstance(first, HubError), first
    assert standin.ranges and standin.ranges[0].startswith(f"{GGUF}: bytes=")
    assert int(standin.ranges[0].split("=")[1].rstrip("-")) >= 10 << 20  # resumed, not restarted
    assert sha256(cache.root / first.path) == repos[GGUF_REPO][GGUF].sha256  # type: ignore[attr-defined]


async def test_too_little_disk_space_refuses_before_downloading(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    standin, url = hub
    puller = Puller(cache, endpoint=url, free_space=lambda _path: 50 << 20)
    with pytest.raises(
        HubError, match=r"not enough disk space in the hub cache .*MiB to fetch.* 50\.0 MiB free"
    ):
        await asyncio.to_thread(puller.pull, hub_model(f"hf://{GGUF_REPO}:Q4_1", "llamacpp"))
    assert standin.downloads == {}


async def test_token_from_the_manifest_is_a_bearer_header_and_never_logged(
    hub: tuple[StandInHub, str], cache: HubCache, caplog: pytest.LogCaptureFixture
) -> None:
    standin, url = hub
    caplog.set_level(logging.DEBUG)
    model = hub_model(f"hf://{GGUF_REPO}:Q4_1", "llamacpp", secrets={"HF_TOKEN": "hf_secret_standin_token"})
    await asyncio.to_thread(Puller(cache, endpoint=url).pull, model)
    assert standin.authorizations and set(standin.authorizations) == {"Bearer hf_secret_standin_token"}
    assert "hf_secret_standin_token" not in caplog.text
    assert "hf_secret_standin_token" not in repr(model)


async def test_no_token_in_the_manifest_sends_none(hub: tuple[StandInHub, str], cache: HubCache) -> None:
    standin, url = hub
    await asyncio.to_thread(Puller(cache, endpoint=url).pull, hub_model(f"hf://{GGUF_REPO}:Q4_1", "llamacpp"))
    assert standin.authorizations == []


async def test_vllm_gets_configs_tokenizer_and_safetensors_as_a_snapshot_folder(
    hub: tuple[StandInHub, str], cache: HubCache, repos: dict[str, dict[str, HubFile]]
) -> None:
    _standin, url = hub
    pulled = await asyncio.to_thread(Puller(cache, endpoint=url).pull, hub_model(f"hf://{ST_REPO}", "vllm"))
    folder = cache.root / pulled.path
    assert folder.name == "0123456789abcdef0123456789abcdef01234567"
    assert {p.name for p in folder.iterdir()} == set(repos[ST_REPO])
    assert sha256(folder / "model.safetensors") == repos[ST_REPO]["model.safetensors"].sha256


async def test_missing_quant_is_one_line_naming_the_files(
    hub: tuple[StandInHub, str], cache: HubCache
) -> None:
    _, url = hub
    with pytest.raises(HubError) as caught:
        await asyncio.to_thread(
            Puller(cache, endpoint=url).pull, hub_model(f"hf://{GGUF_REPO}:Q8_0", "llamacpp")
        )
    assert str(caught.value) == (
        f"hf://{GGUF_REPO}: no file for quant 'Q8_0' (GGUF files in the repo: {GGUF})"
    )


async def test_unknown_repo_is_one_line(hub: tuple[StandInHub, str], cache: HubCache) -> None:
    _, url = hub
    with pytest.raises(HubError, match=r"^hf://stand-in/nothing-GGUF: cannot list the repo: ") as caught:
        await asyncio.to_thread(
            Puller(cache, endpoint=url).pull, hub_model("hf://stand-in/nothing-GGUF", "llamacpp")
        )
    assert "\n" not in str(caught.value)


def test_a_record_with_a_file_gone_is_not_cached(tmp_path: Path) -> None:
    from controller.hub.select import RepoFile, Selection

    cache = HubCache(tmp_path)
    ref = HubRef("org/repo-GGUF", "Q4_0", "llamacpp")
    snapshot = cache.snapshot(ref.repo, "c0ffee")
    snapshot.mkdir(parents=True)
    (snapshot / "m-Q4_0.gguf").write_bytes(b"GGUF")
    cache.write_record(ref, "c0ffee", Selection((RepoFile("m-Q4_0.gguf", 4),), "m-Q4_0.gguf"))
    assert cache.lookup(ref) is not None
    (snapshot / "m-Q4_0.gguf").unlink()
    assert cache.lookup(ref) is None


async def test_the_hub_url_is_hf_endpoint_when_set_and_never_empty(
    hub: tuple[StandInHub, str], cache: HubCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror through HF_ENDPOINT (compose passes it on); an HF_ENDPOINT set but empty, which
    huggingface_hub itself would take as its URL, is huggingface.co."""
    _, url = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    pulled = await asyncio.to_thread(Puller(cache).pull, hub_model(f"hf://{GGUF_REPO}:Q4_1", "llamacpp"))
    assert pulled is not None
    monkeypatch.setenv("HF_ENDPOINT", "")
    assert Puller(cache)._endpoint() == "https://huggingface.co"
