"""`modelctl pull --ref ROLE=hf://... --engine ENGINE`, what a Kubernetes pod's initContainer runs,
against the stand-in Hub: the files chosen as for a manifest naming the same references (the Docker
controller finds them cached), each linked where its reference alone names it, the token from the
environment and never printed; one line and exit 1 for what it cannot do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.cli import main
from controller.hub.cache import HubCache, HubRef
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from tests.hub.conftest import GGUF_REPO, MODELS
from tests.hub.standin import HubFile, StandInHub, serve

TOKEN = "hf_standin_secret_token"
DRAFT = f"hf://{GGUF_REPO}:Q4_1"
LORA = "hf://test/smollm2-lora"
SPLIT_REPO = "test/smollm2-split"


def beside(model: dict[str, object], engine: str) -> LoadedModel:
    manifest = ModelManifest.model_validate(
        {"name": "smol", "model": "local.gguf", "engine": engine, **model}
    )
    return LoadedModel(manifest, "m.yaml", None, None)


def pull(cache: Path, *refs: str, engine: str | None = "llamacpp") -> int:
    args = ["pull", "--hub-cache", str(cache), *(f"--ref={r}" for r in refs)]
    return main(args + (["--engine", engine] if engine else []))


@pytest.fixture
def endpoint(hub: tuple[StandInHub, str], monkeypatch: pytest.MonkeyPatch) -> StandInHub:
    standin, url = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return standin


async def test_pulls_links_and_the_docker_controller_finds_the_same_files(
    endpoint: StandInHub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    cache = tmp_path / "cache"
    assert await asyncio.to_thread(pull, cache, f"draft={DRAFT}", f"adapter:a={LORA}") == 0
    out = capsys.readouterr()
    assert "pulling 100%" in out.out and TOKEN not in out.out + out.err
    assert not [r for r in caplog.records if r.name == "httpx2"]  # its request lines: signed URLs
    assert endpoint.authorizations and set(endpoint.authorizations) == {f"Bearer {TOKEN}"}
    draft, lora = HubRef.parse(DRAFT, "llamacpp", "draft"), HubRef.parse(LORA, "llamacpp", "adapter")
    assert draft is not None and lora is not None
    assert f"draft: {DRAFT} at {cache / draft.link}" in out.out
    for ref, source in ((draft, "SmolLM2-135M-Instruct.Q4_1.gguf"), (lora, "smollm2-lora-a.gguf")):
        link = cache / ref.link
        assert link.is_symlink() and not Path(link.readlink()).is_absolute()  # the same in every mount
        assert link.read_bytes() == (MODELS / source).read_bytes()
    # The Docker controller's view of a manifest naming the same references: cached, same files.
    model = beside({"draft": DRAFT, "adapters": [{"name": "a", "path": LORA}]}, "llamacpp")
    pulled = HubCache(cache).lookup_model(model)
    assert pulled is not None
    assert (cache / str(pulled.of("draft"))).resolve() == (cache / draft.link).resolve()
    assert (cache / str(pulled.of("adapter:a"))).resolve() == (cache / lora.link).resolve()

    before = endpoint.requests
    (cache / draft.link).unlink()
    assert await asyncio.to_thread(pull, cache, f"draft={DRAFT}", f"adapter:a={LORA}") == 0
    assert "is in the cache" in capsys.readouterr().out and endpoint.requests == before  # no network
    assert (cache / draft.link).is_file()  # linked again


async def test_a_vllm_adapter_is_its_peft_folder(
    endpoint: StandInHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert await asyncio.to_thread(pull, cache, "adapter:a=hf://test/smollm2-lora-peft", engine="vllm") == 0
    ref = HubRef.parse("hf://test/smollm2-lora-peft", "vllm", "adapter")
    assert ref is not None and not ref.link.endswith(".gguf")
    assert sorted(p.name for p in (cache / ref.link).iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


@pytest.fixture
async def split_hub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StandInHub]:
    shards = sorted((MODELS / "smollm2-split").glob("*.gguf"))
    standin = StandInHub({SPLIT_REPO: {p.name: HubFile.of(p) for p in shards}})
    runner, url = await serve(standin)
    monkeypatch.setenv("HF_ENDPOINT", url)
    yield standin
    await runner.cleanup()


async def test_a_split_draft_is_one_line_not_a_link_to_one_shard(
    split_hub: StandInHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(pull, tmp_path, f"draft=hf://{SPLIT_REPO}") == 1
    err = capsys.readouterr().err
    assert err == (
        f"modelctl: pull: hf://{SPLIT_REPO}: SmolLM2-135M-Instruct.Q4_1-00001-of-00003.gguf is one shard "
        "of a split GGUF, which cannot be linked as one file: give it under the model root instead\n"
    )
    assert not (tmp_path / "modelctl" / "links").exists() or not any(
        (tmp_path / "modelctl" / "links").iterdir()
    )


@pytest.mark.parametrize(
    ("refs", "engine", "error"),
    [
        ((f"weights={DRAFT}",), "llamacpp", "ROLE is draft, mmproj or adapter:NAME"),
        (("adapter:=hf://a/b",), "llamacpp", "ROLE is draft, mmproj or adapter:NAME"),
        (("draft=some/file.gguf",), "llamacpp", "not a hub reference"),
        (("draft=hf://org/repo/sub",), "llamacpp", "not a hub reference"),
        (("mmproj=hf://a/b",), "vllm", "vLLM takes no projector file"),
        ((f"draft={DRAFT}",), None, "--ref and --engine go together"),
        ((), "llamacpp", "--ref and --engine go together"),
    ],
)
def test_bad_refs_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], refs: tuple[str, ...], engine: str | None, error: str
) -> None:
    assert pull(tmp_path, *refs, engine=engine) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("modelctl: error: ") and error in line
    assert not any(tmp_path.iterdir())  # nothing pulled, nothing written


def test_a_path_and_refs_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", str(tmp_path), "--ref", f"draft={DRAFT}", "--engine", "llamacpp"]) == 1
    assert capsys.readouterr().err == "modelctl: error: give PATH|MODEL or --ref, not both\n"
    assert main(["pull"]) == 1
    assert "nothing to pull: give PATH|MODEL, or --ref" in capsys.readouterr().err
