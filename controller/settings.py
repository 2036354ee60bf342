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
from controller.hub.cache import HubCache, default_root
from controller.manifests.sizes import parse_size
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
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ModelctlError(f"{name}: {exc}") from exc


def _env_allow(value: str) -> tuple[str, ...]:
    from controller.manifests.envrefs import EnvAllow

    try:
        EnvAllow.parse(value)
    except ValueError as exc:
        raise ModelctlError(str(exc)) from exc
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


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
    # Variables of the controller's environment manifests may name in ${NAME} besides HF_TOKEN and
    # HUGGING_FACE_HUB_TOKEN: names, or PREFIX* (never MODELCTL_*: its keys must not reach a
    # container). The loader reads the same variable from the same environment (load_folder);
    # read here too so a bad value stops the start. MODELCTL_MANIFEST_ENV_ALLOW, comma-separated.
    manifest_env_allow: tuple[str, ...] = ()
    # Label value that tells this controller's containers from another's on the same engine.
    instance: str = "default"
    # Bridge network of the replicas, which the controller (health probes, drains) and the gateway
    # (proxying) join too. MODELCTL_NETWORK.
    network: str = "modelctl"
    # With it, `network` is internal (Docker routes nothing else through it) and replicas reach the
    # outside (hub downloads) through this network, which only they join (``runtime.docker``).
    # Compose sets modelctl-egress; None (empty): replicas' network is an ordinary bridge, as
    # `modelctl serve` wants it. MODELCTL_EGRESS_NETWORK.
    egress_network: str | None = None
    # The internal API the gateway follows. Loopback by default. Compose gives the controller's
    # name on its control network (`controller-api`, an alias only that network knows), so the
    # API listens on that address alone: replicas share the controller's other network, never this
    # one. The published port (127.0.0.1:8081, for `./modelctl status`) lands on it too. MODELCTL_API_HOST.
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
    # The key the console's scraper sends that gateway, when it wants one on /metrics
    # (MODELCTL_GATEWAY_METRICS_REQUIRE_KEY). Never logged. MODELCTL_GATEWAY_KEY.
    gateway_key: str | None = field(default=None, repr=False)
    # Seconds between the console's scrapes of the gateway: one chart point each, 15 minutes kept.
    # MODELCTL_CONSOLE_STEP_S.
    console_step_s: float = 5.0
    # Where the controller keeps what must outlive it: the key of the container spec hashes
    # (``runtime.speckey``; a restarted controller needs it to adopt its replicas). Compose mounts a
    # volume of its own there. MODELCTL_STATE_DIR.
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local" / "state" / "modelctl")
    # The hub cache: hf:// weights are pulled here (huggingface_hub's layout under it) before their
    # replicas start. Compose mounts the modelctl-hub-cache volume there. MODELCTL_HUB_CACHE.
    hub_cache: Path = field(default_factory=default_root)
    # What the engines mount at /cache for it: the Docker volume the controller's hub_cache is
    # (compose: modelctl-hub-cache), or "" to bind-mount hub_cache itself (a controller run on the
    # host). MODELCTL_HUB_VOLUME.
    hub_volume: str = ""
    # Docker engine address; None means DOCKER_HOST or the local socket.
    docker_url: str | None = None
    # Seconds between passes once everything is ready (events and starting replicas come sooner).
    interval_s: float = 5.0
    # Liveness: when no reconcile pass completed for this long, /healthz answers 503 and the
    # controller exits 1 for its restart policy to start a fresh one (a hung Docker or NVML call,
    # or every pass failing). None: six intervals and at least 90 s, longer than one Docker call
    # may take. MODELCTL_LIVENESS_S.
    liveness_s: float | None = None
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

    @property
    def hub(self) -> HubCache:
        """The hub cache as the controller sees it, and what the engines mount for it."""
        return HubCache(self.hub_cache, self.hub_volume)

    def __post_init__(self) -> None:
        if self.liveness_s is not None and not self.interval_s < self.liveness_s < float("inf"):
            raise ModelctlError(
                f"MODELCTL_LIVENESS_S={self.liveness_s:g}: give more seconds than MODELCTL_INTERVAL_S "
                f"({self.interval_s:g}), or a settled controller passes for a dead one between passes"
            )
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
        if env.get("MODELCTL_HUB_CACHE"):
            values["hub_cache"] = Path(env["MODELCTL_HUB_CACHE"]).expanduser()
        if env.get("MODELCTL_STATE_DIR"):
            values["state_dir"] = Path(env["MODELCTL_STATE_DIR"])
        if "MODELCTL_EGRESS_NETWORK" in env:
            values["egress_network"] = env["MODELCTL_EGRESS_NETWORK"] or None
        if env.get("MODELCTL_API_ALLOWED_HOSTS"):
            names = (h.strip().lower() for h in env["MODELCTL_API_ALLOWED_HOSTS"].split(","))
            values["api_allowed_hosts"] = tuple(h for h in names if h)
        if "MODELCTL_METRICS_REQUIRE_KEY" in env:
            name = "MODELCTL_METRICS_REQUIRE_KEY"
            values["metrics_require_key"] = _flag(name, env[name])
        if env.get("MODELCTL_CONTROLLER_KEYS_FILE"):
            values["api_keys_file"] = Path(env["MODELCTL_CONTROLLER_KEYS_FILE"])
        if env.get("MODELCTL_MANIFEST_ENV_ALLOW"):
            values["manifest_env_allow"] = _env_allow(env["MODELCTL_MANIFEST_ENV_ALLOW"])
        if "MODELCTL_MODEL_ROOTS" in env:
            values["model_roots"] = _paths(env["MODELCTL_MODEL_ROOTS"])
        for key, name, kind in (
            ("manifests_shown_as", "MODELCTL_MANIFESTS_SHOWN_AS", str),
            ("instance", "MODELCTL_INSTANCE", str),
            ("network", "MODELCTL_NETWORK", str),
            ("hub_volume", "MODELCTL_HUB_VOLUME", str),
            ("api_host", "MODELCTL_API_HOST", str),
            ("api_port", "MODELCTL_API_PORT", int),
            ("docker_url", "DOCKER_HOST", str),
            ("interval_s", "MODELCTL_INTERVAL_S", float),
            ("liveness_s", "MODELCTL_LIVENESS_S", float),
            ("docker_wait_s", "MODELCTL_DOCKER_WAIT_S", float),
            ("drain_grace_s", "MODELCTL_DRAIN_GRACE_S", float),
            ("gateway_url", "MODELCTL_GATEWAY_URL", str),
            ("gateway_key", "MODELCTL_GATEWAY_KEY", str),
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
