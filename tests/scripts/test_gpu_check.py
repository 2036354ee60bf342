"""scripts/gpu-check.py (its parts in scripts/gpucheck/), the prepared script for the lent GPU
machine, run here on recorded inventories: no GPU is a result (exit 0), replicas spread, eviction
makes room, the manifests' pydantic may be missing; the foreign-memory part against a stand-in torch
and scripted NVML reads; the energy part reading the recorded H200 through the real adapter, its
counter advancing; the shapes part's estimates of a split 70B, a draft and adapters, placed on the
recorded H200."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from gpus.nvml_replay import Answers, EnergyCounter, NvmlReplay, load_snapshot

from controller.gpus.inventory import GpuProcess, Inventory
from controller.gpus.nvml import read_inventory

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
    assert summary["energy"] == {
        "status": "skipped",
        "why": "a recorded inventory: no GPU of this machine to measure",
    }
    assert written(tmp_path, "plan.json")["assignments"] == []
    shapes = written(tmp_path, "shapes.json")  # estimated all the same; nowhere to place them
    assert shapes["status"] == "ok", shapes
    assert [row["gpu"] for row in shapes["placed"]] == [None, None, None]
    assert (
        shapes["placed"][0]["pending"]
        == "needs 1 GPU; no GPU to place on (NVML unavailable: libnvidia-ml.so.1 not found)"
    )


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
    assert written(tmp_path, "summary.json")["shapes"] == {
        "status": "skipped",
        "why": "pydantic is not installed (the manifest loader needs it)",
    }


# --- the foreign-memory part, with stand-ins for torch and NVML -----------------------------------


def part(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    """One part of the script as a module, from the package beside it (scripts/gpucheck/)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    return importlib.import_module(f"gpucheck.{name}")


