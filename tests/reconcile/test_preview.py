"""The plan preview (``modelctl plan --diff``): new manifests against running containers, read back
as terraform-style rows, through the real desired-state, placement and plan code."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from controller.endpoints.demand import ModelDemand
from controller.engines import build_spec
from controller.gpus.inventory import Inventory
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.host import Host
from controller.placement.memory import GiB
from controller.reconcile.decide import Snapshot, decide
from controller.reconcile.desired import desired_state
from controller.reconcile.preview import Preview, preview, summary
from controller.reconcile.scaling import Load
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

INVENTORIES = Path(__file__).parents[1] / "fixtures/inventories"
H200 = Inventory.from_json((INVENTORIES / "h200.json").read_text())  # one H200 (GPU 0)
H200X4 = Inventory.from_json((INVENTORIES / "h200x4.json").read_text())
NO_GPUS = Inventory(gpus=())


def model(name: str = "a", **fields: Any) -> LoadedModel:
    doc = {"model": f"hf://org/{name}:Q4", "name": name, "max_batch_size": 2, "context_length": 512, **fields}
    return LoadedModel(ModelManifest.model_validate(doc), "models/m.yaml", 1, None)


def seen(spec: ContainerSpec, state: str = "running", cid: str = "") -> ObservedContainer:
    """The container the reconciler would list for ``spec``."""
    return ObservedContainer(
        id=cid or f"{spec.model}{spec.replica}-{spec.spec_hash()}-{state}",
        name=spec.container_name("default"),
        model=spec.model,
        replica=spec.replica,
        engine=spec.engine,
        spec_hash=spec.spec_hash(),
        state=state,
        exit_code=None if state == "running" else 1,
        ip="172.18.0.2" if state == "running" else None,
        port=spec.port,
        health_path=spec.health_path,
        max_concurrency=spec.max_concurrency,
        started_at="",
        gpus=spec.gpus.device_ids if spec.gpus else (),
        cpus=spec.cpuset,
    )


def running(*models: LoadedModel, inventory: Inventory = NO_GPUS) -> list[ObservedContainer]:
    """What a controller running ``models`` has: their desired specs, as containers."""
    return [seen(s) for s in desired_state(models, inventory).specs]


def lines(result: Preview) -> list[str]:
    return [r.line for r in result.rows]


A = model()
A2 = model(replicas=2)
OLD = model("old")
GPU = model("g", num_gpus=1, gpu_memory="10GiB")

CASES: dict[str, tuple[list[LoadedModel], list[LoadedModel], list[ObservedContainer], list[str]]] = {
    # name: (new manifests, current manifests, observed containers, expected lines)
    "nothing to do": ([A], [A], running(A), ["  keep a-0"]),
    "a fresh start creates every replica": ([A2], [], [], ["+ create a-0", "+ create a-1"]),
    "more replicas create the new slot only": ([A2], [A], running(A), ["  keep a-0", "+ create a-1"]),
    "fewer replicas delete the last slot": (
        [A],
        [A2],
        running(A2),
        ["  keep a-0", "- delete a-1 (1 replica(s) wanted)"],
    ),
    "a model left the manifests": (
        [A],
        [A, OLD],
        running(A, OLD),
        ["  keep a-0", "- delete old-0 (not in the manifests)"],
    ),
    "a changed field rolls, naming it": (
        [model(context_length=1024)],
        [A],
        running(A),
        ["~ roll a-0 (context_length 512 -> 1024)"],
    ),
    "several fields, in the manifest's order": (
        [model(max_batch_size=4, context_length=1024, args=["--jinja"])],
        [A],
        running(A),
        ["~ roll a-0 (max_batch_size 2 -> 4, context_length 512 -> 1024, args [] -> [--jinja])"],
    ),
    "env changes name the variable, never the value": (
        [model(env={"TOKEN": "new-secret"})],
        [model(env={"TOKEN": "old-secret"})],
        running(model(env={"TOKEN": "old-secret"})),
        ["~ roll a-0 (env TOKEN changed)"],
    ),
    "a field the container does not carry updates without a restart": (
        [model(balancing="round-robin")],
        [A],
        running(A),
        ["~ update a-0 (balancing least-outstanding -> round-robin; no restart)"],
    ),
    "a GPU replica is created on the GPU placement gives it": ([GPU], [], [], ["+ create g-0 (GPU 0)"]),
    "what cannot be placed stays pending with placement's reason": (
        [model("big", num_gpus=1, gpu_memory="200GiB")],
        [],
        [],
        ["! pending big-0: needs 1 GPU with 200.0 GiB free; best is GPU 0 with 139.8 GiB free"],
    ),
    "an exited replica is started again": ([A], [A], [seen(build_spec(A, 0), "exited")], ["+ create a-0"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_preview_rows(case: str) -> None:
    new, current, observed, expected = CASES[case]
    result = preview(new, current, observed, H200 if any(m.manifest.num_gpus for m in new) else NO_GPUS)
    assert lines(result) == expected
    assert result.changes == any(not line.startswith("  keep") for line in expected)


def test_a_replica_whose_gpu_is_gone_moves_to_one_that_exists() -> None:
    """Placement keeps a running replica's GPUs while they exist; GPU 3 is no longer there."""
    on_gpu3 = [seen(build_spec(GPU, 0, ("3",)))]
    assert lines(preview([GPU], [GPU], on_gpu3, H200X4)) == ["  keep g-0"]
    result = preview([GPU], [GPU], on_gpu3, H200)
    assert lines(result) == ["~ move g-0 (GPU 3 -> GPU 0)"] and result.changes


