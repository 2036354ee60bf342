"""The NVML inventory, driven through the real adapter by a replay of recorded NVML output.

``NvmlReplay`` (nvml_replay.py) stands in for the pynvml module, answering from the recorded H200
snapshot (tests/fixtures/nvml, a copy of ../shared/fixtures/nvml) or from synthetic machines made
from it. The synthetic inventories are also kept as JSON in tests/fixtures/inventories for the
placement tests; ``PYTHONPATH=.:tests python tests/gpus/test_inventory.py`` rewrites them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from controller.gpus.inventory import GpuProcess, Inventory
from controller.gpus.nvml import read_inventory
from gpus.nvml_replay import (
    NOT_SUPPORTED,
    SMI_CSV,
    Answers,
    EnergyCounter,
    NvmlReplay,
    load_snapshot,
    machine,
    synthetic,
)

REPO = Path(__file__).resolve().parents[2]
INVENTORIES = REPO / "tests" / "fixtures" / "inventories"
GiB = 1024**3


def write_inventories() -> None:
    INVENTORIES.mkdir(parents=True, exist_ok=True)
    for name, data in synthetic(load_snapshot()).items():
        (INVENTORIES / f"{name}.json").write_text(read_inventory(NvmlReplay(data)).to_json() + "\n")


# --- tests ------------------------------------------------------------------------------------------------


def test_recorded_h200_through_the_adapter() -> None:
    snapshot = load_snapshot()
    replay = NvmlReplay(snapshot)
    inv = read_inventory(replay)
    assert inv.reason == ""
    assert inv.driver_version == "580.159.04"
    assert inv.cuda_driver_version == 13000
    (gpu,) = inv.gpus
    assert (gpu.index, gpu.uuid, gpu.name) == (0, "GPU-871072ce-376e-fa8a-c05d-72f91309233f", "NVIDIA H200")
    assert gpu.memory_total == 150_754_820_096
    assert gpu.compute_capability == (9, 0)
    assert gpu.mig_mode == "disabled"
    assert gpu.mig_devices == ()
    usage = inv.usage_of(gpu.uuid)
    assert usage is not None
    assert (usage.memory_free, usage.memory_used, usage.utilization) == (150_109_880_320, 644_939_776, 0)
    assert usage.processes == ()
    assert replay.calls == ["nvmlInit", "nvmlShutdown"]


def test_matches_nvidia_smi_csv() -> None:
    """nvidia-smi's numbers for the same GPU, in MiB: the total exactly, free to its rounding."""
    inv = read_inventory(NvmlReplay(load_snapshot()))
    with SMI_CSV.open() as f:
        (row,) = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]
    gpu = inv.gpus[0]
    usage = inv.usage_of(gpu.uuid)
    assert usage is not None and usage.memory_free is not None and gpu.memory_total is not None
    assert (int(row["index"]), row["uuid"], row["name"]) == (gpu.index, gpu.uuid, gpu.name)
    assert gpu.memory_total == int(row["memory.total [MiB]"].split()[0]) * 1024**2
    assert abs(usage.memory_free / 1024**2 - int(row["memory.free [MiB]"].split()[0])) < 1
    assert row["mig.mode.current"] == "Disabled" and gpu.mig_mode == "disabled"


def test_failed_query_is_none_and_noted_never_guessed() -> None:
    snapshot = load_snapshot()
    snapshot["devices"][0]["nvmlDeviceGetCudaComputeCapability"] = (
        "NVMLError_NoPermission: Insufficient Permissions"
    )
    snapshot["devices"][0]["nvmlDeviceGetMigMode"] = "NVMLError_NotSupported: Not Supported"
    snapshot["devices"][0]["nvmlDeviceGetUtilizationRates"] = "NVMLError_Unknown: Unknown Error"
    inv = read_inventory(NvmlReplay(snapshot))
    gpu = inv.gpus[0]
    assert gpu.compute_capability is None
    assert gpu.mig_mode == "unsupported"  # NotSupported is an answer: this GPU has no MIG
    assert inv.usage[0].utilization is None
    assert inv.notes == (
        "GPU 0: nvmlDeviceGetCudaComputeCapability: Insufficient Permissions",
        "GPU 0: nvmlDeviceGetUtilizationRates: Unknown Error",
    )


