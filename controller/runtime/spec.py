"""The container spec: what one replica's container should look like, independent of Docker's API.

Engines build it from a manifest; the runtime turns it into Docker calls; the reconciler compares
its hash (a label on the container) with what is running, so any drift in image, flags, mounts,
devices, limits or env shows as a different hash.

The hash is keyed (HMAC-SHA256 with the controller's ``hash_key``, ``runtime.speckey``). It covers
the env's filled-in values, secrets such as HF_TOKEN among them, so that a changed secret rolls the
replica; yet it is seen by whoever sees a container's name or labels (``docker ps``, logs, the
status API), and an unkeyed hash would let them test guesses of a secret offline. Without the key,
which the controller keeps in a file of its own state folder (so that a restarted controller
computes the same hashes and adopts what runs), a hash says nothing about the values. The env as
the manifest writes it (``env_sources``, ``${NAME}`` references unfilled) is hashed too: a manifest
that spells a guessed value out literally never hashes like one that refers to the secret, so the
plan preview cannot be asked whether a guess is right.
"""

from __future__ import annotations

import hashlib
import hmac
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
    # Processes and threads the container may run together (Docker --pids-limit): a fork bomb or a
    # runaway pool stops there instead of exhausting the host's PIDs. None: the engine's default.
    pids_limit: int | None = None
    # Bytes of memory (Docker --memory, swap included): set for CPU replicas from the estimate
    # they were placed with (``engines.common.memory_limit``); None: no limit (GPU replicas).
    memory_limit: int | None = None
    # The manifest's env as written, ``${NAME}`` references unfilled: hashed, never sent.
    env_sources: tuple[tuple[str, str], ...] = ()
    # The key of ``spec_hash`` (the controller's, ``runtime.speckey``); b"": unkeyed (tests, plans
    # made without a controller). Not part of the spec itself.
    hash_key: bytes = field(default=b"", repr=False, compare=False)

    def spec_hash(self) -> str:
        """A short stable hash of the whole spec, keyed with ``hash_key``: equal hashes mean an
        identical container. Shown in names and labels; says nothing of env values without the key."""
        fields = asdict(self)
        del fields["hash_key"]
        encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hmac.new(self.hash_key, encoded.encode(), hashlib.sha256).hexdigest()[:12]

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