@pytest.fixture
def foreign(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return part(monkeypatch, "foreign")


@pytest.fixture
def energy(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return part(monkeypatch, "energy")


@pytest.fixture
def shapes(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return part(monkeypatch, "shapes")


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


def test_held_memory_counts_as_foreign(foreign: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
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
    monkeypatch.setattr(foreign, "read_inventory", lambda: next(reads))
    torch = FakeTorch(gpu0)
    result = foreign.hold_and_measure(torch, machine)
    assert torch.asked == [4 * GiB]
    assert result["status"] == "ok", result
    assert result["drop"] == 4 * GiB and result["processes"] == [
        {"pid": os.getpid(), "used_memory": held_process.used_memory}
    ]
    holding = result["placements"]["holding"]
    assert holding.startswith("Pending: needs 1 GPU with 138.8 GiB free; best is GPU 0 with 135.8 GiB free")
    assert holding.endswith(f"processes modelctl does not manage hold 4.5 GiB there (pid {os.getpid()})")
    assert result["placements"]["holding, its pid as ours"] == "Placed on 0"


# --- the energy part: the recorded H200 through the real adapter, its counter advancing --------------

STEP_S = 0.01  # the energy part's sampling step here: a short run


class MatmulTorch(FakeTorch):
    """What the energy part calls of torch: bf16 tensors on cuda:0 and matmul, counted."""

    bfloat16 = "bfloat16"

    def __init__(self, uuid: str) -> None:
        super().__init__(uuid)
        self.matmuls = 0

    def randn(self, *_: Any, **__: Any) -> object:
        return object()

    def randn_like(self, _: object) -> object:
        return object()

    def empty_like(self, _: object) -> object:
        return object()

    def matmul(self, *_: Any, **__: Any) -> None:
        self.matmuls += 1


def loaded_h200(monkeypatch: pytest.MonkeyPatch, energy: ModuleType) -> Inventory:
    """The energy part's NVML reads: the recorded H200, idle at 129.254 W for the first read, then
    500 W with the energy counter advancing 500 W x STEP_S between reads."""
    snapshot = load_snapshot()
    record = snapshot["devices"][0]
    record["nvmlDeviceGetPowerUsage"] = Answers(129_254, 500_000)
    record["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(3_000_000, watts=500, seconds=STEP_S)
    replay = NvmlReplay(snapshot)
    monkeypatch.setattr(energy, "read_inventory", lambda: read_inventory(replay))
    return read_inventory(NvmlReplay(load_snapshot()))


def measure(energy: ModuleType, inventory: Inventory, *, intervals: int) -> Any:
    """The energy part over ``intervals`` steps of STEP_S, on a clock that ticks exactly STEP_S."""
    clock = iter(i * STEP_S for i in range(1000)).__next__
    return energy.energy_part(inventory, live=True, seconds=intervals * STEP_S, sample_s=STEP_S, clock=clock)


def test_energy_under_a_matmul_loop_agrees_with_the_counter_and_the_meter(
    energy: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = loaded_h200(monkeypatch, energy)
    torch = MatmulTorch(inventory.gpus[0].uuid)
    monkeypatch.setattr(energy, "cuda_torch", lambda: torch)
    result = measure(energy, inventory, intervals=4)
    assert result["status"] == "ok", result
    assert set(result["checks"]) == {
        "power or the counter read every time",
        "the counter advanced",
        "counter's average within 25% of the power readings",
        "more power under the matmul loop than idle",
        "the meter attributes the whole GPU to its one replica",
        "the meter's joules are the counter's",
    }
    assert result["counter_j"] == pytest.approx(4 * 500 * STEP_S)  # 4 intervals of 500 W x 10 ms
    assert result["counter_avg_w"] == pytest.approx(500.0)
    assert result["power_w"]["idle"] == 129.254 and result["power_w"]["mean_loaded"] == 500.0
    assert result["work"] == torch.matmuls > 0
    assert result["meter"]["joules"] == pytest.approx(20.0)
    assert result["meter"]["j_per_matmul"] == pytest.approx(20.0 / torch.matmuls)
    assert result["meter"]["status"]["models"][0]["basis"] == "exclusive"
    assert result["j_per_tflop"] == pytest.approx(20.0 / (torch.matmuls * 2 * 8192**3 / 1e12))


def test_energy_without_torch_runs_a_busy_loop_and_says_so(
    energy: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = loaded_h200(monkeypatch, energy)
    monkeypatch.setattr(energy, "cuda_torch", lambda: None)
    result = measure(energy, inventory, intervals=2)
    assert result["status"] == "ok", result
    assert result["load"] == "a CPU busy loop (torch with CUDA is missing: the GPU idles)"
    assert "more power under the matmul loop than idle" not in result["checks"]
    assert "j_per_tflop" not in result
    out = capsys.readouterr().out
    assert "counter: 10.0 J, 500.0 W average" in out
    assert '"energy_mj": 3010000' in out  # the inventory after, as JSON


def test_energy_counter_that_disagrees_with_power_fails_the_check(
    energy: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = loaded_h200(monkeypatch, energy)
    snapshot = load_snapshot()
    snapshot["devices"][0]["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(
        0, watts=2000, seconds=STEP_S
    )
    replay = NvmlReplay(snapshot)  # 2000 W by the counter, 129 W by the power readings
    monkeypatch.setattr(energy, "read_inventory", lambda: read_inventory(replay))
    monkeypatch.setattr(energy, "cuda_torch", lambda: None)
    result = measure(energy, inventory, intervals=2)
    assert result["status"] == "failed"
    assert result["why"] == "failed: counter's average within 25% of the power readings"


def test_energy_without_the_meters_dependencies_still_reads_the_counter(
    energy: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = loaded_h200(monkeypatch, energy)
    monkeypatch.setattr(energy, "cuda_torch", lambda: None)
    monkeypatch.delitem(sys.modules, "controller.telemetry.energy", raising=False)
    for name in ("prometheus_client", "prometheus_client.core", "prometheus_client.registry"):
        monkeypatch.setitem(sys.modules, name, None)  # as on a GPU machine without it
    result = measure(energy, inventory, intervals=2)
    assert result["status"] == "ok", result
    assert result["meter"] == "prometheus_client.core is not installed: the console's meter not checked"
    assert result["counter_j"] == pytest.approx(10.0)


# --- the shapes part: real models' shapes, estimated and placed on the recorded H200 ----------------


def llama_70b_q4_k_m_bytes() -> int:
    """Meta-Llama-3.1-70B-Instruct Q4_K_M's tensor bytes, counted by type from its config: 80
    layers, 40 of them (llama.cpp's use_more_bits: 0-9, 70-79 and every third from 12) with attn_v
    and ffn_down in Q6_K, the other 40 with attn_v Q5_K (its 70B rule) and ffn_down Q4_K; the rest
    Q4_K, the output Q6_K, norms and rope factors F32. K-quants: 144, 176, 210 bytes per 256."""
    embd, kv, ffn, vocab = 8192, 1024, 28_672, 128_256
    q4_k = 80 * (2 * embd * embd + embd * kv + 2 * embd * ffn) + 40 * ffn * embd + embd * vocab
    q5_k = 40 * embd * kv
    q6_k = 40 * (embd * kv + ffn * embd) + embd * vocab
    f32 = (2 * 80 + 1) * embd + 64
    return (q4_k * 144 + q5_k * 176 + q6_k * 210) // 256 + f32 * 4


def test_shapes_on_the_recorded_h200(tmp_path: Path) -> None:
    done = run("--inventory", str(INVENTORIES / "h200.json"), "examples", out=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    shapes = written(tmp_path, "shapes.json")
    assert shapes["status"] == "ok", shapes
    split = shapes["estimates"]["llama-3.1-70b-split"]
    assert split["weights"] == sum(shapes["expected"]["llama-3.1-70b-split"]["shards"])
    assert split["weights"] == llama_70b_q4_k_m_bytes() == 42_512_531_712  # the published file: 42.5 GB
    assert split["kv_cache"] == 80 * 8 * 2 * 128 * 2 * 8192 * 8  # layers, KV heads, K+V, head, f16, tokens
    assert shapes["estimates"]["llama-3.1-8b-draft"]["draft"] > 0
    assert shapes["estimates"]["llama-3.1-8b-lora"]["adapters"] > 0
    rows = [line for line in done.stdout.splitlines() if line.startswith("llama-3.1-")]
    assert len(rows) >= 3 and all("GPU 0 (NVIDIA H200)  140.40      139.80" in row for row in rows[:3])
    parts = "39.59 20.00 0.00 0.00 0.00 0.50 60.09 GPU 0 (NVIDIA H200) 140.40 139.80 42.8%"  # weights ..
    assert rows[0].split() == ["llama-3.1-70b-split", *parts.split()]
    assert "fits an 80 GiB H100 (79.05 GiB free of 79.65); on this inventory: placed on GPU 0" in done.stdout
    assert shapes["files"]["on_disk"] < 2**20 < 40 * GiB < shapes["files"]["bytes"]  # sparse


def test_shapes_pending_where_the_estimate_exceeds_the_free_memory(tmp_path: Path) -> None:
    """The recorded H200 with 40 GiB free: the 70B (60.1 GiB) waits, both 8B models fit."""
    machine = Inventory.from_json((INVENTORIES / "h200.json").read_text())
    usage = tuple(replace(u, memory_free=40 * GiB) for u in machine.usage)
    smaller = tmp_path / "h200-40g.json"
    smaller.write_text(replace(machine, usage=usage).to_json())
    done = run("--inventory", str(smaller), "examples", out=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    shapes = written(tmp_path, "shapes.json")
    assert shapes["status"] == "ok", shapes
    assert [row["gpu"] for row in shapes["placed"]] == [None, "GPU 0 (NVIDIA H200)", "GPU 0 (NVIDIA H200)"]
    assert (
        "llama-3.1-70b-split Pending: needs 1 GPU with 60.1 GiB free; best is GPU 0 with 40.0 GiB free"
        in done.stdout
    )
    assert "fits an 80 GiB H100 (79.05 GiB free of 79.65); on this inventory: Pending here" in done.stdout


def test_shapes_refuses_an_adapter_of_another_base(
    shapes: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files go through the manifest loader's checks: LoRA adapters shaped for the 1B are
    refused for the 8B, and the part fails saying so."""
    shaped = shapes.lora_tensors
    monkeypatch.setattr(shapes, "lora_tensors", lambda _, rank: shaped(shapes.LLAMA_1B, rank))
    result = shapes.shapes_part(Inventory.from_json((INVENTORIES / "h200.json").read_text()))
    assert result["status"] == "failed"
    assert result["why"].startswith("InvalidManifests")
    assert "has incorrect shape (hint: maybe wrong base model?)" in result["why"]


def test_shapes_fails_where_the_estimate_misses_a_shard(
    shapes: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check could fail: expected shards that are not what the estimate read."""
    write = shapes.write_models

    def one_more_shard(models: Path) -> Any:
        expected = write(models)
        expected["llama-3.1-70b-split"]["shards"].append(1)
        return expected

    monkeypatch.setattr(shapes, "write_models", one_more_shard)
    result = shapes.shapes_part(Inventory.from_json((INVENTORIES / "h200.json").read_text()))
    assert result["why"] == "failed: 70B weights = the sum of its 3 shards' tensor bytes"
