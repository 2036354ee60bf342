"""The energy meter, fed by the real NVML adapter reading the recorded H200 (tests/gpus/
nvml_replay.py) with an energy counter that advances between reads: exclusive and shared GPUs,
power x time without a counter, a counter that resets, no tokens, no GPU; /v1/gpus, the metrics,
the sampling task and the `modelctl status` lines."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from gpus.nvml_replay import (
    Answers,
    EnergyCounter,
    GiB,
    NvmlReplay,
    device,
    load_snapshot,
    machine,
    proc,
    synthetic,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.api.gpus import add_routes
from controller.cli.render import render_table
from controller.errors import RuntimeUnavailable
from controller.gpus.inventory import Inventory
from controller.gpus.nvml import read_inventory
from controller.runtime.observed import ObservedContainer
from controller.telemetry.energy import (
    EnergyCollector,
    EnergyMeter,
    Owner,
    Owners,
    owners_of,
    owners_seen,
    run_energy,
)

WATTS = 129.254  # the recorded H200's nvmlDeviceGetPowerUsage, 129254 mW
STEP_S = 5.0
PER_STEP_J = WATTS * STEP_S  # 646.27 J between two samples
SMOL = Owner("c-smollm2-0", "smollm2", 0, (4242,))
QWEN = Owner("c-qwen-0", "qwen", 0, (5151,))


def h200_with_counter(start_mj: int = 9_000_000) -> NvmlReplay:
    """The recorded H200 whose energy counter advances by 129.254 W x 5 s between reads."""
    snapshot = load_snapshot()
    snapshot["devices"][0]["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(
        start_mj, watts=WATTS, seconds=STEP_S
    )
    return NvmlReplay(snapshot)


def sampled(meter: EnergyMeter, nvml: NvmlReplay, owners: Owners, times: list[float]) -> list[Inventory]:
    """``meter.sample`` at each time, with a fresh read through the adapter each time."""
    reads = []
    for t in times:
        inventory = read_inventory(nvml)
        meter.sample(t, inventory, owners)
        reads.append(inventory)
    return reads


def test_exclusive_gpu_gets_every_joule_of_its_counter() -> None:
    meter = EnergyMeter()
    first, *_ = sampled(meter, h200_with_counter(), {"0": [SMOL]}, [0.0, 5.0, 10.0])
    assert first.usage[0].energy_mj == 9_000_000  # the counter really came through the adapter
    assert meter.joules_total == {("smollm2", 0, "0"): pytest.approx(2 * PER_STEP_J)}
    for t, total in [(0.0, 1000), (5.0, 1040), (10.0, 1100)]:
        meter.tokens(t, "smollm2", total)
    assert meter.joules_per_token("smollm2") == pytest.approx(2 * PER_STEP_J / 100)  # 12.93 J/token
    assert meter.status() == {
        "available": True,
        "reason": "",
        "window_s": 300.0,
        "models": [
            {
                "model": "smollm2",
                "joules": pytest.approx(2 * PER_STEP_J),
                "joules_per_token": pytest.approx(12.9254),
                "output_tokens": 100,
                "basis": "exclusive",
            }
        ],
    }


def test_the_window_counts_joules_and_tokens_over_the_same_seconds() -> None:
    """Joules before the first token reading, or older than the window, do not count."""
    meter = EnergyMeter(window_s=15.0)
    nvml = h200_with_counter()
    sampled(meter, nvml, {"0": [SMOL]}, [0.0, 5.0, 10.0])  # 2 steps before the gateway is read
    meter.tokens(10.0, "smollm2", 500)
    sampled(meter, nvml, {"0": [SMOL]}, [15.0, 20.0, 25.0])
    meter.tokens(25.0, "smollm2", 530)
    assert meter.window("smollm2") == (pytest.approx(3 * PER_STEP_J), 30)  # (10, 25]
    sampled(meter, nvml, {"0": [SMOL]}, [30.0, 35.0])
    meter.tokens(35.0, "smollm2", 545)
    assert meter.window("smollm2") == (pytest.approx(3 * PER_STEP_J), 45)  # (20, 35]: 25, 30, 35


def test_a_shared_gpu_is_split_equally_and_says_so() -> None:
    meter = EnergyMeter()
    sampled(meter, h200_with_counter(), {"0": [SMOL, QWEN]}, [0.0, 5.0])
    assert meter.joules_total == {
        ("qwen", 0, "0"): pytest.approx(PER_STEP_J / 2),
        ("smollm2", 0, "0"): pytest.approx(PER_STEP_J / 2),
    }
    assert [r["basis"] for r in meter.status()["models"]] == ["shared: 1/2 of GPU 0"] * 2


def test_two_replicas_of_one_model_on_one_gpu_are_exact_for_the_model() -> None:
    meter = EnergyMeter()
    second = Owner("c-smollm2-1", "smollm2", 1, (4343,))
    sampled(meter, h200_with_counter(), {"0": [SMOL, second]}, [0.0, 5.0])
    assert meter.joules_total[("smollm2", 1, "0")] == pytest.approx(PER_STEP_J / 2)
    (row,) = meter.status()["models"]
    assert (row["joules"], row["basis"]) == (pytest.approx(PER_STEP_J), "exclusive")


def test_mig_devices_of_one_gpu_share_its_energy() -> None:
    data = synthetic(load_snapshot())["h200-mig"]
    data["devices"][0]["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(0, watts=WATTS, seconds=STEP_S)
    mig_a, mig_b = (
        m["nvmlDeviceGetUUID"] for m in data["devices"][0]["nvmlDeviceGetMigDeviceHandleByIndex"][::2]
    )
    meter = EnergyMeter()
    sampled(meter, NvmlReplay(data), {mig_a: [SMOL], mig_b: [QWEN]}, [0.0, 5.0])
    assert meter.joules_total == {
        ("qwen", 0, "0"): pytest.approx(PER_STEP_J / 2),
        ("smollm2", 0, "0"): pytest.approx(PER_STEP_J / 2),
    }


def test_each_gpu_of_a_model_keeps_its_own_basis() -> None:
    """GPU 0 to smollm2 alone, GPU 1 shared with qwen: per GPU, in the labels and the basis."""
    base = load_snapshot()
    devices = [device(base["devices"][0], i) for i in range(2)]
    for i, record in enumerate(devices):
        record["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(i * 10**6, watts=WATTS, seconds=STEP_S)
    meter = EnergyMeter()
    sampled(meter, NvmlReplay(machine(base, devices)), {"0": [SMOL], "1": [SMOL, QWEN]}, [0.0, 5.0])
    assert meter.joules_total[("smollm2", 0, "0")] == pytest.approx(PER_STEP_J)
    assert meter.joules_total[("smollm2", 0, "1")] == pytest.approx(PER_STEP_J / 2)
    rows = {r["model"]: r for r in meter.status()["models"]}
    assert rows["smollm2"]["basis"] == "GPU 0 exclusive; shared: 1/2 of GPU 1"
    assert rows["smollm2"]["joules"] == pytest.approx(1.5 * PER_STEP_J)
    assert rows["qwen"]["basis"] == "shared: 1/2 of GPU 1"


def test_without_a_counter_power_times_seconds_stands_in_and_says_so() -> None:
    """The recorded snapshot has no counter (NotSupported): its 129.254 W times the 5 s between."""
    meter = EnergyMeter()
    (first, _) = sampled(meter, NvmlReplay(load_snapshot()), {"0": [SMOL]}, [0.0, 5.0])
    assert (first.usage[0].energy_mj, first.usage[0].power_w) == (None, WATTS)
    assert meter.joules_total == {("smollm2", 0, "0"): pytest.approx(PER_STEP_J)}
    assert meter.status()["models"][0]["basis"] == "exclusive (power x time: no energy counter)"


def test_power_that_changes_is_averaged_over_the_interval() -> None:
    snapshot = load_snapshot()
    snapshot["devices"][0]["nvmlDeviceGetPowerUsage"] = Answers(100_000, 300_000)
    meter = EnergyMeter()
    sampled(meter, NvmlReplay(snapshot), {"0": [SMOL]}, [0.0, 4.0])
    assert meter.joules_total[("smollm2", 0, "0")] == pytest.approx(200.0 * 4.0)


def test_a_counter_that_goes_backwards_gives_no_joules_for_that_interval() -> None:
    snapshot = load_snapshot()
    snapshot["devices"][0]["nvmlDeviceGetTotalEnergyConsumption"] = Answers(
        10_000_000, 11_000_000, 500, 1_500
    )  # +1000 J, a driver reload (back to 500 mJ), +1 J
    meter = EnergyMeter()
    sampled(meter, NvmlReplay(snapshot), {"0": [SMOL]}, [0.0, 5.0, 10.0, 15.0])
    assert meter.joules_total[("smollm2", 0, "0")] == pytest.approx(1001.0)
    assert all(j >= 0 for _, j in meter.models["smollm2"].joules)


def test_no_tokens_in_the_window_is_none_never_a_division_by_zero() -> None:
    meter = EnergyMeter()
    nvml = h200_with_counter()
    sampled(meter, nvml, {"0": [SMOL]}, [0.0, 5.0])
    assert meter.joules_per_token("smollm2") is None  # the gateway's counts never came
    meter.tokens(5.0, "smollm2", 700)
    sampled(meter, nvml, {"0": [SMOL]}, [10.0])
    meter.tokens(10.0, "smollm2", 700)  # read, but nothing generated
    assert meter.joules_per_token("smollm2") is None
    (row,) = meter.status()["models"]
    assert (row["joules_per_token"], row["output_tokens"], row["joules"]) == (
        None,
        0,
        pytest.approx(PER_STEP_J),
    )


def test_counts_that_stopped_coming_are_not_divided_into() -> None:
    meter = EnergyMeter(window_s=10.0)
    nvml = h200_with_counter()
    meter.tokens(0.0, "smollm2", 0)
    sampled(meter, nvml, {"0": [SMOL]}, [0.0, 5.0])
    meter.tokens(5.0, "smollm2", 20)
    assert meter.joules_per_token("smollm2") == pytest.approx(PER_STEP_J / 20)
    sampled(meter, nvml, {"0": [SMOL]}, [10.0, 15.0, 20.0])  # the scraper lost the gateway
    assert meter.joules_per_token("smollm2") is None


def test_a_gateway_restart_counts_its_new_tokens_not_negative_ones() -> None:
    meter = EnergyMeter()
    sampled(meter, h200_with_counter(), {"0": [SMOL]}, [0.0, 5.0, 10.0])
    for t, total in [(0.0, 5000), (5.0, 5100), (10.0, 30)]:
        meter.tokens(t, "smollm2", total)
    assert meter.window("smollm2")[1] == 130


def test_cpu_only_models_have_no_row_and_their_tokens_no_ratio() -> None:
    meter = EnergyMeter()
    sampled(meter, h200_with_counter(), {"0": [SMOL]}, [0.0, 5.0])
    meter.tokens(0.0, "cpu-model", 0)
    meter.tokens(5.0, "cpu-model", 50)
    assert [r["model"] for r in meter.status()["models"]] == ["smollm2"]
    assert meter.joules_per_token("cpu-model") is None


def test_a_gpu_without_our_replicas_is_attributed_to_no_one() -> None:
    meter = EnergyMeter()
    sampled(meter, h200_with_counter(), {"1": [SMOL]}, [0.0, 5.0])  # no GPU 1 on this machine
    assert meter.joules_total == {}
    assert meter.status() == {
        "available": True,
        "reason": "no replica of this controller runs on a GPU",
        "window_s": 300.0,
        "models": [],
    }


@pytest.mark.parametrize(
    ("replay", "reason"),
    [
        (
            lambda: NvmlReplay(
                load_snapshot(), init_error="NVMLError_LibraryNotFound: NVML Shared Library Not Found"
            ),
            "no NVIDIA GPU (NVML unavailable: libnvidia-ml.so.1 not found)",
        ),
        (lambda: NvmlReplay(machine(load_snapshot(), [])), "no NVIDIA GPU (NVML reports no GPUs)"),
    ],
)
def test_no_gpu_means_no_figures_and_says_why(replay: Callable[[], NvmlReplay], reason: str) -> None:
    meter = EnergyMeter()
    sampled(meter, replay(), {"0": [SMOL]}, [0.0, 5.0])
    meter.tokens(5.0, "smollm2", 100)
    assert meter.status() == {"available": False, "reason": reason, "window_s": 300.0, "models": []}
    assert meter.gpus() == {"available": False, "reason": reason, "gpus": []}
    assert meter.joules_total == {} and meter.joules_per_token("smollm2") is None


def test_before_the_first_sample_nothing_is_claimed() -> None:
    meter = EnergyMeter()
    assert meter.status()["available"] is False and "no GPU reading yet" in meter.status()["reason"]
    assert meter.gpus()["available"] is False


def test_gpus_with_neither_counter_nor_power_are_no_figures() -> None:
    snapshot = load_snapshot()
    snapshot["devices"][0]["nvmlDeviceGetPowerUsage"] = "NVMLError_NotSupported: Not Supported"
    meter = EnergyMeter()
    sampled(meter, NvmlReplay(snapshot), {"0": [SMOL]}, [0.0, 5.0])
    assert meter.status()["reason"] == "NVML gives neither an energy counter nor a power reading for any GPU"
    assert meter.status()["available"] is False and meter.joules_total == {}


# --- which replicas own which GPU ------------------------------------------------------------------


def container(
    name: str, model: str, replica: int, gpus: tuple[str, ...], state: str = "running"
) -> ObservedContainer:
    return ObservedContainer(
        f"id-{name}", name, model, replica, "llamacpp", "h", state, None, "10.0.0.2", 8080, "/health", 4, "",
        gpus=gpus,
    )  # fmt: skip


def test_owners_are_the_running_gpu_containers_with_their_host_pids() -> None:
    observed = [
        container("c-smollm2-0", "smollm2", 0, ("0",)),
        container("c-big-0", "big", 0, ("0", "1")),
        container("c-cpu-0", "cpu", 0, ()),
        container("c-gone-0", "gone", 0, ("1",), state="exited"),
    ]
    pids = {"id-c-smollm2-0": (4242, 4243), "id-c-big-0": (6000,)}
    owners = owners_of(observed, lambda cid: pids.get(cid, ()))
    assert owners == {
        "0": [Owner("c-smollm2-0", "smollm2", 0, (4242, 4243)), Owner("c-big-0", "big", 0, (6000,))],
        "1": [Owner("c-big-0", "big", 0, (6000,))],
    }


# --- /v1/gpus --------------------------------------------------------------------------------------


async def test_gpus_route_shows_ours_per_replica_foreign_and_free(aiohttp_client: Any) -> None:
    """GPU 0: 100 GiB by smollm2's pid, 2 GiB by a process not ours; GPU 1: idle, no counter."""
    base = load_snapshot()
    gpu0 = device(base["devices"][0], 0, used=102 * GiB, procs=[proc(4242, 100), proc(777, 2)])
    gpu0["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(7_000_000, watts=WATTS, seconds=STEP_S)
    gpu1 = device(base["devices"][0], 1)
    meter = EnergyMeter()
    sampled(meter, NvmlReplay(machine(base, [gpu0, gpu1])), {"0": [SMOL]}, [0.0, 5.0])
    app = web.Application()
    add_routes(app, meter)
    client = await aiohttp_client(app)
    answer = await (await client.get("/v1/gpus")).json()
    assert answer["available"] is True and answer["reason"] == ""
    first, second = answer["gpus"]
    assert first == {
        "index": 0,
        "uuid": gpu0["nvmlDeviceGetUUID"],
        "name": "NVIDIA H200",
        "memory_total": 150_754_820_096,
        "memory_used": 644_939_776 + 102 * GiB,
        "memory_free": 150_109_880_320 - 102 * GiB,
        "foreign_bytes": 2 * GiB,
        "ours": [{"container": "c-smollm2-0", "model": "smollm2", "replica": 0, "bytes": 100 * GiB}],
        "utilization_pct": 0,
        "power_w": WATTS,
        "energy_j": pytest.approx(7_000_000 / 1000 + PER_STEP_J),  # the second read's counter
    }
    assert (second["index"], second["ours"], second["foreign_bytes"]) == (1, [], 0)
    assert (second["power_w"], second["energy_j"]) == (WATTS, None)


async def test_a_replica_nvml_lists_without_memory_has_unknown_bytes(aiohttp_client: Any) -> None:
    base = load_snapshot()
    gpu0 = device(base["devices"][0], 0, procs=[{"pid": 4242, "usedGpuMemory": None}])
    meter = EnergyMeter()
    sampled(meter, NvmlReplay(machine(base, [gpu0])), {"0": [SMOL, QWEN]}, [0.0])
    app = web.Application()
    add_routes(app, meter)
    client = await aiohttp_client(app)
    (gpu,) = (await (await client.get("/v1/gpus")).json())["gpus"]
    assert [(o["container"], o["bytes"]) for o in gpu["ours"]] == [("c-qwen-0", None), ("c-smollm2-0", None)]


# --- Prometheus --------------------------------------------------------------------------------------


def scrape(meter: EnergyMeter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnergyCollector(meter))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_carry_joules_per_replica_and_gpu_and_joules_per_token_where_known() -> None:
    meter = EnergyMeter()
    sampled(meter, h200_with_counter(), {"0": [SMOL, QWEN]}, [0.0, 5.0])
    meter.tokens(0.0, "smollm2", 0)
    meter.tokens(5.0, "smollm2", 10)
    samples = scrape(meter)
    joules = "modelctl_energy_joules_total"
    assert samples[(joules, (("gpu", "0"), ("model", "smollm2"), ("replica", "0")))] == pytest.approx(
        PER_STEP_J / 2
    )
    assert samples[(joules, (("gpu", "0"), ("model", "qwen"), ("replica", "0")))] == pytest.approx(
        PER_STEP_J / 2
    )
    per_token = {k: v for k, v in samples.items() if k[0] == "modelctl_energy_joules_per_token"}
    assert per_token == {
        ("modelctl_energy_joules_per_token", (("model", "smollm2"),)): pytest.approx(PER_STEP_J / 2 / 10)
    }  # qwen: no tokens counted, so no sample rather than a made-up one


async def test_the_controller_api_serves_energy_gpus_and_metrics(aiohttp_client: Any) -> None:
    """What create_api serves from the meter: /v1/status's energy, /v1/gpus, /metrics."""
    from controller.api import create_api
    from controller.endpoints.store import EndpointStore

    meter = EnergyMeter()
    sampled(meter, h200_with_counter(), {"0": [SMOL]}, [0.0, 5.0])
    client = await aiohttp_client(create_api(EndpointStore(), energy=meter))
    status = await (await client.get("/v1/status")).json()
    assert status["energy"]["models"][0]["joules"] == pytest.approx(PER_STEP_J)
    gpus = await (await client.get("/v1/gpus")).json()
    assert [g["ours"][0]["container"] for g in gpus["gpus"]] == ["c-smollm2-0"]
    text = await (await client.get("/metrics")).text()
    assert 'modelctl_energy_joules_total{gpu="0",model="smollm2",replica="0"} 646.27' in text
    assert "# TYPE modelctl_energy_joules_per_token gauge" in text
    assert "modelctl_controller_replicas" in text  # beside the reconciler's own


async def test_an_api_without_a_meter_says_there_is_no_reading(aiohttp_client: Any) -> None:
    from controller.api import create_api
    from controller.endpoints.store import EndpointStore

    client = await aiohttp_client(create_api(EndpointStore()))
    energy = (await (await client.get("/v1/status")).json())["energy"]
    assert energy["available"] is False and energy["reason"].startswith("no GPU reading yet")


# --- the sampling task -------------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], deadline_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not check():
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


async def test_run_energy_samples_through_the_adapter_until_cancelled() -> None:
    meter = EnergyMeter()
    nvml = h200_with_counter()
    times = iter(float(t) for t in range(0, 10_000, 5))
    task = asyncio.create_task(
        run_energy(
            meter, lambda: read_inventory(nvml), lambda: {"0": [SMOL]}, 0.001, clock=lambda: next(times)
        )
    )
    await eventually(lambda: meter.joules_total.get(("smollm2", 0, "0"), 0) >= 3 * PER_STEP_J)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    steps = meter.models["smollm2"].joules
    assert all(j == pytest.approx(PER_STEP_J) for _, j in steps)


async def test_run_energy_attributes_nothing_while_docker_is_away() -> None:
    meter = EnergyMeter()
    nvml = h200_with_counter()
    times = iter(float(t) for t in range(0, 10_000, 5))
    calls = {"n": 0}

    def owners() -> Owners:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeUnavailable("Docker engine unavailable: connection refused")
        return {"0": [SMOL]}

    task = asyncio.create_task(
        run_energy(meter, lambda: read_inventory(nvml), owners, 0.001, clock=lambda: next(times))
    )
    await eventually(lambda: "smollm2" in meter.models and len(meter.models["smollm2"].joules) >= 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # (0, 5]: Docker away at 5, attributed to no one; (5, 10]: to the replica on GPU 0 at 10
    assert meter.models["smollm2"].joules[0] == (10.0, pytest.approx(PER_STEP_J))


# --- modelctl status ---------------------------------------------------------------------------------

READY = {"model": "smollm2", "replica": 0, "state": "Ready", "restarts": 0, "endpoint": "http://10.0.0.2:8080",
         "container": "c-smollm2-0", "reason": ""}  # fmt: skip


def test_status_table_has_an_energy_line_per_model() -> None:
    meter = EnergyMeter()
    sampled(meter, h200_with_counter(), {"0": [SMOL, QWEN]}, [0.0, 5.0])
    meter.tokens(0.0, "smollm2", 0)
    meter.tokens(5.0, "smollm2", 200)
    text = render_table({"replicas": [READY], "models": [], "energy": meter.status()})
    assert text.splitlines()[-2:] == [
        "energy: qwen: 323.1 J over 5 min, no output tokens counted (shared: 1/2 of GPU 0)",
        "energy: smollm2: 1.62 J/token over 5 min (shared: 1/2 of GPU 0)",
    ]


def test_status_table_says_plainly_when_there_is_no_gpu() -> None:
    meter = EnergyMeter()
    sampled(
        meter,
        NvmlReplay(load_snapshot(), init_error="NVMLError_DriverNotLoaded: Driver Not Loaded"),
        {},
        [0.0],
    )
    text = render_table({"replicas": [READY], "models": [], "energy": meter.status()})
    assert (
        text.splitlines()[-1] == "energy: no NVIDIA GPU (NVML unavailable: the NVIDIA driver is not loaded)"
    )
    assert "energy" not in render_table({"replicas": [READY], "models": []})  # an older controller: no line


def test_owners_come_from_what_the_reconcile_pass_read() -> None:
    """The meter reuses the pass's containers and GPU processes by slot: no Docker call of its own."""
    on_gpu = ObservedContainer(
        "id-1", "c-smollm2-0", "smollm2", 0, "llamacpp", "h", "running", None, "10.0.0.2", 8080,
        "/health", 4, "", gpus=("0",),
    )  # fmt: skip
    gone = dataclasses.replace(on_gpu, id="id-2", name="c-old-0", model="old", state="exited", gpus=("0",))
    owners = owners_seen([on_gpu, gone], {("smollm2", 0): frozenset({4242, 17})})
    assert owners == {"0": [Owner("c-smollm2-0", "smollm2", 0, (17, 4242))]}
