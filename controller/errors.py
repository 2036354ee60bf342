"""modelctl's own exception tree, so callers catch what they mean and users see one clear line.

    ModelctlError                 every error modelctl raises on purpose
    ├── ManifestError             one manifest problem; names file, document, field (and line)
    ├── InvalidManifests          all the ManifestErrors of one load, reported together
    ├── EngineError               an engine cannot serve what the manifest asks for
    ├── BackendRuntimeError       the container runtime (Docker) failed or is unreachable
    │   └── RuntimeUnavailable    the engine did not answer at all (retry later)
    ├── HubError                  a hub pull cannot be planned or done (no such file, no room, ...)
    ├── CannotListen              a server of ours cannot bind its address
    ├── ControllerStalled         reconcile passes stopped completing: exit, to be started afresh
    └── GatewayWorkersFailed      a gateway worker process died, or workers cannot start

Third-party exceptions (docker.errors.*, OSError, ...) are chained as ``__cause__`` where they are
mapped, at the boundary that talks to that library.
"""

from __future__ import annotations

import os


class ModelctlError(Exception):
    """Base class: every error modelctl raises on purpose."""


class ManifestError(ModelctlError):
    """One problem in one manifest document: where it is and what is wrong."""

    def __init__(
        self,
        message: str,
        *,
        file: str,
        document: int | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.document = document
        self.field = field
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        if self.document is not None:
            where += f" (document {self.document})"
        if self.field:
            where += f" field '{self.field}'"
        return f"{where}: {self.message}"


class EngineError(ModelctlError):
    """The chosen engine cannot serve the model as configured."""


class BackendRuntimeError(ModelctlError):
    """The container runtime refused or failed an operation."""


class RuntimeUnavailable(BackendRuntimeError):
    """The container runtime could not be reached; retrying later may succeed."""


class InvalidManifests(ModelctlError):
    """Every problem found while loading a manifest folder, reported together."""

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} manifest error(s):\n" + "\n".join(map(str, errors)))


class HubError(ModelctlError):
    """A pull of hub weights failed or was refused: one line saying why (controller.hub)."""


class CannotListen(ModelctlError):
    """A server of ours cannot bind its address (in use, not permitted, no such address)."""

    def __init__(self, what: str, host: str, port: int, exc: OSError) -> None:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own text repeats the address
        super().__init__(f"{what} cannot listen on {host}:{port}: {reason}")


class ControllerStalled(ModelctlError):
    """No reconcile pass completed within the liveness bound: the controller exits non-zero so that
    its restart policy starts a fresh one (Docker never restarts a merely unhealthy container)."""


class GatewayWorkersFailed(ModelctlError):
    """A gateway worker process died (the gateway ends so its supervisor restarts it whole), or the
    workers cannot be started."""
