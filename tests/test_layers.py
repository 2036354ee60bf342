"""The layout is the architecture: import-linter's contracts in pyproject.toml must hold.

Arrows only point down (cli -> app -> {api, settings} -> {gateway, reconcile} -> engines ->
{runtime, placement} -> {gpus, weights} -> {manifests, endpoints} -> errors); the gateway never
imports Docker, NVML, weight files or the reconciler; the pure core (manifests, weights, the GPU
inventory, placement, engines, plan, desired state) imports neither aiohttp, docker nor NVML;
inside the gateway, modules form layers too (no import circles).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)  # lint-imports reads pyproject.toml from the working directory
    code = lint_imports(no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 broken" in out
