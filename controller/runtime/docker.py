"""The Docker Engine edge: create, list, remove and read the logs of modelctl's containers.

Everything else in the controller works on plain data (``ContainerSpec`` in, ``ObservedContainer``
out); this module is the only one that imports docker-py. docker-py is blocking, so the reconciler
calls it from a worker thread. Docker errors are mapped here to ``BackendRuntimeError`` (the engine
refused) or ``RuntimeUnavailable`` (the engine did not answer; the caller retries on its next pass).

Networks: replicas join ``network``, where the controller probes them and the gateway proxies to
them. With an ``egress_network`` (compose), ``network`` is *internal* and replicas reach the
outside (hub downloads) through the egress network, which nothing else joins. The internal network
is what keeps replicas away from the controller's API: Docker never routes published ports or the
default route through an internal network, so the controller's published port lands on its address
on the control network (compose), the only address its API listens on, and no replica shares that
network (Docker drops traffic between bridge networks).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import docker
import docker.errors
import docker.models.networks
import requests.exceptions
from docker.types import DeviceRequest, LogConfig, Mount

from controller.errors import BackendRuntimeError, RuntimeUnavailable
from controller.runtime import labels
from controller.runtime.observed import ObservedContainer
from controller.runtime.spec import ContainerSpec

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10  # SIGTERM, then SIGKILL: engines stop in well under a second
LOG_LIMITS = LogConfig(type="json-file", config={"max-size": "10m", "max-file": "3"})


@contextmanager
def docker_errors(action: str) -> Iterator[None]:
    """Map docker-py's exceptions to ours, saying what we were doing."""
    try:
        yield
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        if isinstance(exc, docker.errors.APIError):
            raise BackendRuntimeError(f"{action}: {exc.explanation or exc}") from exc
        raise RuntimeUnavailable(f"{action}: Docker engine unreachable ({exc})") from exc


def connect(base_url: str | None = None) -> docker.DockerClient:
    """A client for the engine at ``base_url`` (default: DOCKER_HOST or the local socket)."""
    with docker_errors("connecting to Docker"):
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
        return client


