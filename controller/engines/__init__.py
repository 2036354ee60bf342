"""Engines turn (a loaded manifest, a replica index, its GPUs or host cores) into a container spec.

One small module per engine (``llamacpp``, ``vllm``) knows its official image, its command-line
flags, its port and health endpoint. ``build_spec`` picks the module by the manifest's engine.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.engines import llamacpp, vllm
from controller.manifests.engines import LLAMACPP, VLLM, EngineName
from controller.manifests.model import LoadedModel
from controller.runtime.spec import ContainerSpec

SpecBuilder = Callable[..., ContainerSpec]  # (model, replica, gpus, gpu_share, *, cpus)

BUILDERS: dict[EngineName, SpecBuilder] = {
    LLAMACPP: llamacpp.container_spec,
    VLLM: vllm.container_spec,
}


# How to tell that a replica finished its in-flight requests: (path, predicate over the body).
IDLE_CHECKS: dict[str, tuple[str, Callable[[str], bool]]] = {  # by the containers' engine label
    LLAMACPP: (llamacpp.IDLE_PATH, llamacpp.is_idle),
    VLLM: (vllm.IDLE_PATH, vllm.is_idle),
}


def build_spec(
    model: LoadedModel,
    replica: int,
    gpus: tuple[str, ...] = (),
    gpu_share: float | None = None,
    *,
    cpus: tuple[int, ...] = (),
) -> ContainerSpec:
    """The container spec for one replica of ``model`` owning ``gpus`` (device IDs); ``gpu_share``
    is the fraction of each GPU's memory it may use (vLLM --gpu-memory-utilization); ``cpus`` the
    host cores a CPU replica runs on (as many compute threads)."""
    return BUILDERS[model.manifest.resolved_engine](model, replica, gpus, gpu_share, cpus=cpus)


def sets_own_threads(model: LoadedModel) -> bool:
    """True when the manifest chooses the engine's CPU threads itself: then modelctl pins nothing."""
    engine = model.manifest.resolved_engine
    if engine == LLAMACPP:
        return any(a in ("-t", "--threads") or a.startswith("--threads=") for a in model.manifest.args)
    return "VLLM_CPU_OMP_THREADS_BIND" in model.manifest.env
