"""Placement as tables: requests + an inventory (the synthetic machines recorded from the H200 in
tests/fixtures/inventories) + what runs now -> devices per replica, or why it is Pending."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from controller.gpus.inventory import Gpu, GpuProcess, Inventory, Usage
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.place import Current, Placement, ReplicaRequest, place, requests_for

INVENTORIES = Path(__file__).resolve().parents[1] / "fixtures" / "inventories"
GiB = 1024**3
H200_TOTAL = 150_754_820_096
H200_FREE = 150_109_880_320
MIG_2G = "MIG-5e2b1c1a-0d6f-5c7e-9a41-8f3b2c1d0002"
MIG_1G = "MIG-5e2b1c1a-0d6f-5c7e-9a41-8f3b2c1d0003"
MIG_3G = "MIG-5e2b1c1a-0d6f-5c7e-9a41-8f3b2c1d0000"
PID_777_HOLDS = "; processes modelctl does not manage hold memory of unknown size there (pid 777)"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def machine(name: str) -> Inventory:
    return Inventory.from_json((INVENTORIES / f"{name}.json").read_text())


def req(model: str, num_gpus: int = 1, gib: float | None = None, *, fraction: float | None = None,
        engine: str = "llamacpp", replica: int = 0) -> ReplicaRequest:  # fmt: skip
    memory = fraction if fraction is not None else int((gib or 0) * GiB)
    return ReplicaRequest(model, replica, num_gpus, memory, engine)


def devices(placement: Placement) -> dict[str, tuple[str, ...]]:
    return {f"{a.model}-{a.replica}": a.devices for a in placement.assignments}


def reasons(placement: Placement) -> dict[str, str]:
    return {f"{p.model}-{p.replica}": p.reason for p in placement.pending}


def assert_never_oversubscribed(placement: Placement) -> None:
    """New claims fit live free memory; replicas kept in place are only held to the device's total."""
    kept = any(a.kept for a in placement.assignments)
    for unit in placement.units:
        assert unit.claimed <= (unit.total if kept else unit.available), unit
    for assignment in placement.assignments:
        assert len(set(assignment.devices)) == len(assignment.devices)


# --- the table ------------------------------------------------------------------------------------