@pytest.mark.parametrize(
    ("init_error", "reason"),
    [
        ("NVMLError_LibraryNotFound: NVML Shared Library Not Found", "libnvidia-ml.so.1 not found"),
        ("NVMLError_DriverNotLoaded: Driver Not Loaded", "the NVIDIA driver is not loaded"),
        ("NVMLError_NoPermission: Insufficient Permissions", "Insufficient Permissions"),
    ],
)
def test_init_failure_is_an_empty_inventory_with_a_reason(init_error: str, reason: str) -> None:
    replay = NvmlReplay(load_snapshot(), init_error=init_error)
    inv = read_inventory(replay)
    assert inv.gpus == () and inv.usage == ()
    assert inv.reason.startswith("NVML unavailable: ") and reason in inv.reason
    assert replay.calls == ["nvmlInit"]  # nothing to shut down after a failed init


def test_this_machine_without_a_driver() -> None:
    """The real pynvml (if installed) on a machine without NVIDIA's library: no GPUs, said plainly."""
    inv = read_inventory()
    if inv.gpus:
        pytest.skip("this machine has GPUs")
    assert inv.reason.startswith("NVML unavailable: ")


def test_zero_gpus() -> None:
    inv = read_inventory(NvmlReplay(machine(load_snapshot(), [])))
    assert inv.gpus == () and inv.reason == "NVML reports no GPUs"


def test_eight_gpus_with_processes() -> None:
    inv = read_inventory(NvmlReplay(synthetic(load_snapshot())["h200x8"]))
    assert [g.index for g in inv.gpus] == list(range(8))
    assert len({g.uuid for g in inv.gpus}) == 8
    usage = inv.usage_of(inv.gpus[3].uuid)
    assert usage is not None and usage.processes == (GpuProcess(1003, 30 * GiB),)
    assert usage.memory_free == 150_109_880_320 - 30 * GiB


def test_process_memory_unknown_stays_none() -> None:
    inv = read_inventory(NvmlReplay(synthetic(load_snapshot())["h200x2-foreign"]))
    usage = inv.usage_of(inv.gpus[1].uuid)
    assert usage is not None and usage.processes == (GpuProcess(777, None),)


def test_mig_devices_are_listed_with_their_own_memory() -> None:
    inv = read_inventory(NvmlReplay(synthetic(load_snapshot())["h200-mig"]))
    gpu = inv.gpus[0]
    assert gpu.mig_mode == "enabled"
    assert [(m.index, m.name, m.memory_total) for m in gpu.mig_devices] == [
        (0, "NVIDIA H200 MIG 3g.71gb", 71 * GiB),
        (2, "NVIDIA H200 MIG 2g.35gb", 35 * GiB),
        (3, "NVIDIA H200 MIG 1g.18gb", int(17.75 * GiB)),
    ]
    mig = inv.usage_of(gpu.mig_devices[1].uuid)
    assert mig is not None and mig.memory_free == 15 * GiB and mig.utilization is None
    assert inv.gpus[1].mig_mode == "disabled"
    assert "MIG 0/0: nvmlDeviceGetUtilizationRates: Not Supported" in inv.notes


def test_json_round_trip() -> None:
    for data in synthetic(load_snapshot()).values():
        inv = read_inventory(NvmlReplay(data))
        assert Inventory.from_json(inv.to_json()) == inv


def test_bad_json_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="not an inventory document"):
        Inventory.from_json('{"gpus": [{"index": 0}]}')


@pytest.mark.parametrize("name", ["h200", "h200x4", "h200x8", "h200x2-foreign", "h200-mig"])
def test_inventory_fixture_files_are_current(name: str) -> None:
    """The JSON the placement tests load is what the adapter makes of the synthetic machines."""
    expected = read_inventory(NvmlReplay(synthetic(load_snapshot())[name])).to_json() + "\n"
    assert (INVENTORIES / f"{name}.json").read_text() == expected, (
        "run: PYTHONPATH=.:tests python tests/gpus/test_inventory.py"
    )


