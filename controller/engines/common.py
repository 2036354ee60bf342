"""What both engines do alike: mount the weights read-only (or give the engine a hub reference and
a cache volume to download into), and request GPUs by device ID."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.errors import EngineError
from controller.manifests.loader import LoadedModel
from controller.runtime.spec import ContainerSpec, GpuRequest, Mount

MODELS_DIR = "/models"  # where weights appear inside every engine container
HUB_CACHE_VOLUME = "modelctl-hub-cache"  # named volume the engines download hub weights into
HUB_CACHE_DIR = "/cache"  # where that volume appears inside the container


@dataclass(frozen=True, slots=True)
class Weights:
    """How an engine finds its weights: a path inside the container, or a hub reference."""

    mount: Mount
    path: str | None = None  # set for host weights
    hub: str | None = None  # 'org/repo[:quant]' for hub references


def weights_source(model: LoadedModel, *, whole_folder: bool = False) -> Weights:
    """Host weights as a read-only bind mount, or a hub reference with the shared cache volume.

    ``whole_folder``: a weights file is mounted with the folder it sits in (vLLM needs the
    config.json and tokenizer beside the .safetensors), and the path is that folder.
    Raises EngineError when host weights were not resolved against the model roots: a spec must
    never mount a path that was not checked.
    """
    if model.hub is not None:
        cache = Mount(source=HUB_CACHE_VOLUME, target=HUB_CACHE_DIR, read_only=False, type="volume")
        return Weights(mount=cache, hub=model.hub)
    if model.weights is None:
        raise EngineError(f"model {model.name}: weights were not checked against the model roots")
    host = Path(model.weights)
    if whole_folder and host.is_file():
        host = host.parent
    target = f"{MODELS_DIR}/{model.name}/{host.name}"
    return Weights(mount=Mount(source=str(host), target=target, read_only=True), path=target)


def gpu_request(gpus: tuple[str, ...]) -> GpuRequest | None:
    return GpuRequest(device_ids=gpus) if gpus else None


def engine_spec(
    model: LoadedModel,
    replica: int,
    *,
    engine: str,
    default_image: str,
    command: list[str],
    port: int,
    health_path: str,
    weights: Weights,
    hub_env: tuple[tuple[str, str], ...],
    gpus: tuple[str, ...],
    shm_size: str | None = None,
    cpus: tuple[int, ...] = (),
    extra_env: tuple[tuple[str, str], ...] = (),
) -> ContainerSpec:
    """The parts of a spec both engines fill alike from the manifest."""
    manifest = model.manifest
    return ContainerSpec(
        model=model.name,
        replica=replica,
        engine=engine,
        image=manifest.image or default_image,
        command=tuple(command),
        port=port,
        health_path=health_path,
        max_concurrency=manifest.max_batch_size,
        env=tuple(sorted((*model.env, *hub_env, *extra_env))),
        mounts=(weights.mount,),
        gpus=gpu_request(gpus),
        shm_size=shm_size,
        cpuset=cpus,
    )


def cpu_list(cpus: tuple[int, ...]) -> str:
    """Cores as a Linux cpu list, ranges folded: (0, 1, 2, 5) -> '0-2,5'."""
    parts: list[str] = []
    for cpu in sorted(cpus):
        if parts and cpu == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)
