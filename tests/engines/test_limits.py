"""What a replica may take of the host: a pids limit for every replica, and for CPU replicas a
memory limit from the estimate they are placed with, plus a margin; as Docker is asked for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.engines import build_spec
from controller.engines.common import MEMORY_MARGIN_MIN, PIDS_LIMIT
from controller.engines.vllm import PIDS_LIMIT as VLLM_PIDS_LIMIT
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.placement.memory import GiB, cpu_need
from controller.runtime.docker import create_kwargs

REPO = Path(__file__).resolve().parents[2]
GGUF = Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def loaded(weights: Path | None, **doc: object) -> LoadedModel:
    return LoadedModel(ModelManifest.model_validate(doc), "m.yaml", 1, weights)


def test_every_replica_gets_a_pids_limit() -> None:
    llamacpp = build_spec(loaded(Path("/m/x.gguf"), model="x.gguf"), 0)
    vllm = build_spec(loaded(Path("/m/x"), model="x", engine="vllm", num_gpus=1), 0, ("0",))
    assert (llamacpp.pids_limit, vllm.pids_limit) == (PIDS_LIMIT, VLLM_PIDS_LIMIT)
    assert create_kwargs(llamacpp, "default", "modelctl")["pids_limit"] == PIDS_LIMIT


def test_a_cpu_replica_is_limited_to_its_stated_memory_plus_a_margin() -> None:
    spec = build_spec(loaded(Path("/m/x.gguf"), model="x.gguf", gpu_memory="4GiB"), 0)
    assert spec.memory_limit == 5 * GiB  # 4 GiB + a quarter
    kwargs = create_kwargs(spec, "default", "modelctl")
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 5 * GiB  # no swap beyond it


def test_a_small_estimate_gets_the_minimum_margin() -> None:
    spec = build_spec(loaded(Path("/m/x.gguf"), model="x.gguf", gpu_memory="400MiB"), 0)
    assert spec.memory_limit == 400 * 1024**2 + MEMORY_MARGIN_MIN


def test_the_limit_follows_the_estimate_from_real_weights() -> None:
    if not GGUF.is_file():
        pytest.fail(f"{GGUF} is missing; run `make example-model`")
    model = loaded(GGUF, model=GGUF.name, max_batch_size=2, context_length=2048)
    need = cpu_need(model)
    spec = build_spec(model, 0)
    limit = need + max(need // 4, MEMORY_MARGIN_MIN)
    assert spec.memory_limit == -(-limit // 2**20) * 2**20  # rounded up to a MiB
    assert 256 * 1024**2 < need < 1 * GiB  # SmolLM2: ~100 MB of weights, ~90 MB of KV, the overhead


@pytest.mark.parametrize(
    ("weights", "doc"),
    [
        (None, {"model": "hf://bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"}),  # hub: size unknown here
        (Path("/nowhere/x.gguf"), {"model": "x.gguf"}),  # weights that cannot be sized
    ],
)
def test_a_cpu_replica_whose_need_is_only_a_lower_bound_gets_no_memory_limit(
    weights: Path | None, doc: dict[str, object]
) -> None:
    spec = build_spec(loaded(weights, **doc), 0)
    assert spec.memory_limit is None
    assert "mem_limit" not in create_kwargs(spec, "default", "modelctl")


def test_gpu_replicas_get_no_memory_limit() -> None:
    spec = build_spec(loaded(Path("/m/x.gguf"), model="x.gguf", num_gpus=1, gpu_memory="4GiB"), 0, ("0",))
    assert spec.memory_limit is None


@pytest.mark.parametrize(("env", "kv_gib"), [({}, 4), ({"VLLM_CPU_KVCACHE_SPACE": "2"}, 2)])
def test_a_vllm_cpu_replica_has_room_for_the_kv_cache_vllm_allocates(
    env: dict[str, str], kv_gib: int
) -> None:
    spec = build_spec(loaded(Path("/m/x"), model="x", engine="vllm", gpu_memory="4GiB", env=env), 0)
    assert spec.memory_limit == (4 + kv_gib) * GiB * 5 // 4


def test_limits_are_part_of_the_spec_hash() -> None:
    base = loaded(Path("/m/x.gguf"), model="x.gguf", gpu_memory="4GiB")
    more = loaded(Path("/m/x.gguf"), model="x.gguf", gpu_memory="5GiB")
    assert build_spec(base, 0).spec_hash() != build_spec(more, 0).spec_hash()
