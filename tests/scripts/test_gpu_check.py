"""scripts/gpu-check.py, the prepared script for the lent GPU machine, run here on recorded
inventories: no GPU is a result (exit 0), replicas spread, eviction makes room, the manifests'
pydantic may be missing; the foreign-memory part against a stand-in torch and scripted NVML reads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from controller.placement.inventory import GpuProcess, Inventory

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu-check.py"
INVENTORIES = REPO / "tests" / "fixtures" / "inventories"
GiB = 1024**3


def run(*args: str, out: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The script as the GPU machine runs it (``prelude``: Python run first, e.g. to hide a module)."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = {[str(SCRIPT), *args]!r}\n"
    code += f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OUT": str(out)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def written(out: Path, name: str) -> Any:
    return json.loads((out / name).read_text())


def test_no_gpu_is_a_result_not_a_failure(tmp_path: Path) -> None:
    empty = tmp_path / "none.json"
    empty.write_text(Inventory(reason="NVML unavailable: libnvidia-ml.so.1 not found").to_json())
    done = run("--inventory", str(empty), "examples", out=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "No GPUs: NVML unavailable: libnvidia-ml.so.1 not found" in done.stdout
    summary = written(tmp_path, "summary.json")
    assert summary["foreign"] == {
        "status": "skipped",
        "why": "a recorded inventory: no GPU of this machine to allocate on",
    }
    assert summary["eviction"]["status"] == "skipped" and summary["eviction"]["why"].startswith("no GPU")
    assert written(tmp_path, "plan.json")["assignments"] == []


def test_recorded_mig_machine_spreads_and_evicts(tmp_path: Path) -> None:
    done = run("--inventory", str(INVENTORIES / "h200-mig.json"), "examples", out=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    qwen = [
        a["devices"] for a in written(tmp_path, "plan.json")["assignments"] if a["model"] == "qwen2.5-0.5b"
    ]
    assert qwen == [["MIG-5e2b1c1a-0d6f-5c7e-9a41-8f3b2c1d0003"], ["1"]]
    assert "qwen2.5-0.5b: 2 replicas on 2 physical GPU(s), 2 unit(s): MIG 0/3; GPU 1" in done.stdout
    eviction = written(tmp_path, "eviction.json")
    assert eviction["status"] == "ok", eviction
    first, second = eviction["passes"]
    assert first["idle"] == "evicted for wanted" and first["specs"] == {}
    assert second["specs"] == {"wanted": [eviction["device"]]}


def test_without_pydantic_the_plan_still_runs_and_eviction_says_why(tmp_path: Path) -> None:
    hide = "import sys; sys.modules['pydantic'] = None"
    done = run("--inventory", str(INVENTORIES / "h200x4.json"), "examples", out=tmp_path, prelude=hide)
    assert done.returncode == 0, done.stdout + done.stderr
    assert written(tmp_path, "summary.json")["eviction"] == {
        "status": "skipped",
        "why": "pydantic is not installed (the reconciler's manifests need it)",
    }
    assert len(written(tmp_path, "plan.json")["assignments"]) == 6  # qwen x2, seed, shared x2, vllm-one


# --- the foreign-memory part, with stand-ins for torch and NVML -----------------------------------


@pytest.fixture
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeTorch:
    """What the script calls of torch; ``empty`` records the bytes asked for."""

    uint8 = "uint8"

    def __init__(self, uuid: str) -> None:
        self.asked: list[int] = []
        self.cuda = SimpleNamespace(
            get_device_properties=lambda _: SimpleNamespace(uuid=uuid.removeprefix("GPU-")),
            synchronize=lambda: None,
            empty_cache=lambda: None,
            is_available=lambda: True,
        )

    def zeros(self, *_: Any, **__: Any) -> object:
        return object()

    def empty(self, size: int, **_: Any) -> object:
        self.asked.append(size)
        return object()


def test_held_memory_counts_as_foreign(script: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU 0 of the x4 machine: free drops by 4 GiB while this process holds it, a replica that
    needs nearly all of GPU 0 waits naming the holder, and fits once the pid counts as ours."""
    machine = Inventory.from_json((INVENTORIES / "h200x4.json").read_text())
    gpu0 = machine.gpus[0].uuid
    held_process = GpuProcess(os.getpid(), 4 * GiB + 500 * 2**20)

    def with_gpu0(free_drop: int, processes: tuple[GpuProcess, ...]) -> Inventory:
        usage = tuple(
            replace(u, memory_free=(u.memory_free or 0) - free_drop, processes=processes)
            if u.uuid == gpu0
            else u
            for u in machine.usage
        )
        return replace(machine, usage=usage)

    reads = iter([with_gpu0(0, ()), with_gpu0(4 * GiB, (held_process,)), with_gpu0(0, ())])
    monkeypatch.setattr(script, "read_inventory", lambda: next(reads))
    torch = FakeTorch(gpu0)
    result = script.hold_and_measure(torch, machine)
    assert torch.asked == [4 * GiB]
    assert result["status"] == "ok", result
    assert result["drop"] == 4 * GiB and result["processes"] == [
        {"pid": os.getpid(), "used_memory": held_process.used_memory}
    ]
    holding = result["placements"]["holding"]
    assert holding.startswith("Pending: needs 1 GPU with 138.8 GiB free; best is GPU 0 with 135.8 GiB free")
    assert holding.endswith(f"processes modelctl does not manage hold 4.5 GiB there (pid {os.getpid()})")
    assert result["placements"]["holding, its pid as ours"] == "Placed on 0"
