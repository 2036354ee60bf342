"""What the runtime reports about a container modelctl manages, as plain data.

The planner, the reconciler and the drainer work on ``ObservedContainer`` without importing
docker-py; ``runtime.docker`` builds them from the engine's inspect data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObservedContainer:
    """A managed container as Docker reports it."""

    id: str
    name: str
    model: str
    replica: int
    engine: str
    spec_hash: str
    state: str  # Docker's: created, running, restarting, exited, dead, paused, removing
    exit_code: int | None
    ip: str | None  # on the controller's network
    port: int
    health_path: str
    max_concurrency: int
    started_at: str
    gpus: tuple[str, ...] = ()  # device IDs of its GPU request (index or MIG UUID)
    cpus: tuple[int, ...] = ()  # the host cores it is pinned to (Docker's CpusetCpus); () = any
    finished_at: float | None = None  # Docker's FinishedAt as Unix seconds; None if it never stopped
    oom_killed: bool = False  # Docker's OOMKilled: the kernel killed it for its memory limit

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def alive(self) -> bool:
        """Serving or about to. Exited and dead containers are replaced, and so are "created" ones:
        modelctl starts what it creates in the same call, so one left unstarted is a leftover of
        an interrupted run."""
        return self.state in ("running", "restarting")

    @property
    def slot(self) -> tuple[str, int]:
        return (self.model, self.replica)

    @property
    def url(self) -> str | None:
        return f"http://{self.ip}:{self.port}" if self.ip else None
