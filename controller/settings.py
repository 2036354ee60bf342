"""Controller settings: one dataclass, each field with its default and why, read from the
environment (compose) or the command line (cli). No globals: the composition root passes it down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from controller.errors import ModelctlError
from controller.reconcile.lifecycle import LifecycleSettings
from controller.reconcile.scaling import ScalingSettings

V = TypeVar("V")


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(p).absolute() for p in value.split(os.pathsep) if p)


def _value(name: str, value: str, kind: Callable[[str], V]) -> V:
    """``kind(value)``, or one clear error naming the variable."""
    try:
        return kind(value)
    except ValueError as exc:
        what = getattr(kind, "__name__", "value")
        raise ModelctlError(f"{name}={value!r}: not a valid {what}") from exc


def _size(name: str, value: str) -> int:
    from controller.manifests.document import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise ModelctlError(f"{name}: {exc}") from exc


def _flag(name: str, value: str) -> bool:
    """A yes/no variable: true/false, 1/0, yes/no, on/off (any case), or one clear error."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ModelctlError(f"{name}={value!r}: give true or false")


def _host_name(value: str) -> bool:
    """True for something a Host header can name: letters, digits, dots, hyphens, underscores."""
    allowed = all(c.isascii() and (c.isalnum() or c in ".-_") for c in value)
    return bool(value) and len(value) <= 253 and allowed


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    # Folder (or file) of manifests, usually a git checkout. MODELCTL_MANIFESTS.
    manifests: Path = Path("models")
    # How users know that folder, for error messages: compose mounts ./models at
    # /etc/modelctl/models and says `models` here, so errors read `models/a.yaml:3`, as
    # `modelctl validate models/` prints them. None: the path as the controller sees it.
    # MODELCTL_MANIFESTS_SHOWN_AS.
    manifests_shown_as: str | None = None
    # Host folders weights may come from; nothing outside them is ever mounted. MODELCTL_MODEL_ROOTS
    # (os.pathsep-separated). In compose the controller sees them at the same path as the host does,
    # because Docker resolves bind-mount sources on the host.
    model_roots: tuple[Path, ...] = field(default_factory=lambda: (Path("models-data").absolute(),))
    # Label value that tells this controller's containers from another's on the same engine.
    instance: str = "default"
    # Bridge network shared by replicas, the controller (health probes) and the gateway.
    network: str = "modelctl"
    # The internal API the gateway follows. Loopback by default; compose binds it on its network
    # and publishes it on the host's loopback only (127.0.0.1:8081, for `./modelctl status`).
    api_host: str = "127.0.0.1"
    api_port: int = 8081
    # Keys the API wants on /v1/* (the gateway's keys file format), for publishing it beyond the
    # loopback (``controller.api``); the gateway then sends MODELCTL_CONTROLLER_KEY. None: open.
    # MODELCTL_CONTROLLER_KEYS_FILE.
    api_keys_file: Path | None = None
    # Host names the API answers to besides the loopback names, IP addresses, `controller` (its
    # compose service) and api_host: a name it is reached by (a proxy, another service name). Any
    # other Host header gets 421, so a web page cannot reach the API by DNS rebinding
    # (``controller.api``). MODELCTL_API_ALLOWED_HOSTS, comma-separated.
    api_allowed_hosts: tuple[str, ...] = ()
    # /metrics wants one of the api_keys_file's keys too (it is open by default, as on the gateway).
    # MODELCTL_METRICS_REQUIRE_KEY=true; needs MODELCTL_CONTROLLER_KEYS_FILE.
    metrics_require_key: bool = False
    # The gateway the console scrapes (/metrics, /metrics/requests) over the internal network;
    # compose says http://gateway:8080. None: the in-process gateway of `modelctl serve`, if any.
    # MODELCTL_GATEWAY_URL.
    gateway_url: str | None = None
    # Seconds between the console's scrapes of the gateway: one chart point each, 15 minutes kept.
    # MODELCTL_CONSOLE_STEP_S.
    console_step_s: float = 5.0
    # Docker engine address; None means DOCKER_HOST or the local socket.
    docker_url: str | None = None
    # Seconds between passes once everything is ready (events and starting replicas come sooner).
    interval_s: float = 5.0
    # How long to keep retrying when the Docker engine does not answer at start (it may be booting).
    docker_wait_s: float = 300.0
    # Longest wait for a leaving replica's in-flight requests before it is stopped.
    drain_grace_s: float = 30.0
    # Host memory CPU replicas may use together (a size, '16GiB'); None: what the host has available
    # (MemAvailable, plus what our CPU replicas hold) minus cpu_memory_reserve. MODELCTL_CPU_MEMORY.
    cpu_memory: int | None = None
    # Left to everything else when the budget follows the host. MODELCTL_CPU_MEMORY_RESERVE.
    cpu_memory_reserve: int = 1024**3
    # Autoscaling windows: up on the load averaged over up_window_s, down when the peak over
    # down_window_s fits in fewer. MODELCTL_SCALE_UP_WINDOW_S, MODELCTL_SCALE_DOWN_WINDOW_S.
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    # Restart backoff and health timeouts.
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)

    def __post_init__(self) -> None:
        if self.metrics_require_key and self.api_keys_file is None:
            raise ModelctlError(
                "MODELCTL_METRICS_REQUIRE_KEY=true needs keys: set MODELCTL_CONTROLLER_KEYS_FILE too"
            )
        bad = [h for h in self.api_allowed_hosts if not _host_name(h)]
        if bad:
            raise ModelctlError(
                f"MODELCTL_API_ALLOWED_HOSTS: {', '.join(map(repr, bad))}: give host names "
                "(comma-separated, without scheme, port or path)"
            )
        if not 0 < self.console_step_s <= 900:
            raise ModelctlError(
                f"MODELCTL_CONSOLE_STEP_S={self.console_step_s:g}: give seconds above 0 and at most 900 "
                "(the console's 15-minute window)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> ControllerSettings:
        """Settings from MODELCTL_* variables; explicit ``overrides`` (not None) win."""
        values: dict[str, object] = {}
        if "MODELCTL_MANIFESTS" in env:
            values["manifests"] = Path(env["MODELCTL_MANIFESTS"])
        for key, name in (
            ("cpu_memory", "MODELCTL_CPU_MEMORY"),
            ("cpu_memory_reserve", "MODELCTL_CPU_MEMORY_RESERVE"),
        ):
            if env.get(name):
                values[key] = _size(name, env[name])
        if env.get("MODELCTL_API_ALLOWED_HOSTS"):
            names = (h.strip().lower() for h in env["MODELCTL_API_ALLOWED_HOSTS"].split(","))
            values["api_allowed_hosts"] = tuple(h for h in names if h)
        if "MODELCTL_METRICS_REQUIRE_KEY" in env:
            name = "MODELCTL_METRICS_REQUIRE_KEY"
            values["metrics_require_key"] = _flag(name, env[name])
        if env.get("MODELCTL_CONTROLLER_KEYS_FILE"):
            values["api_keys_file"] = Path(env["MODELCTL_CONTROLLER_KEYS_FILE"])
        if "MODELCTL_MODEL_ROOTS" in env:
            values["model_roots"] = _paths(env["MODELCTL_MODEL_ROOTS"])
        for key, name, kind in (
            ("manifests_shown_as", "MODELCTL_MANIFESTS_SHOWN_AS", str),
            ("instance", "MODELCTL_INSTANCE", str),
            ("network", "MODELCTL_NETWORK", str),
            ("api_host", "MODELCTL_API_HOST", str),
            ("api_port", "MODELCTL_API_PORT", int),
            ("docker_url", "DOCKER_HOST", str),
            ("interval_s", "MODELCTL_INTERVAL_S", float),
            ("docker_wait_s", "MODELCTL_DOCKER_WAIT_S", float),
            ("drain_grace_s", "MODELCTL_DRAIN_GRACE_S", float),
            ("gateway_url", "MODELCTL_GATEWAY_URL", str),
            ("console_step_s", "MODELCTL_CONSOLE_STEP_S", float),
        ):
            if name in env:
                values[key] = _value(name, env[name], kind)
        windows = {
            key: _value(name, env[name], float)
            for key, name in (
                ("up_window_s", "MODELCTL_SCALE_UP_WINDOW_S"),
                ("down_window_s", "MODELCTL_SCALE_DOWN_WINDOW_S"),
            )
            if env.get(name)
        }
        if windows:
            values["scaling"] = ScalingSettings(**windows)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