CASES = [
    pytest.param("h200", [req("a", gib=40)], {"a-0": ("0",)}, {}, id="fits"),
    pytest.param(
        "h200",
        [req("a", gib=200)],
        {},
        {"a-0": "needs 1 GPU with 200.0 GiB free; best is GPU 0 with 139.8 GiB free"},
        id="does-not-fit",
    ),
    pytest.param(
        "h200",
        [req("a", fraction=0.45, engine="vllm", replica=r) for r in range(3)],
        {"a-0": ("0",), "a-1": ("0",)},
        {"a-2": "needs 1 GPU with 63.2 GiB free; best is GPU 0 with 13.4 GiB free"},
        id="shared-gpu-vllm-fractions",
    ),
    pytest.param(
        "h200x4",
        [req("tp2", 2, 100), req("small", gib=30)],
        {"tp2-0": ("2", "3"), "small-0": ("3",)},
        {},
        id="tensor-parallel-2-best-fit",
    ),
    pytest.param(
        "h200x4",
        [req("tp4", 4, 100), req("tp2", 2, 100)],
        {"tp4-0": ("0", "1", "2", "3")},
        {"tp2-0": "needs 2 GPUs with 100.0 GiB free each; best is GPU 0 with 39.8 GiB free"},
        id="tensor-parallel-4-then-full",
    ),
    pytest.param(
        "h200x4",
        [req("big", 8, 10)],
        {},
        {"big-0": "needs 8 GPUs; this machine has 4"},
        id="more-gpus-than-the-machine",
    ),
    pytest.param(
        "h200-mig",
        [req("m10", gib=10), req("m16", gib=16), req("m65", gib=65), req("tp", 2, 10)],
        {"m10-0": (MIG_2G,), "m16-0": (MIG_1G,), "m65-0": (MIG_3G,)},
        {"tp-0": "needs 2 GPUs; this machine has 1 (MIG devices cannot be combined)"},
        id="mig-devices-are-units",
    ),
    pytest.param(
        "h200x4",
        [req("a", gib=20, replica=r) for r in range(2)],
        {"a-0": ("3",), "a-1": ("2",)},
        {},
        id="replicas-spread-one-gpu-each",
    ),
    pytest.param(
        "h200x4",
        [req("tp", 2, 30, replica=r) for r in range(2)],
        {"tp-0": ("2", "3"), "tp-1": ("0", "1")},
        {},
        id="tensor-parallel-replicas-spread",
    ),
    pytest.param(
        "h200x4",
        [req(m, gib=30, replica=r) for m in ("a", "b") for r in range(2)],
        {"a-0": ("3",), "a-1": ("2",), "b-0": ("3",), "b-1": ("2",)},
        {},
        id="different-models-still-pack",
    ),
    pytest.param(
        "h200x2-foreign",
        [req("a", gib=30, replica=r) for r in range(2)],
        {"a-0": ("0",), "a-1": ("1",)},
        {},
        id="spread-over-a-half-full-gpu",
    ),
    pytest.param(
        "h200x2-foreign",
        [req("a", gib=60, replica=r) for r in range(2)],
        {"a-0": ("1",), "a-1": ("1",)},
        {},
        id="pack-when-only-one-gpu-fits",
    ),
    pytest.param(
        "h200-mig",
        [req("a", gib=10, replica=r) for r in range(5)],
        # another physical GPU first, then other MIG devices of a sibling's GPU, then pack
        {"a-0": (MIG_2G,), "a-1": ("1",), "a-2": (MIG_1G,), "a-3": (MIG_3G,), "a-4": (MIG_3G,)},
        {},
        id="mig-spread-gpus-then-devices-then-pack",
    ),
    pytest.param(
        "h200x2-foreign",
        [req("a", gib=60)],
        {"a-0": ("1",)},
        {},
        id="foreign-process-memory-is-taken",
    ),
    pytest.param(
        "h200x2-foreign",
        [req("a", 2, 60)],
        {},
        {
            "a-0": "needs 2 GPUs with 60.0 GiB free each; 1 has it, next best is GPU 0 with 39.8 GiB free; "
            "processes modelctl does not manage hold 100.0 GiB there (pid 4242)"
        },
        id="foreign-process-blocks-tensor-parallel",
    ),
]


@pytest.mark.parametrize(("inventory", "requests", "placed", "pending"), CASES)
def test_placement_table(
    inventory: str,
    requests: list[ReplicaRequest],
    placed: dict[str, tuple[str, ...]],
    pending: dict[str, str],
) -> None:
    placement = place(requests, machine(inventory))
    assert devices(placement) == placed
    assert reasons(placement) == pending
    assert_never_oversubscribed(placement)