def test_a_cpu_replica_keeps_its_cores_or_moves_when_the_controller_stops_pinning() -> None:
    """Placement keeps a running CPU replica's cores; a controller without a host (no pinning)
    would start it unpinned."""
    host = Host(cores=(0, 1, 2, 3, 4, 5), memory_budget=8 * GiB)
    on_core_5 = [seen(build_spec(A, 0, cpus=(5,)))]
    assert lines(preview([A], [A], on_core_5, NO_GPUS, host=host)) == ["  keep a-0"]
    assert lines(preview([A], [A], on_core_5, NO_GPUS)) == ["~ move a-0 (cores 5 -> any core)"]


def test_a_replica_that_would_not_fit_any_more_is_pending_and_its_container_would_stop() -> None:
    bigger = model("g", num_gpus=1, gpu_memory="200GiB")
    (row,) = preview([bigger], [GPU], running(GPU, inventory=H200), H200).rows
    assert row.action == "pending" and row.detail.startswith("needs 1 GPU with 200.0 GiB free")
    assert row.detail.endswith("; its running replica would stop")


def test_with_demand_an_idle_model_is_stopped_for_a_wanted_one_as_a_pass_would() -> None:
    """Room for one 1 GiB model on the host: ``b`` has a request waiting, ``a`` runs idle."""
    host = Host(cores=(0, 1), memory_budget=int(1.5 * GiB))
    a, b = (model(n, gpu_memory="1GiB", min_replicas=0, max_replicas=1) for n in ("a", "b"))
    observed = [seen(build_spec(a, 0, cpus=(0,)))]
    demand = {"a": ModelDemand(last_active=1.0), "b": ModelDemand(waiting=1)}
    counts = {"a": 1, "b": 1}
    evicting = preview([a, b], [a, b], observed, NO_GPUS, counts=counts, host=host, demand=demand)
    assert lines(evicting) == [
        "- delete a-0 (idle, stopped to make room for b)",
        "+ create b-0 (once a has stopped to make room)",
    ]
    blind = preview([a, b], [a, b], observed, NO_GPUS, counts=counts, host=host)
    assert [r.action for r in blind.rows] == ["keep", "pending"], "without demand: no eviction"
    busy = {"a": ModelDemand(in_flight=1), "b": ModelDemand(waiting=1)}
    held = preview([a, b], [a, b], observed, NO_GPUS, counts=counts, host=host, demand=busy)
    assert [r.line.split(":")[0] for r in held.rows] == ["  keep a-0", "! pending b-0"]
    assert held.rows[1].detail.endswith("no idle on-demand model to stop for it")