class DockerRuntime:
    """modelctl's view of one Docker engine, for one controller instance and network."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        instance: str,
        network: str,
        egress_network: str | None = None,
        hash_key: bytes = b"",
    ) -> None:
        self.client = client
        self.instance = instance
        self.network = network
        self.egress_network = egress_network  # replicas' way out when ``network`` is internal
        # The key of the spec hashes in names and labels (runtime.speckey): desired_state puts it
        # into every spec the reconciler compares and creates.
        self.hash_key = hash_key

    def ensure_network(self) -> None:
        """Create the replicas' bridge network (internal when there is an egress network) and the
        egress network, unless they exist. A replicas' network that is not internal although an
        egress network is set is logged: replicas can then reach what else joins it."""
        with docker_errors(f"creating network {self.network}"):
            found = self.find_network(self.network)
            internal = self.egress_network is not None
            if found is None:
                self.create_network(self.network, internal=internal)
            elif internal and not found.attrs.get("Internal"):
                log.warning(
                    "network %s is not internal although replicas have their own way out (%s): "
                    "recreate it as internal (compose.yaml does) so that it carries nothing else",
                    self.network,
                    self.egress_network,
                )
        if self.egress_network is not None:
            with docker_errors(f"creating network {self.egress_network}"):
                if self.find_network(self.egress_network) is None:
                    self.create_network(self.egress_network, internal=False)

    def find_network(self, name: str) -> docker.models.networks.Network | None:
        """The network named exactly ``name`` (Docker's name filter also matches parts of names)."""
        return next((n for n in self.client.networks.list(names=[name]) if n.name == name), None)

    def create_network(self, name: str, *, internal: bool) -> None:
        self.client.networks.create(
            name, driver="bridge", internal=internal, labels={labels.NETWORK_OWNED: "true"}
        )
        log.info("created network %s%s", name, " (internal)" if internal else "")

    def list(self) -> list[ObservedContainer]:
        """Every container of this instance, running or not."""
        with docker_errors("listing containers"):
            summaries = self.client.api.containers(all=True, filters={"label": label_filter(self.instance)})
            inspected = (self.inspect(summary["Id"]) for summary in summaries)
            return [observe(attrs, self.network) for attrs in inspected if attrs is not None]

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """A container's inspect data, or None if it was removed since it was listed."""
        try:
            return dict(self.client.api.inspect_container(container_id))
        except docker.errors.NotFound:
            return None

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a replica's container; returns its ID.

        A leftover container with the same name (same spec) is removed first, so a crashed
        run never causes "name already in use".
        """
        with docker_errors(f"creating replica {spec.model}-{spec.replica}"):
            self.remove_by_name(spec.container_name(self.instance))
            container = self.client.containers.create(**create_kwargs(spec, self.instance, self.network))
            try:
                if self.egress_network is not None:
                    self.client.api.connect_container_to_network(container.id, self.egress_network)
            except docker.errors.APIError:
                self.remove_by_name(str(container.id))
                raise
            return str(container.id)

    def start(self, spec: ContainerSpec) -> str:
        """Create and start a replica's container; returns its ID. A container that cannot start
        (no GPU runtime, bad image entrypoint, ...) is removed again, so no husk is left behind."""
        container_id = self.create(spec)
        with docker_errors(f"starting replica {spec.model}-{spec.replica}"):
            try:
                self.client.api.start(container_id)
            except docker.errors.APIError:
                self.remove_by_name(container_id)
                raise
        return container_id

    def remove(self, container_id: str, *, graceful: bool = True) -> None:
        """Stop and remove a container; one that is already gone is fine. ``graceful``: SIGTERM
        first (SIGKILL after STOP_TIMEOUT_S); otherwise SIGKILL at once (a crashed or hung
        engine has nothing left to finish)."""
        with docker_errors(f"removing container {container_id[:12]}"):
            try:
                container = self.client.containers.get(container_id)
                if graceful and container.status == "running":
                    container.stop(timeout=STOP_TIMEOUT_S)
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

    def remove_by_name(self, name: str) -> None:
        with suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True)

    def follow_events(self, on_event: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_event`` for each Docker event of this instance's containers, until ``stop``
        is set (checked at each event and every few seconds) or the engine goes away."""
        with docker_errors("following Docker events"):
            stream = self.client.events(
                decode=True, filters={"type": "container", "label": label_filter(self.instance)}
            )
            closer = threading.Thread(target=lambda: (stop.wait(), stream.close()), daemon=True)
            closer.start()
            try:
                for _ in stream:
                    if stop.is_set():
                        return
                    on_event()
            finally:
                stop.set()

    def host_pids(self, container_id: str) -> tuple[int, ...]:
        """Host PIDs of a container's processes (what NVML reports); empty if it is gone."""
        try:
            top = self.client.api.top(container_id)
        except docker.errors.APIError:
            return ()
        column = top["Titles"].index("PID")
        return tuple(int(process[column]) for process in top.get("Processes") or [])

    def logs(self, container_id: str, tail: int = 50) -> str:
        """The last ``tail`` lines of a container's output (stdout and stderr)."""
        with docker_errors(f"reading logs of {container_id[:12]}"):
            raw = self.client.containers.get(container_id).logs(tail=tail)
            return bytes(raw).decode("utf-8", errors="replace")


def label_filter(instance: str | None) -> list[str]:
    return [f"{k}={v}" for k, v in labels.selector(instance).items()]


def remove_all(client: docker.DockerClient, instance: str | None = None) -> list[str]:
    """Remove every container modelctl started (of one instance, or all); returns their names."""
    with docker_errors("removing modelctl's containers"):
        found = client.containers.list(all=True, filters={"label": label_filter(instance)})
        for container in found:
            container.remove(force=True)
        return [str(c.name) for c in found]


def remove_unused_networks(client: docker.DockerClient) -> list[str]:
    """Remove the networks modelctl created itself (labelled) that no container uses any more, so
    ``modelctl down`` leaves nothing behind; one still in use (another instance's) stays. Returns
    the names removed."""
    removed = []
    with docker_errors("removing modelctl's networks"):
        for network in client.networks.list(filters={"label": labels.NETWORK_OWNED}):
            try:
                network.reload()
                if network.attrs.get("Containers"):
                    continue
                network.remove()
            except (docker.errors.NotFound, docker.errors.APIError):
                continue  # gone meanwhile, or a container joined it: not ours to take
            removed.append(str(network.name))
    return removed


def create_kwargs(spec: ContainerSpec, instance: str, network: str) -> dict[str, Any]:
    """docker-py ``containers.create`` arguments for ``spec``: least privilege, no host ports."""
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.container_name(instance),
        "labels": spec.labels(instance),
        "environment": dict(spec.env),
        "mounts": [
            Mount(target=m.target, source=m.source, type=m.type, read_only=m.read_only) for m in spec.mounts
        ],
        "network": network,
        "detach": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "log_config": LOG_LIMITS,
    }
    if spec.gpus:
        kwargs["device_requests"] = [
            DeviceRequest(
                driver=spec.gpus.driver, device_ids=list(spec.gpus.device_ids), capabilities=[["gpu"]]
            )
        ]
    if spec.shm_size:
        kwargs["shm_size"] = spec.shm_size
    if spec.cpuset:
        kwargs["cpuset_cpus"] = ",".join(str(c) for c in spec.cpuset)
    if spec.ipc_mode:
        kwargs["ipc_mode"] = spec.ipc_mode
    if spec.pids_limit:
        kwargs["pids_limit"] = spec.pids_limit
    if spec.memory_limit:
        # Swap included (--memory-swap = --memory): a replica over its limit is stopped, not slowed.
        kwargs["mem_limit"] = spec.memory_limit
        kwargs["memswap_limit"] = spec.memory_limit
    return kwargs


