"""What both engines do alike: mount the weights read-only (or give the engine a hub reference and
a cache volume to download into), request GPUs by device ID, and bound what a replica may take of
the host: processes (a pids limit) and, for CPU replicas, memory (the estimate they were placed
with, plus a margin)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from controller.errors import EngineError, ModelctlError
from controller.manifests.model import LoadedModel, PulledFiles
from controller.manifests.shards import shard_paths
from controller.placement.memory import MiB, cpu_need, estimate
from controller.runtime.spec import ContainerSpec, GpuRequest, Mount

MODELS_DIR = "/models"  # where weights appear inside every engine container
HUB_CACHE_VOLUME = "modelctl-hub-cache"  # named volume the engines download hub weights into
HUB_CACHE_DIR = "/cache"  # where that volume appears inside the container
# Processes and threads one replica may run (Docker --pids-limit; the engines may ask for more).
# llama-server runs one compute thread per core plus its HTTP pool (--parallel + 8): far below
# (measured here: 16 tasks with 2 threads and --parallel 2).
PIDS_LIMIT = 4096
# What a CPU replica's memory limit adds to its estimate: a quarter, at least MEMORY_MARGIN_MIN.
# The estimate is what the CPU memory budget counts for the replica (placement.memory.cpu_need);
# the margin is for what it does not count: allocator slack, tokenizer and HTTP buffers, the page
# cache of its own weights (charged to the container, reclaimable) and a cores-sized thread pool.
MEMORY_MARGIN = 0.25
MEMORY_MARGIN_MIN = 256 * MiB


@dataclass(frozen=True, slots=True)
class Weights:
    """How an engine finds its weights: a path inside the container, or a hub reference."""

    mount: Mount
    path: str | None = None  # set for host weights
    hub: str | None = None  # 'org/repo[:quant]' for hub references
    shards: tuple[Mount, ...] = ()  # shards 2..N of a split GGUF, beside the first


def weights_source(model: LoadedModel, *, whole_folder: bool = False) -> Weights:
    """Host weights as a read-only bind mount, or a hub reference with the shared cache volume.

    ``whole_folder``: a weights file is mounted with the folder it sits in (vLLM needs the
    config.json and tokenizer beside the .safetensors), and the path is that folder.
    Raises EngineError when host weights were not resolved against the model roots: a spec must
    never mount a path that was not checked. Hub weights with ``pulled`` naming no path (a
    Kubernetes rendering: only the files beside them are pulled, by the pod) are the engine's own
    download.
    """
    if model.hub is not None and model.pulled is not None and model.pulled.path:
        return pulled_source(model.pulled)
    if model.hub is not None:
        cache = Mount(source=HUB_CACHE_VOLUME, target=HUB_CACHE_DIR, read_only=False, type="volume")
        return Weights(mount=cache, hub=model.hub)
    if model.weights is None:
        raise EngineError(f"model {model.name}: weights were not checked against the model roots")
    host = Path(model.weights)
    if whole_folder and host.is_file():
        host = host.parent
    folder = f"{MODELS_DIR}/{model.name}"
    target = f"{folder}/{host.name}"
    return Weights(
        mount=Mount(source=str(host), target=target, read_only=True),
        path=target,
        shards=split_mounts(host, folder) if not whole_folder else (),
    )


def pulled_source(pulled: PulledFiles) -> Weights:
    """Hub weights the controller pulled: the hub cache mounted read-only (the GGUF's shards and
    the snapshot's files lie beside it there), the path inside it."""
    kind = "volume" if pulled.volume else "bind"
    cache = Mount(source=pulled.source, target=HUB_CACHE_DIR, read_only=True, type=kind)
    return Weights(mount=cache, path=f"{HUB_CACHE_DIR}/{pulled.path}")


def split_mounts(first: Path, folder: str) -> tuple[Mount, ...]:
    """Shards 2..N of a split GGUF whose shard 1 is ``first``, each its own read-only bind mount
    in ``folder`` beside shard 1, under its own name (llama-server opens the siblings by name from
    shard 1's folder). One mount per shard rather than the host folder: the container sees the
    shards and nothing else that folder holds. The loader checked each against the model roots."""
    try:
        shards = shard_paths(first)[1:]
    except ValueError:  # not shard 1: the loader refused it
        return ()
    return tuple(
        Mount(source=str(shard.resolve()), target=f"{folder}/{shard.name}", read_only=True)
        for shard in shards
    )


def gpu_request(gpus: tuple[str, ...]) -> GpuRequest | None:
    return GpuRequest(device_ids=gpus) if gpus else None


def memory_limit(model: LoadedModel, gpus: tuple[str, ...], *, engine_reserve: int = 0) -> int | None:
    """A CPU replica's memory limit: the host memory it is placed with (``cpu_need``: the
    manifest's ``gpu_memory`` size, else weights + KV cache + the engine's overhead) plus
    ``engine_reserve`` (memory the engine takes by a setting of its own, beyond the estimate) plus
    a margin (MEMORY_MARGIN, at least MEMORY_MARGIN_MIN), rounded up to a MiB. Past it the kernel
    kills the replica (Docker reports OOMKilled; the reconciler restarts it with backoff), not the
    host's other processes.

    None (no limit) for GPU replicas, whose weights and KV cache live in GPU memory, and for CPU
    replicas whose need is only a lower bound: hub weights (not here to size) and weights that
    cannot be sized. A limit from a lower bound would kill a replica for our estimate's gap."""
    if gpus or not sized(model):
        return None
    try:
        need = cpu_need(model) + engine_reserve
    except (ModelctlError, ValueError):  # a GPU share as gpu_memory: placement reports it
        return None
    limit = need + max(int(need * MEMORY_MARGIN), MEMORY_MARGIN_MIN)
    return -(-limit // MiB) * MiB  # whole MiB: the kernel keeps whole pages, inspect shows what it keeps


def sized(model: LoadedModel) -> bool:
    """True when the memory a CPU replica needs is known: the manifest states it as a size, or the
    weights are here and can be sized."""
    if isinstance(model.manifest.gpu_memory, str):
        return True
    try:
        estimate(model)
    except ModelctlError:
        return False
    return True


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
    pids_limit: int = PIDS_LIMIT,
    memory_reserve: int = 0,
    extra_mounts: tuple[Mount, ...] = (),
) -> ContainerSpec:
    """The parts of a spec both engines fill alike from the manifest. ``memory_reserve``: what
    the engine takes beyond the estimate by a setting of its own (``memory_limit``);
    ``extra_mounts``: the files beside the weights (``engines.files``). Raises EngineError when
    two mounts would collide (``check_targets``)."""
    manifest = model.manifest
    mounts = (weights.mount, *weights.shards, *extra_mounts)
    check_targets(model, mounts)
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
        mounts=mounts,
        gpus=gpu_request(gpus),
        shm_size=shm_size,
        cpuset=cpus,
        pids_limit=pids_limit,
        memory_limit=memory_limit(model, gpus, engine_reserve=memory_reserve),
        env_sources=tuple(sorted(manifest.env.items())),
    )


def check_targets(model: LoadedModel, mounts: tuple[Mount, ...]) -> None:
    """Raise EngineError when two mounts share a target or one lies inside another's (a weights
    folder named like a fixed place, say 'draft'): Docker would refuse the container, or create the
    inner mount point inside the outer one's host folder."""
    sources: dict[str, str] = {}
    for mount in mounts:
        if mount.target in sources:
            raise EngineError(
                f"model {model.name}: {mount.source} and {sources[mount.target]} would both appear "
                f"at {mount.target} in the container"
            )
        sources[mount.target] = mount.source
    for target in sources:
        for outer in PurePosixPath(target).parents:
            if str(outer) in sources:
                raise EngineError(
                    f"model {model.name}: {sources[target]} would appear at {target}, inside "
                    f"{sources[str(outer)]} (mounted at {outer}); rename one of them"
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
