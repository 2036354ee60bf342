"""The layout is the architecture: import-linter's contracts in pyproject.toml must hold.

Arrows only point down (cli -> app -> {api, settings} -> {gateway, reconcile} -> engines ->
{runtime, placement} -> {gpus, weights} -> {manifests, endpoints} -> errors); the gateway never
imports Docker, NVML, weight files or the reconciler; the pure core (manifests, weights, the GPU
inventory, placement, engines, plan, desired state) imports neither aiohttp, docker nor NVML;
inside the gateway, modules form layers too (no import circles).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    # In a process of its own: import-linter configures logging with dictConfig, which disables
    # every logger that exists already (the controller's), and later tests that read logs failed.
    # It reads pyproject.toml from the working directory.
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "0 broken" in found.stdout