if __name__ == "__main__":
    write_inventories()
    print(f"wrote {sorted(p.name for p in INVENTORIES.glob('*.json'))}")


def test_gpus_table_shows_missing_values_as_dashes() -> None:
    from controller.placement.report import gpus_json, gpus_table

    inv = read_inventory(NvmlReplay(synthetic(load_snapshot())["h200x2-foreign"]))
    lines = gpus_table(inv).splitlines()
    assert lines[0].split() == [
        "GPU",
        "NAME",
        "UUID",
        "MEMORY",
        "FREE",
        "USED",
        "UTIL",
        "CC",
        "MIG",
        "PROCESSES",
    ]
    assert lines[1].endswith("140.4 GiB  39.8 GiB   100.6 GiB  0%    9.0  disabled  pid 4242 (100.0 GiB)")
    assert lines[2].endswith("pid 777 (-)")
    assert lines[3] == "driver 580.159.04, CUDA 13.0"
    assert Inventory.from_json(gpus_json(inv)) == inv
    empty = Inventory(reason="NVML unavailable: libnvidia-ml.so.1 not found")
    assert gpus_table(empty) == "No GPUs: NVML unavailable: libnvidia-ml.so.1 not found"


# --- power and the energy counter -------------------------------------------------------------------


def test_recorded_power_and_no_recorded_energy_counter() -> None:
    """The snapshot's nvmlDeviceGetPowerUsage (129254 mW); the counter was not recorded: None."""
    inv = read_inventory(NvmlReplay(load_snapshot()))
    usage = inv.usage[0]
    assert (usage.power_w, usage.energy_mj) == (129.254, None)
    assert inv.notes == ()  # NotSupported is an answer for power and energy, not a failure


def test_energy_counter_advances_between_reads() -> None:
    snapshot = load_snapshot()
    snapshot["devices"][0]["nvmlDeviceGetTotalEnergyConsumption"] = EnergyCounter(
        5_000_000, watts=129.254, seconds=5
    )
    replay = NvmlReplay(snapshot)
    first, second = read_inventory(replay), read_inventory(replay)
    assert (first.usage[0].energy_mj, second.usage[0].energy_mj) == (5_000_000, 5_646_270)


def test_power_and_energy_failures_other_than_not_supported_are_noted() -> None:
    snapshot = load_snapshot()
    record = snapshot["devices"][0]
    record["nvmlDeviceGetPowerUsage"] = NOT_SUPPORTED
    record["nvmlDeviceGetTotalEnergyConsumption"] = Answers("NVMLError_Unknown: Unknown Error", 42)
    replay = NvmlReplay(snapshot)
    failed, then = read_inventory(replay), read_inventory(replay)
    assert (failed.usage[0].power_w, failed.usage[0].energy_mj) == (None, None)
    assert failed.notes == ("GPU 0: nvmlDeviceGetTotalEnergyConsumption: Unknown Error",)
    assert then.usage[0].energy_mj == 42 and then.notes == ()


def test_mig_devices_have_no_power_of_their_own() -> None:
    inv = read_inventory(NvmlReplay(synthetic(load_snapshot())["h200-mig"]))
    gpu = inv.gpus[0]
    assert inv.usage_of(gpu.uuid) is not None and inv.usage_of(gpu.uuid).power_w == 129.254  # type: ignore[union-attr]
    assert all(inv.usage_of(m.uuid).power_w is None for m in gpu.mig_devices)  # type: ignore[union-attr]


def test_inventory_json_without_power_fields_still_reads() -> None:
    """Inventories written before power and energy were read (e.g. by an older gpu-check)."""
    old = '{"gpus": [], "usage": [{"uuid": "GPU-x", "memory_free": 1, "memory_used": 2, "utilization": 3}]}'
    assert Inventory.from_json(old).usage[0].energy_mj is None
