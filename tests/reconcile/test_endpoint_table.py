"""The endpoint table the reconciler publishes: ready replicas with their GPUs, and what APIs that
show models need (engine, context length, when an idle model goes down, the weights' details)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.reconcile.loop import endpoint_table
from controller.runtime.observed import ObservedContainer


def model(weights: Path, **fields: object) -> LoadedModel:
    manifest = ModelManifest(name="m", model=weights.name, **fields)  # type: ignore[arg-type]
    return LoadedModel(manifest, "m.yaml", 0, weights, created=1764120000)


def container(replica: int, gpus: tuple[str, ...] = ()) -> ObservedContainer:
    return ObservedContainer(
        id=f"id{replica}",
        name=f"m-{replica}",
        model="m",
        replica=replica,
        engine="llamacpp",
        spec_hash="h",
        state="running",
        exit_code=None,
        ip=f"10.0.0.{replica + 2}",
        port=8080,
        health_path="/health",
        max_concurrency=2,
        started_at="",
        gpus=gpus,
    )


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"not a real gguf")
    return path


def test_replicas_carry_their_gpus_and_the_model_its_description(weights: Path) -> None:
    (entry,) = endpoint_table(
        [model(weights, context_length=512)], [container(1, ("1",)), container(0, ("0",))]
    )
    assert [(r.id, r.gpus) for r in entry.replicas] == [("m-0", ("0",)), ("m-1", ("1",))]
    assert (entry.engine, entry.context_length, entry.unload_after_s) == ("llamacpp", 512, None)
    assert entry.details is not None and entry.details.size == len(
        b"not a real gguf"
    )  # unreadable: size only


@pytest.mark.parametrize(
    ("fields", "unload_after_s"),
    [
        ({"min_replicas": 0, "max_replicas": 2, "idle_timeout": "10m"}, 600.0),
        ({"min_replicas": 0, "max_replicas": 2, "idle_timeout": 0}, None),  # never goes down
        ({"min_replicas": 1, "max_replicas": 3, "idle_timeout": "10m"}, None),  # keeps one
        ({"replicas": 2}, None),
    ],
)
def test_unload_after_s_is_set_only_where_the_last_replica_goes(
    weights: Path, fields: dict[str, object], unload_after_s: float | None
) -> None:
    (entry,) = endpoint_table([model(weights, **fields)], [])
    assert entry.unload_after_s == unload_after_s


def test_adapters_in_the_manifests_order_and_vision_from_the_projector(weights: Path) -> None:
    (weights.parent / "a.gguf").write_bytes(b"a")
    (weights.parent / "b.gguf").write_bytes(b"b")
    (weights.parent / "mmproj.gguf").write_bytes(b"p")
    adapters = [{"name": "m-b", "path": "b.gguf"}, {"name": "m-a", "path": "a.gguf"}]
    (entry,) = endpoint_table([model(weights, adapters=adapters)], [])
    assert (entry.adapters, entry.vision) == (("m-b", "m-a"), False)
    (entry,) = endpoint_table([model(weights, mmproj="mmproj.gguf")], [])
    assert (entry.adapters, entry.vision) == ((), True)
