"""`modelctl pull` against the stand-in Hub: progress lines then cached without a request; one line
and exit 1 for a model it cannot pull or find."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.cli import main
from tests.hub.conftest import GGUF_REPO
from tests.hub.standin import StandInHub


async def test_pull_prints_progress_then_finds_it_cached(
    hub: tuple[StandInHub, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin, url = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    (tmp_path / "m.yaml").write_text(f"name: smollm2\nmodel: hf://{GGUF_REPO}:Q4_1\nengine: llamacpp\n")
    args = ["pull", str(tmp_path / "m.yaml"), "--hub-cache", str(tmp_path / "cache")]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "smollm2: hf://stand-in/SmolLM2-135M-Instruct-GGUF:Q4_1: pulling 100% (93.8 of 93.8 MiB)" in out
    assert f"pulled into {tmp_path / 'cache'}" in out
    before = standin.requests
    assert await asyncio.to_thread(main, ["pull", "smollm2", "--manifests", str(tmp_path), *args[2:]]) == 0
    assert "smollm2: hf://stand-in/SmolLM2-135M-Instruct-GGUF:Q4_1 is in the cache" in capsys.readouterr().out
    assert standin.requests == before


async def test_pull_failures_are_one_line_and_exit_1(
    hub: tuple[StandInHub, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    (tmp_path / "m.yaml").write_text(f"name: smollm2\nmodel: hf://{GGUF_REPO}:Q5_K_M\nengine: llamacpp\n")
    cache = ["--hub-cache", str(tmp_path / "cache")]
    assert await asyncio.to_thread(main, ["pull", str(tmp_path), *cache]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"modelctl: pull: smollm2: hf://{GGUF_REPO}: no file for quant 'Q5_K_M' "
        "(GGUF files in the repo: SmolLM2-135M-Instruct.Q4_1.gguf)\n"
    )
    assert await asyncio.to_thread(main, ["pull", "nothing", "--manifests", str(tmp_path), *cache]) == 1
    assert capsys.readouterr().err == (
        f"modelctl: error: no model named 'nothing' in {tmp_path} (and no such file or folder)\n"
    )


async def test_pull_covers_hub_files_beside_local_weights(
    hub: tuple[StandInHub, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin, url = hub
    monkeypatch.setenv("HF_ENDPOINT", url)
    (tmp_path / "m.yaml").write_text(
        "name: vlm\nmodel: tiny-vlm.gguf\nmmproj: hf://test/tiny-vlm\n"
        "---\nname: plain\nmodel: plain.gguf\n"  # nothing of the hub: not pulled
    )
    args = ["pull", str(tmp_path / "m.yaml"), "--hub-cache", str(tmp_path / "cache")]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "vlm: hf://test/tiny-vlm (mmproj): pulling 100% (0.1 of 0.1 MiB)" in out
    assert "plain" not in out and standin.downloads == {"mmproj-tiny-vlm.gguf": 1}
    assert await asyncio.to_thread(main, ["pull", "vlm", "--manifests", str(tmp_path), *args[2:]]) == 0
    assert "vlm: hf://test/tiny-vlm (mmproj) is in the cache" in capsys.readouterr().out
