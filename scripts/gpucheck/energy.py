"""Part 5, energy: NVML's energy counter and power of the GPU torch calls cuda:0, read every second
while a bf16 matmul loop runs on it (a CPU busy loop without torch), fed to the console's
EnergyMeter as the controller feeds it: joules, watts, J per matmul and per TFLOP, and checks that
the counter, the power readings and the meter agree.
"""

from __future__ import annotations

import json
import math
import os
import time
from functools import partial
from typing import Any

from controller.gpus.inventory import Inventory
from controller.gpus.nvml import read_inventory
from gpucheck.common import Result, cuda0_uuid, cuda_torch, gpu_of, judged, skipped

ENERGY_S = float(os.environ.get("MODELCTL_GPU_CHECK_ENERGY_S", "20"))
SAMPLE_S = 1.0
MATMUL_N = 8192  # bf16 square matrices: 2 * N^3 = 1.1 TFLOP per matmul
Load = Any  # Callable[[float], int]: run for about that many seconds, return the work units done


def energy_part(
    inventory: Inventory,
    *,
    live: bool,
    seconds: float = ENERGY_S,
    sample_s: float = SAMPLE_S,
    clock: Any = time.time,
) -> Result:
    if not live:
        return skipped("a recorded inventory: no GPU of this machine to measure")
    if not inventory.gpus:
        return skipped(f"no GPU ({inventory.reason or 'none found'})")
    torch = cuda_torch()
    steps = max(2, round(seconds / sample_s))
    run = partial(energy_run, steps=steps, sample_s=sample_s, clock=clock, read=read_inventory)
    if torch is None:
        what = "a CPU busy loop (torch with CUDA is missing: the GPU idles)"
        return run(inventory.gpus[0].index, busy_load, what, tflop_per_unit=None)
    what = f"a PyTorch bf16 {MATMUL_N}x{MATMUL_N} matmul loop on cuda:0"
    gpu = gpu_of(inventory, cuda0_uuid(torch))
    return run(gpu.index, matmul_load(torch), what, tflop_per_unit=2 * MATMUL_N**3 / 1e12)


def matmul_load(torch: Any) -> Load:
    a = torch.randn(MATMUL_N, MATMUL_N, device="cuda:0", dtype=torch.bfloat16)
    b, c = torch.randn_like(a), torch.empty_like(a)

    def run(seconds: float) -> int:
        done, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(10):
                torch.matmul(a, b, out=c)
            torch.cuda.synchronize()  # count finished matmuls only
            done += 10
        return done

    return run


def busy_load(seconds: float) -> int:
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(10_000))
        done += 1
    return done


def energy_meter() -> tuple[Any, str]:
    """The console's EnergyMeter and Owner, or None and why (its module needs prometheus_client)."""
    try:
        from controller.telemetry.energy import EnergyMeter, Owner
    except ImportError as exc:
        return None, f"{exc.name or exc} is not installed: the console's meter not checked"
    return (EnergyMeter(), Owner), ""


def energy_run(
    index: int,
    load: Load,
    what: str,
    *,
    tflop_per_unit: float | None,
    steps: int,
    sample_s: float,
    clock: Any,
    read: Any,
) -> Result:
    """``steps`` intervals of ``load`` on GPU ``index``, NVML read between them and fed to the meter."""
    made, missing = energy_meter()
    owners = {str(index): [made[1]("gpu-check", "matmul", 0, (os.getpid(),))]} if made else {}
    readings, work = [], 0
    for step in range(steps + 1):
        if step:
            work += load(sample_s)
        t, inventory = clock(), read()
        gpu = next(g for g in inventory.gpus if g.index == index)
        usage = inventory.usage_of(gpu.uuid)
        readings.append((t, usage.energy_mj if usage else None, usage.power_w if usage else None))
        if made:
            made[0].sample(t, inventory, owners)
            made[0].tokens(t, "matmul", work)
    result = energy_figures(readings, work, what, made[0] if made else None, missing, tflop_per_unit)
    print_energy(index, result)
    print(f"== inventory after\n{inventory.to_json()}\n")
    return result


def energy_figures(
    readings: list[tuple[float, int | None, float | None]],
    work: int,
    what: str,
    meter: Any,
    missing: str,
    tflop_per_unit: float | None,
) -> Result:
    """Joules and watts from the first and last readings; checks that the counter, the power
    readings and the meter agree, and that the matmul loop drew more than idle."""
    (t0, first_mj, idle_w), (t1, last_mj, _) = readings[0], readings[-1]
    elapsed = t1 - t0
    counter_j = (last_mj - first_mj) / 1000 if first_mj is not None and last_mj is not None else None
    loaded = [w for _, _, w in readings[1:] if w is not None]
    mean_w = sum(loaded) / len(loaded) if loaded else None
    counter_w = counter_j / elapsed if counter_j is not None and elapsed > 0 else None
    details: dict[str, Any] = {
        "load": what, "seconds": round(elapsed, 3), "work": work, "counter_j": counter_j,
        "counter_avg_w": counter_w, "power_w": {"idle": idle_w, "mean_loaded": mean_w, "readings": loaded},
    }  # fmt: skip
    checks = {
        "power or the counter read every time": all(e is not None or w is not None for _, e, w in readings)
    }
    if counter_j is not None:
        checks["the counter advanced"] = counter_j > 0
    if counter_w is not None and mean_w:
        checks["counter's average within 25% of the power readings"] = (
            abs(counter_w - mean_w) <= 0.25 * mean_w
        )
    if tflop_per_unit is not None and mean_w is not None and idle_w is not None:
        checks["more power under the matmul loop than idle"] = mean_w > idle_w
    if tflop_per_unit is not None and work:
        joules = counter_j if counter_j is not None else (mean_w or 0.0) * elapsed
        details["j_per_tflop"] = joules / (work * tflop_per_unit)
    if meter is None:
        return judged(checks, **details, meter=missing)
    status = meter.status()
    meter_j = sum(meter.joules_total.values())
    details["meter"] = {"joules": meter_j, "j_per_matmul": meter.joules_per_token("matmul"), "status": status}
    basis = status["models"][0]["basis"] if status["models"] else ""
    checks["the meter attributes the whole GPU to its one replica"] = basis.startswith("exclusive")
    if counter_j is not None:
        checks["the meter's joules are the counter's"] = math.isclose(meter_j, counter_j, rel_tol=1e-9)
    return judged(checks, **details)


def print_energy(index: int, result: Result) -> None:
    def watts(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} W"

    power = result["power_w"]
    counter = result["counter_j"]
    print(f"== energy: GPU {index} under {result['load']}, {result['seconds']:.1f} s, {result['work']} units")
    average = f"{watts(result['counter_avg_w'])} average"
    print("counter: not supported" if counter is None else f"counter: {counter:.1f} J, {average}")
    print(f"power: idle {watts(power['idle'])}, loaded mean {watts(power['mean_loaded'])}")
    meter = result["meter"]
    if isinstance(meter, str):
        print(f"meter: {meter}")
    else:
        per = "-" if meter["j_per_matmul"] is None else f"{meter['j_per_matmul']:.3f}"
        basis = meter["status"]["models"][0]["basis"] if meter["status"]["models"] else "-"
        print(f"meter: {meter['joules']:.1f} J to gpu-check ({basis}), {per} J per unit of work")
    if result.get("j_per_tflop") is not None:
        print(f"{result['j_per_tflop']:.3f} J per TFLOP")
    print(f"checks: {json.dumps(result['checks'])}\n")
