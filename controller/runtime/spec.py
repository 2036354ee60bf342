"""The container spec: what one replica's container should look like, independent of Docker's API.

Engines build it from a manifest; the runtime turns it into Docker calls; the reconciler compares
its hash (a label on the container) with what is running, so any drift in image, flags, mounts or
devices shows as a different hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from controller.runtime import labels


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount of checked weights (read-only), or a named volume modelctl owns (hub cache)."""

    source: str  # host path already checked to lie under a model root, or a volume name
    target: str  # path inside the container
    read_only: bool = True
    type: str = "bind"  # "bind" or "volume"


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """The GPUs one replica owns, by explicit device ID (never "all")."""

    device_ids: tuple[str, ...]
    driver: str = "nvidia"


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything that decides how a replica's container is created."""

    model: str
    replica: int
    engine: str
    image: str
    command: tuple[str, ...]
    port: int  # the engine's port inside the container; never published on the host
    health_path: str
    max_concurrency: int
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets
    mounts: tuple[Mount, ...] = ()
    gpus: GpuRequest | None = None
    cpuset: tuple[int, ...] = ()  # the host cores a CPU replica may run on; () = any
    shm_size: str | None = None
    ipc_mode: str | None = None
    extra_labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def spec_hash(self) -> str:
        """A short stable hash of the whole spec: equal hashes mean an identical container."""
        encoded = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()[:12]

    def container_name(self, instance: str) -> str:
        """Unique per spec, so a replacement can run beside the container it replaces."""
        prefix = "modelctl" if instance == "default" else f"modelctl-{instance}"
        return f"{prefix}-{self.model}-{self.replica}-{self.spec_hash()[:8]}"

    def labels(self, instance: str) -> dict[str, str]:
        """The labels that let the reconciler find, adopt and compare this container."""
        return {
            **labels.selector(instance),
            labels.MODEL: self.model,
            labels.REPLICA: str(self.replica),
            labels.ENGINE: self.engine,
            labels.SPEC_HASH: self.spec_hash(),
            labels.PORT: str(self.port),
            labels.HEALTH_PATH: self.health_path,
            labels.MAX_CONCURRENCY: str(self.max_concurrency),
            **dict(self.extra_labels),
        }