def observe(attrs: dict[str, Any], network: str) -> ObservedContainer:
    """Read one container's inspect data into plain data."""
    lbl = attrs["Config"]["Labels"] or {}
    state = attrs["State"]
    net = (attrs.get("NetworkSettings", {}).get("Networks") or {}).get(network) or {}
    return ObservedContainer(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        model=lbl.get(labels.MODEL, ""),
        replica=int(lbl.get(labels.REPLICA, "-1")),
        engine=lbl.get(labels.ENGINE, ""),
        spec_hash=lbl.get(labels.SPEC_HASH, ""),
        state=state.get("Status", "unknown"),
        exit_code=state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None,
        ip=net.get("IPAddress") or None,
        port=int(lbl.get(labels.PORT, "0")),
        health_path=lbl.get(labels.HEALTH_PATH, "/health"),
        max_concurrency=int(lbl.get(labels.MAX_CONCURRENCY, "1")),
        started_at=state.get("StartedAt", ""),
        finished_at=unix_time(state.get("FinishedAt", "")),
        oom_killed=bool(state.get("OOMKilled")),
        gpus=tuple(
            str(device)
            for request in (attrs.get("HostConfig", {}).get("DeviceRequests") or [])
            for device in (request.get("DeviceIDs") or [])
        ),
        cpus=cpuset(attrs.get("HostConfig", {}).get("CpusetCpus") or ""),
    )


def cpuset(text: str) -> tuple[int, ...]:
    """Docker's CpusetCpus ('0-2,5') as core ids; '' (no pinning) -> ()."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return tuple(sorted(cpus))


def unix_time(rfc3339: str) -> float | None:
    """Docker's RFC 3339 timestamp as Unix seconds; None for its zero time (never) or no value."""
    try:
        seconds = datetime.fromisoformat(rfc3339).timestamp()
    except ValueError:
        return None
    return seconds if seconds > 0 else None