def test_vllm_utilization_matches_its_share() -> None:
    placement = place(
        [req("half", fraction=0.5, engine="vllm"), req("bytes", gib=30, engine="vllm"), req("cpp", gib=30)],
        machine("h200"),
    )
    half, by_bytes, cpp = (placement.assignment((m, 0)) for m in ("half", "bytes", "cpp"))
    assert half is not None and by_bytes is not None and cpp is not None
    assert half.gpu_memory_utilization == 0.5 and half.memory == (H200_TOTAL // 2,)
    # 30 GiB of 140.4 GiB, rounded up to 4 decimals; the claim is what vLLM will take: util x total
    assert by_bytes.gpu_memory_utilization == 0.2137
    assert by_bytes.memory_per_gpu == -(-2137 * H200_TOTAL // 10_000) >= 30 * GiB
    assert cpp.gpu_memory_utilization is None and cpp.memory == (30 * GiB,)
    assert sum(u.claimed for u in placement.units) == half.memory[0] + by_bytes.memory[0] + 30 * GiB


def test_managed_processes_do_not_count_as_foreign() -> None:
    foreign = machine("h200x2-foreign")
    request = [req("a", gib=135)]
    assert reasons(place(request, foreign))["a-0"].endswith(
        "best is GPU 1 with 131.8 GiB free" + PID_777_HOLDS
    )
    assert devices(place(request, foreign, Current(managed_pids=frozenset({4242})))) == {"a-0": ("0",)}


def test_the_reason_names_memory_held_by_processes_modelctl_does_not_manage() -> None:
    """A process of someone else's holds 4 GiB: a replica that needs nearly the whole GPU waits, and
    says who holds the rest; the same pid as one of ours gives it back."""
    inv = one_gpu(free_gib=136, processes=(GpuProcess(1234, 4 * GiB),))
    assert reasons(place([req("a", gib=138)], inv)) == {
        "a-0": "needs 1 GPU with 138.0 GiB free; best is GPU 0 with 136.0 GiB free; "
        "processes modelctl does not manage hold 4.0 GiB there (pid 1234)"
    }
    assert devices(place([req("a", gib=138)], inv, Current(managed_pids=frozenset({1234})))) == {
        "a-0": ("0",)
    }


def test_unknown_process_memory_is_never_guessed_away() -> None:
    """GPU 1's process 777 reports no memory figure: its usage stays inside live 'used'."""
    inv = machine("h200x2-foreign")
    placement = place([req("a", gib=1)], inv, Current(managed_pids=frozenset({777})))
    assert placement.units[1].available == H200_FREE - 8 * GiB


# --- keeping what runs ----------------------------------------------------------------------------


def test_existing_replicas_stay_where_they_are() -> None:
    current = Current(
        {("a", 0): ("1",), ("b", 0): ("GPU-871072ce-376e-fa8a-c05d-72f91309233f"[:-4] + "0000",)}
    )
    placement = place([req("a", gib=10), req("b", gib=10), req("c", gib=10)], machine("h200x4"), current)
    # b was given by UUID; c packs beside a (best fit counts a's claim)
    assert devices(placement) == {"a-0": ("1",), "b-0": ("0",), "c-0": ("1",)}
    assert [a.kept for a in placement.assignments] == [True, True, False]


def test_a_new_replica_spreads_away_from_a_running_sibling() -> None:
    placement = place(
        [req("a", gib=10, replica=r) for r in range(2)], machine("h200x4"), Current({("a", 0): ("3",)})
    )
    assert devices(placement) == {"a-0": ("3",), "a-1": ("2",)}


def test_spread_replicas_leave_whole_gpus_for_a_big_model() -> None:
    """Two models of two replicas pack onto GPUs 3 and 2 (best fit); a tensor-parallel model that
    comes later still finds GPUs 0 and 1 whole."""
    small = [req(m, gib=30, replica=r) for m in ("a", "b") for r in range(2)]
    first = place(small, machine("h200x4"))
    running = Current({a.slot: a.devices for a in first.assignments})
    placement = place([*small, req("big", 2, 139)], machine("h200x4"), running)
    assert devices(placement)["big-0"] == ("0", "1")
    assert all(a.kept for a in placement.assignments if a.model != "big")


def test_the_qwen_example_does_not_put_both_replicas_on_one_mig_device() -> None:
    """examples/qwen-vllm-gpu.yaml (2 replicas, 45 % of a GPU each) on a MIG GPU beside a whole one:
    replica 0 takes the smallest MIG device (best fit), replica 1 the other physical GPU."""
    from controller.manifests.loader import load_folder

    models = load_folder(EXAMPLES / "qwen-vllm-gpu.yaml")
    requests, pending = requests_for(models)
    placement = place(requests, machine("h200-mig"))
    assert pending == [] and placement.pending == ()
    assert devices(placement) == {"qwen2.5-0.5b-0": (MIG_1G,), "qwen2.5-0.5b-1": ("1",)}
    assert [a.gpu_memory_utilization for a in placement.assignments] == [0.45, 0.45]
    assert_never_oversubscribed(placement)


@pytest.mark.parametrize(
    ("was", "wanted", "note"),
    [
        (("7",), req("a", gib=10), "a-0: device 7 is gone; placed again"),
        (("1",), req("a", 2, 10), "a-0: has 1 device(s), needs 2; placed again"),
        (("1",), req("a", gib=150), "a-0: GPU 1 cannot hold its 150.0 GiB beside the replicas already on it"),
    ],
)
def test_invalid_assignments_are_placed_again(
    was: tuple[str, ...], wanted: ReplicaRequest, note: str
) -> None:
    placement = place([wanted], machine("h200x4"), Current({("a", 0): was}))
    assert any(n.startswith(note) for n in placement.notes), placement.notes
    assert all(not a.kept for a in placement.assignments)


def test_kept_replica_is_not_charged_twice_when_its_pid_is_known() -> None:
    """A running replica (pid 99, 100 GiB) shows in live 'used'; its claim replaces that, not adds."""
    inv = one_gpu(free_gib=40, processes=(GpuProcess(99, 100 * GiB),))
    current = Current({("a", 0): ("0",)})
    requests = [req("a", gib=100), req("b", gib=30)]
    assert reasons(place(requests, inv, current))["b-0"].endswith(
        "best is GPU 0 with 0.0 GiB free; processes modelctl does not manage hold 100.0 GiB there (pid 99)"
    )
    placement = place(requests, inv, Current(current.assignments, frozenset({99})))
    assert devices(placement) == {"a-0": ("0",), "b-0": ("0",)}


def one_gpu(*, free_gib: float, total_gib: float = 140, processes: tuple[GpuProcess, ...] = ()) -> Inventory:
    gpu = Gpu(0, "GPU-test-0", "Test GPU", int(total_gib * GiB), (9, 0), "disabled")
    return Inventory((gpu,), (Usage("GPU-test-0", int(free_gib * GiB), None, None, processes),))


# --- edges ----------------------------------------------------------------------------------------


def test_no_gpus_says_why() -> None:
    placement = place([req("a", gib=1)], Inventory(reason="NVML unavailable: libnvidia-ml.so.1 not found"))
    assert reasons(placement) == {
        "a-0": "needs 1 GPU; no GPU to place on (NVML unavailable: libnvidia-ml.so.1 not found)"
    }


def test_device_with_unknown_memory_is_left_out() -> None:
    inv = one_gpu(free_gib=100)
    inv = Inventory(inv.gpus, (Usage("GPU-test-0", None, None, None),))
    placement = place([req("a", gib=1)], inv)
    assert placement.notes == ("GPU 0: memory unknown, not placed on",)
    assert placement.assignments == ()


def test_requests_are_checked() -> None:
    with pytest.raises(ValueError, match="num_gpus must be >= 1"):
        req("a", 0, 1)
    with pytest.raises(ValueError, match=r"memory 1\.5 is not a size"):
        req("a", fraction=1.5)
    with pytest.raises(ValueError, match="same replica"):
        place([req("a", gib=1), req("a", gib=2)], machine("h200"))


def test_deterministic_whatever_the_request_order() -> None:
    requests = many_requests(60, seed=7)
    first = place(requests, machine("h200x8"))
    for seed in range(5):
        shuffled = list(requests)
        random.Random(seed).shuffle(shuffled)
        assert place(shuffled, machine("h200x8")) == first


def many_requests(count: int, *, seed: int) -> list[ReplicaRequest]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        engine = rng.choice(["vllm", "llamacpp"])
        gpus = rng.choice([1, 1, 1, 1, 1, 2, 4])
        if rng.random() < 0.3:
            out.append(req(f"m{i:03d}", gpus, fraction=rng.choice([0.01, 0.02, 0.05]), engine=engine))
        else:
            out.append(req(f"m{i:03d}", gpus, rng.uniform(0.5, 10), engine=engine))
    return out


def test_hundred_models_on_eight_gpus() -> None:
    requests = many_requests(100, seed=1)
    inv = machine("h200x8")
    started = time.perf_counter()
    placement = place(requests, inv)
    elapsed = time.perf_counter() - started
    print(f"\nplaced 100 replicas on 8 GPUs in {elapsed * 1000:.1f} ms: "
          f"{len(placement.assignments)} placed, {len(placement.pending)} pending")  # fmt: skip
    assert len(placement.assignments) == 100 and placement.pending == ()
    assert_never_oversubscribed(placement)
    for assignment in placement.assignments:
        wanted = next(r for r in requests if r.slot == assignment.slot)
        assert len(assignment.devices) == wanted.num_gpus
    assert all(p.reason.startswith("needs ") for p in placement.pending)


# --- from manifests -------------------------------------------------------------------------------


def loaded(**fields: object) -> LoadedModel:
    return LoadedModel(ModelManifest.model_validate(fields), "models/m.yaml", 1, None)


def test_requests_from_manifests() -> None:
    models = [
        loaded(
            model="path/to/model.safetensors",
            engine="vllm",
            num_gpus=2,
            max_batch_size=16,
            gpu_memory="40GiB",
        ),
        loaded(model="cpu.gguf", replicas=2),  # num_gpus 0: not placed on GPUs
        loaded(model="half.gguf", num_gpus=1, replicas=2, gpu_memory=0.5),
        loaded(model="unknown.gguf", num_gpus=1),  # weights not resolved, no gpu_memory
    ]
    requests, pending = requests_for(models)
    assert requests == [
        ReplicaRequest("model", 0, 2, 40 * GiB, "vllm"),
        ReplicaRequest("half", 0, 1, 0.5, "llamacpp"),
        ReplicaRequest("half", 1, 1, 0.5, "llamacpp"),
    ]
    assert [(p.model, p.replica) for p in pending] == [("unknown", 0)]
    assert "set gpu_memory" in pending[0].reason
    placement = place(requests, machine("h200x4"))
    model = placement.assignment(("model", 0))
    assert model is not None and model.devices == ("2", "3") and model.gpu_memory_utilization == 0.2849


def test_plan_table_and_json() -> None:
    from controller.placement.place import Pending
    from controller.placement.report import plan_json, plan_table

    placement = place(
        [req("seed", 2, 30, engine="vllm"), req("big", 2, 139)], machine("h200x2-foreign"), Current()
    )
    extra = [Pending("unsized", 0, "weights not resolved; set gpu_memory to place it")]
    text = plan_table(placement, pending=extra)
    lines = text.splitlines()
    assert lines[0].split() == ["REPLICA", "STATE", "DEVICES", "MEMORY/GPU", "VLLM", "UTIL", "REASON"]
    assert lines[1].split()[:6] == ["big-0", "Pending", "-", "-", "-", "needs"]
    assert lines[1].endswith(
        "needs 2 GPUs with 139.0 GiB free each; best is GPU 1 with 131.8 GiB free" + PID_777_HOLDS
    )
    assert lines[2].split() == ["seed-0", "Placed", "0,1", "30.0", "GiB", "0.2137"]
    assert lines[3].endswith("Pending  -        -           -          " + extra[0].reason)
    assert lines[5].split() == ["DEVICE", "ID", "TOTAL", "OFFERED", "CLAIMED", "LEFT"]
    assert lines[6].split() == ["GPU", "0", "0", "140.4", "GiB", "39.8", "GiB", "30.0", "GiB", "9.8", "GiB"]
    data = json.loads(plan_json(placement, pending=extra))
    assert [p["model"] for p in data["pending"]] == ["big", "unsized"]
    assert data["assignments"][0]["devices"] == ["0", "1"]