def test_a_crashed_replica_in_backoff_is_a_create_that_says_so() -> None:
    crashed = [seen(s, state="exited") for s in desired_state([A], NO_GPUS).specs]
    reason = "killed (exit code 137, SIGKILL)"
    result = preview([A], [A], crashed, NO_GPUS, backing_off={("a", 0): reason})
    assert lines(result) == [f"+ create a-0 (after its restart backoff; it crashed: {reason})"]
    assert lines(preview([A], [A], crashed, NO_GPUS)) == ["+ create a-0"]


def test_a_roll_in_progress_is_one_roll_row() -> None:
    """The new container starts beside the old one: both are listed, the slot is still rolling."""
    new = model(context_length=1024)
    both = [*running(A), *running(new)]
    assert lines(preview([new], [A], both, NO_GPUS)) == ["~ roll a-0 (context_length 512 -> 1024)"]
    assert lines(preview([new], [new], running(new), NO_GPUS)) == ["  keep a-0"]


def test_an_equal_manifest_with_another_spec_names_the_hashes() -> None:
    """The container was made by another controller version (here: another image default)."""
    other = dataclasses.replace(build_spec(A, 0), image="ghcr.io/ggml-org/llama.cpp:older")
    (row,) = preview([A], [A], [seen(other)], NO_GPUS).rows
    assert row.action == "roll"
    assert row.detail == (
        f"container spec {other.spec_hash()} -> {build_spec(A, 0).spec_hash()}: image, flags, mounts or env"
    )


def test_json_shape_matches_the_console_contract() -> None:
    result = preview([A2], [A], running(A), NO_GPUS).to_json()
    keep = {"action": "keep", "model": "a", "replica": 0, "name": "a-0", "detail": "", "line": "  keep a-0"}
    create = {**keep, "action": "create", "replica": 1, "name": "a-1", "line": "+ create a-1"}
    assert result == {"changes": True, "errors": [], "rows": [keep, create]}
    assert Preview(errors=("m.yaml:3: bad",)).to_json() == {
        "changes": False,
        "errors": ["m.yaml:3: bad"],
        "rows": [],
    }


def test_counts_follow_the_scaler_without_asking_it() -> None:
    """The preview's counts are ``decide``'s scaling over what the scaler holds (``counts``)."""
    fixed = model("f", replicas=3)
    lazy = model("d", min_replicas=0, max_replicas=4)
    observed = running(model("d", replicas=2))

    def counts(
        models: list[LoadedModel], held: dict[str, int], seen: list[ObservedContainer]
    ) -> dict[str, int]:
        loads = {name: Load(count=count) for name, count in held.items()}
        return decide(Snapshot(tuple(models), observed=tuple(seen), loads=loads)).counts

    assert counts([fixed, lazy], {}, observed) == {"f": 3, "d": 2}  # unseen: what runs
    assert counts([fixed, lazy], {"d": 0}, observed) == {"f": 3, "d": 0}  # its decision
    narrower = model("d", min_replicas=1, max_replicas=1)
    assert counts([narrower], {"d": 3}, observed) == {"d": 1}  # within the new bounds
    scaled_to_zero = preview([lazy], [lazy], [], NO_GPUS, counts={"d": 0})
    assert scaled_to_zero.rows == () and not scaled_to_zero.changes


def test_summary_counts_each_action() -> None:
    assert summary(["keep", "keep"]) == "No changes: what runs matches these manifests."
    assert summary(["create", "roll", "pending", "keep"]) == (
        "Plan: 1 to create, 1 to roll, 0 to delete, 1 pending."
    )
    assert summary(["move", "update", "delete"]) == (
        "Plan: 0 to create, 0 to roll, 1 to move, 1 to update, 1 to delete, 0 pending."
    )
