"""The gateway's settings: one frozen dataclass, each field with its default and why, and ``from_env``.

``modelctl gateway`` (and ``serve``) build it with ``GatewaySettings.from_env(...)``: MODELCTL_*
variables first, explicit keyword overrides (CLI flags, not None) win. Bad values are rejected with a
message naming the field, never clamped. API keys never appear in the repr, hence never in a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from controller.gateway.cors import valid_origin


class SettingsError(ValueError):
    """A gateway setting (or the variable it came from) has an invalid value."""


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """How the gateway listens, whom it follows, how patient it is, and whom it lets in."""

    # All interfaces: the gateway is the endpoint clients (and other containers) reach.
    # Env MODELCTL_GATEWAY_HOST, CLI --host.
    host: str = "0.0.0.0"
    # The port the design promises: clients point at http://localhost:8080/v1.
    # Env MODELCTL_GATEWAY_PORT, CLI --port.
    port: int = 8080
    # The controller's internal API, which serves GET /v1/endpoints (compose: http://controller:8081).
    # Env MODELCTL_CONTROLLER_URL, CLI --controller-url.
    controller_url: str = "http://127.0.0.1:8081"
    # The key the gateway sends the controller (Authorization: Bearer) when the controller's API
    # wants keys (its MODELCTL_CONTROLLER_KEYS_FILE). Never logged. Env MODELCTL_CONTROLLER_KEY.
    controller_key: str | None = field(default=None, repr=False)
    # Bearer tokens accepted on /v1/*; empty (and no keys file) = open (said once at start-up).
    # /healthz, /readyz and (unless metrics_require_key) /metrics stay open: probes and scrapers
    # carry no key. Env MODELCTL_API_KEYS (comma-separated); the keys file's are not among them.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # The keys file: one key a line, or a YAML mapping of names to keys (with optional limits,
    # ``read_key_specs``). Read again when it changes (looked at once a second), so keys are added,
    # revoked and limited without a restart. With a file the gateway is never open, even while the
    # file holds no key; a file that goes missing or stops parsing fails closed (its keys are
    # refused until it is readable again). Env MODELCTL_API_KEYS_FILE, CLI --api-keys-file.
    api_keys_file: Path | None = None
    # Whether /metrics and /metrics/requests want a key too (any configured key; no limits apply):
    # model names, key names and traffic volumes are then for key holders only. The console's
    # scraper sends MODELCTL_GATEWAY_KEY. Needs keys. Env MODELCTL_GATEWAY_METRICS_REQUIRE_KEY.
    metrics_require_key: bool = False
    # Whether a vLLM replica may be handed an image by http(s) URL (it then downloads the image
    # itself, from inside the replicas' network: a client could make it fetch any address there).
    # Off: every image must be a data: URL (base64). llama.cpp never gets one by URL.
    # Env MODELCTL_GATEWAY_IMAGE_URLS.
    image_urls: bool = False
    # The web origins whose pages may call the gateway from a browser (CORS, ``cors.py``): each
    # "scheme://host[:port]", or "*" for any page (said explicitly, never a default). Empty: no CORS
    # header is sent and no preflight answered; engines' own CORS headers never reach clients either.
    # Env MODELCTL_GATEWAY_CORS_ORIGINS (comma-separated).
    cors_origins: tuple[str, ...] = ()
    # The secret that keys the names of keys that came without one (``key_name``: an HMAC, so a
    # name in the metrics cannot be checked against guessed keys offline). Random per gateway,
    # shared by its worker processes (they get these settings); never shown.
    key_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False, compare=False)
    # Processes serving the same port (SO_REUSEPORT), each with its own loop, table and metrics.
    # Env MODELCTL_GATEWAY_WORKERS.
    workers: int = 1
    # Requests are JSON prompts; 16 MiB holds long contexts and base64 images, and bounds memory.
    # Env MODELCTL_GATEWAY_MAX_BODY_BYTES.
    max_body_bytes: int = 16 * 1024 * 1024
    # An audio upload (/v1/audio/*, multipart): OpenAI's own limit for a file is 25 MB. Read once,
    # forwarded as those bytes. Env MODELCTL_GATEWAY_MAX_AUDIO_BYTES.
    max_audio_bytes: int = 25 * 1024 * 1024
    # A ready replica accepts at once; a slow connect means it is gone, so try another soon.
    # Env MODELCTL_GATEWAY_CONNECT_TIMEOUT_S.
    connect_timeout_s: float = 5.0
    # Until the status line: a non-streamed completion arrives only when generation ends (slow LLMs).
    # Env MODELCTL_GATEWAY_FIRST_BYTE_TIMEOUT_S.
    first_byte_timeout_s: float = 600.0
    # Longest silence between two chunks of an answer (prompt processing before the first token).
    # Env MODELCTL_GATEWAY_READ_TIMEOUT_S.
    read_timeout_s: float = 300.0
    # Longest wait for one write to the client to drain (its socket buffers full: it stopped
    # reading). A client that reads, even over a slow link, drains them in far less; one that does
    # not would hold its replica slot (a share of the model's batch) for as long as it likes. Past
    # it the request is cut: the client's connection and the replica's are closed, the slot freed
    # (counted 499). Env MODELCTL_GATEWAY_WRITE_TIMEOUT_S.
    write_timeout_s: float = 30.0
    # Longest wait for a request's body once its head is in (a body trickling in, slowloris): 16
    # MiB in 60 s is 2.2 Mbit/s, slower than any link a gateway serves. Past it: 408, connection
    # closed. Env MODELCTL_GATEWAY_BODY_TIMEOUT_S.
    body_timeout_s: float = 60.0
    # A client connection with no request in progress is closed after this long: an idle keep-alive,
    # or a request head trickling in (slowloris), counted from the connection's start or the end of
    # its last answer. As nginx's client_header_timeout; longer than clients' own pool expiry (httpx
    # 5 s, aiohttp 15 s), so they, not we, close idle connections. Env MODELCTL_GATEWAY_IDLE_TIMEOUT_S.
    idle_timeout_s: float = 60.0
    # Client connections served at once by one process; more are closed at once. Each costs a few
    # KiB idle and up to an answer's buffers busy; 4096 is far above what replicas' slots and
    # queues use. Env MODELCTL_GATEWAY_MAX_CONNECTIONS.
    max_connections: int = 4096
    # Request bytes held by the requests that wait for a slot (all models of this process): a
    # queue of 16 MiB bodies must not take the gateway's memory. Beyond it 429 (queue_full), as a
    # full queue. 256 MiB: 16 waiting bodies of the largest size, thousands of usual ones.
    # Env MODELCTL_GATEWAY_MAX_QUEUED_BYTES.
    max_queued_bytes: int = 256 * 1024 * 1024
    # Replicas tried per request before the first byte; each replica at most once.
    # Env MODELCTL_GATEWAY_MAX_TRIES.
    max_tries: int = 3
    # Retry-After (seconds) on 503: about the time a replica takes to come (back) up.
    retry_after_s: int = 5
    # Retry-After (seconds) on 429: a slot frees when one generation ends.
    busy_retry_after_s: int = 1
    # Waiting requests per unit of capacity (sum of replicas' max_concurrency) before 429.
    # Env MODELCTL_GATEWAY_QUEUE_PER_SLOT.
    queue_per_slot: int = 4
    # A model may always queue this many, also while it has no replica to multiply by.
    queue_min: int = 64
    # Longest wait for a replica slot before 429; a slot frees when some generation ends.
    # Env MODELCTL_GATEWAY_QUEUE_TIMEOUT_S.
    queue_timeout_s: float = 30.0
    # Longest wait for a model without ready replicas (cold start) to gain one before 503, unless
    # the table gives the model its own (``load_timeout_s``, from the manifest); also for the first
    # table after start-up. Env MODELCTL_GATEWAY_COLD_START_WAIT_S.
    cold_start_wait_s: float = 30.0
    # A streamed request held for a model without ready replicas gets an SSE comment
    # (": loading <model>") this often, so that clients and proxies in front keep the connection.
    # Env MODELCTL_GATEWAY_LOADING_COMMENT_INTERVAL_S.
    loading_comment_interval_s: float = 5.0
    # How often this process reports its demand (in flight, waiting, last use per model) to the
    # controller while there is any; a request held for a cold model is reported at once.
    # Env MODELCTL_GATEWAY_DEMAND_INTERVAL_S.
    demand_interval_s: float = 1.0
    # How often waiting requests look for a new table (TableSource has no change notification).
    # A held request for a cold model waits on it, so it is short; a look is one identity check.
    table_poll_s: float = 0.02
    # Prefix affinity: a replica takes a conversation while under c x its fair share of load.
    affinity_load_factor: float = 1.25
    # Prefix affinity for /v1/completions: characters of the prompt that make its key.
    affinity_prefix_chars: int = 512
    # Idle keep-alive connections kept, to all replicas together (in-flight ones are bounded by
    # the replicas' max_concurrency); beyond it a finished connection is closed.
    max_upstream_connections: int = 1024
    # Idle keep-alive under the backends' own 5 s (uvicorn, cpp-httplib), so we never reuse a
    # connection that the replica is closing (that would fail a request with a single replica).
    upstream_keepalive_s: float = 4.0
    # Once serving, freeze the start-up heap and collect the young generation less often
    # (``process.tune_gc``): the process serves only the gateway. Off for in-process use (tests).
    tune_gc: bool = True
    # Set by ``run_workers``, not by users: the private folder (mode 0700) where the worker processes
    # answer each other's questions for metrics (``peers.py``). None: one process, nothing to ask.
    workers_dir: Path | None = None
    # Where the endpoint table comes from: "controller" (long-poll the controller's API) or "dns"
    # (resolve each model's service name: a Kubernetes headless Service, a Docker network alias;
    # controller.gateway.tables.dns). Env MODELCTL_GATEWAY_TABLE.
    table: str = "controller"
    # With table "dns": the JSON file naming the models and their services (a ConfigMap on
    # Kubernetes, written by `modelctl render kubernetes`). Env MODELCTL_GATEWAY_MODELS.
    models_file: str = ""
    # With table "dns": how often each service name is resolved; a replica that leaves or joins is
    # seen within about this long (plus the DNS server's own TTL). Env MODELCTL_GATEWAY_DNS_INTERVAL_S.
    dns_interval_s: float = 1.0

    def __post_init__(self) -> None:
        positive = ["workers", "max_body_bytes", "max_tries", "queue_per_slot", "affinity_prefix_chars"]
        positive += ["max_connections", "max_queued_bytes", "max_audio_bytes"]
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"gateway setting {name} must be at least 1, not {getattr(self, name)}")
        not_negative = ["queue_min", "queue_timeout_s", "cold_start_wait_s", "retry_after_s"]
        not_negative.append("busy_retry_after_s")
        for name in not_negative:
            if getattr(self, name) < 0:
                raise SettingsError(f"gateway setting {name} must not be negative, not {getattr(self, name)}")
        seconds = ["table_poll_s", "connect_timeout_s", "first_byte_timeout_s", "read_timeout_s"]
        seconds += ["write_timeout_s", "body_timeout_s", "idle_timeout_s"]
        for name in (*seconds, "loading_comment_interval_s", "demand_interval_s"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise SettingsError(
                    f"gateway setting {name} must be a positive number of seconds, not {value}"
                )
        if self.affinity_load_factor < 1.0:
            raise SettingsError(
                f"gateway setting affinity_load_factor must be at least 1.0, not {self.affinity_load_factor}"
            )
        if any(not key.isascii() or not key.isprintable() or " " in key or not key for key in self.api_keys):
            raise SettingsError("gateway setting api_keys: each key must be non-empty ASCII without spaces")
        if self.metrics_require_key and not self.api_keys and self.api_keys_file is None:
            raise SettingsError(
                "gateway setting metrics_require_key needs API keys (a keys file or api_keys)"
            )
        for origin in self.cors_origins:
            if not valid_origin(origin):
                raise SettingsError(
                    f"gateway setting cors_origins: {origin!r} is not an origin: "
                    "'scheme://host[:port]' (http or https, no path) or '*'"
                )
        if self.table not in ("controller", "dns"):
            raise SettingsError(f"gateway setting table must be 'controller' or 'dns', not {self.table!r}")
        if self.table == "dns" and not self.models_file:
            raise SettingsError("gateway setting table 'dns' needs models_file (MODELCTL_GATEWAY_MODELS)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> GatewaySettings:
        """Settings from MODELCTL_* variables; explicit ``overrides`` (not None) win.

        Raises SettingsError naming the variable for a value that does not parse, or an unreadable
        MODELCTL_API_KEYS_FILE.
        """
        values: dict[str, object] = {}
        for key, name in _ENV.items():
            if name in env:
                values[key] = _parse(name, env[name], _KINDS[key])
        keys = _split_keys(env.get("MODELCTL_API_KEYS", ""))
        if env.get("MODELCTL_CONTROLLER_KEY"):
            values["controller_key"] = env["MODELCTL_CONTROLLER_KEY"].strip()
        if env.get("MODELCTL_API_KEYS_FILE"):
            values["api_keys_file"] = path = Path(env["MODELCTL_API_KEYS_FILE"])
            read_key_specs(path, secret=b"")  # refused at start-up if it cannot be used
        if env.get("MODELCTL_GATEWAY_METRICS_REQUIRE_KEY"):
            values["metrics_require_key"] = _flag(
                "MODELCTL_GATEWAY_METRICS_REQUIRE_KEY", env["MODELCTL_GATEWAY_METRICS_REQUIRE_KEY"]
            )
        if env.get("MODELCTL_GATEWAY_IMAGE_URLS"):
            values["image_urls"] = _flag("MODELCTL_GATEWAY_IMAGE_URLS", env["MODELCTL_GATEWAY_IMAGE_URLS"])
        if keys:
            values["api_keys"] = tuple(dict.fromkeys(keys))
        origins = _split_keys(env.get("MODELCTL_GATEWAY_CORS_ORIGINS", ""))
        if origins:
            values["cors_origins"] = tuple(dict.fromkeys(origins))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


_ENV = {
    "host": "MODELCTL_GATEWAY_HOST",
    "port": "MODELCTL_GATEWAY_PORT",
    "controller_url": "MODELCTL_CONTROLLER_URL",
    "workers": "MODELCTL_GATEWAY_WORKERS",
    "queue_per_slot": "MODELCTL_GATEWAY_QUEUE_PER_SLOT",
    "queue_timeout_s": "MODELCTL_GATEWAY_QUEUE_TIMEOUT_S",
    "cold_start_wait_s": "MODELCTL_GATEWAY_COLD_START_WAIT_S",
    "loading_comment_interval_s": "MODELCTL_GATEWAY_LOADING_COMMENT_INTERVAL_S",
    "demand_interval_s": "MODELCTL_GATEWAY_DEMAND_INTERVAL_S",
    "connect_timeout_s": "MODELCTL_GATEWAY_CONNECT_TIMEOUT_S",
    "first_byte_timeout_s": "MODELCTL_GATEWAY_FIRST_BYTE_TIMEOUT_S",
    "read_timeout_s": "MODELCTL_GATEWAY_READ_TIMEOUT_S",
    "write_timeout_s": "MODELCTL_GATEWAY_WRITE_TIMEOUT_S",
    "body_timeout_s": "MODELCTL_GATEWAY_BODY_TIMEOUT_S",
    "idle_timeout_s": "MODELCTL_GATEWAY_IDLE_TIMEOUT_S",
    "max_connections": "MODELCTL_GATEWAY_MAX_CONNECTIONS",
    "max_queued_bytes": "MODELCTL_GATEWAY_MAX_QUEUED_BYTES",
    "max_tries": "MODELCTL_GATEWAY_MAX_TRIES",
    "max_body_bytes": "MODELCTL_GATEWAY_MAX_BODY_BYTES",
    "max_audio_bytes": "MODELCTL_GATEWAY_MAX_AUDIO_BYTES",
    "table": "MODELCTL_GATEWAY_TABLE",
    "models_file": "MODELCTL_GATEWAY_MODELS",
    "dns_interval_s": "MODELCTL_GATEWAY_DNS_INTERVAL_S",
}
_KINDS: dict[str, type] = {f.name: type(f.default) for f in fields(GatewaySettings) if f.name in _ENV}


def _parse(name: str, text: str, kind: type) -> object:
    try:
        return kind(text)
    except ValueError as exc:
        raise SettingsError(f"{name}={text!r} is not a valid {kind.__name__}") from exc


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={text!r} is not a valid flag (true or false)")


def _split_keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


@dataclass(frozen=True)
class KeySpec:
    """One API key: the name its usage is counted under, the key, and its optional limits."""

    name: str
    key: str = field(repr=False)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None  # in flight at once, streams included


_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_LIMITS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")


def key_name(key: str, secret: bytes) -> str:
    """Return the name of a key that came without one: a fingerprint keyed by ``secret`` (HMAC-SHA256),
    so that nobody without the secret can test a guessed key against it."""
    return "key-" + hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:8]


def read_key_specs(path: Path, *, secret: bytes) -> list[KeySpec]:
    """Return the keys in ``path``; raise SettingsError naming the line or the name, never a key.

    Two formats: one key a line (blank lines and ``#`` comments ignored; each named by its
    fingerprint, ``key_name`` keyed by ``secret``), or a YAML mapping of names to a key or to
    ``{key: ..., requests_per_minute: N, tokens_per_minute: N, max_concurrent_requests: N}``
    (limits optional).
    """
    where = f"MODELCTL_API_KEYS_FILE {path}"
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{where}: cannot read it ({type(exc).__name__})") from None
    lines = [line.strip() for line in text.splitlines()]
    keys = [k for k in lines if k and not k.startswith("#")]
    try:
        document = yaml.safe_load(text)
    except RecursionError:
        raise SettingsError(f"{where}: nested too deeply") from None
    except yaml.YAMLError as exc:
        if any(": " in k or k.endswith(":") for k in keys):  # meant as YAML (a plain key has no space)
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise SettingsError(f"{where}: not a YAML mapping of names to keys{line}") from None
        document = None  # a plain key that YAML reads as syntax (``*key``, ``{key``)
    if isinstance(document, dict):
        specs = [_named_spec(where, name, value) for name, value in document.items()]
    else:
        specs = [KeySpec(key_name(k, secret), k) for k in dict.fromkeys(keys)]
    return _checked(where, specs)


def _named_spec(where: str, name: Any, value: Any) -> KeySpec:
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise SettingsError(f"{where}: key name {str(name)[:64]!r} must be letters, digits, '_.@-' (<= 64)")
    if isinstance(value, str):
        return KeySpec(name, value)
    if not isinstance(value, dict) or not isinstance(value.get("key"), str):
        raise SettingsError(f"{where}: {name}: give a key, or a mapping with 'key' and optional limits")
    unknown = sorted(str(k) for k in value if k not in ("key", *_LIMITS))
    if unknown:
        known = ", ".join(("key", *_LIMITS))
        raise SettingsError(f"{where}: {name}: unknown field {unknown[0]!r} (known: {known})")
    limits = {k: value.get(k) for k in _LIMITS}
    for field_name, limit in limits.items():
        if limit is not None and (type(limit) is not int or limit < 1):
            raise SettingsError(f"{where}: {name}: {field_name} must be a whole number >= 1, not {limit!r}")
    return KeySpec(name, value["key"], **limits)


def _checked(where: str, specs: list[KeySpec]) -> list[KeySpec]:
    seen: dict[str, str] = {}
    for spec in specs:
        key = spec.key
        if not key or not key.isascii() or not key.isprintable() or " " in key:
            raise SettingsError(f"{where}: {spec.name}: a key must be non-empty ASCII without spaces")
        if key in seen:
            raise SettingsError(f"{where}: {spec.name} has the same key as {seen[key]}")
        seen[key] = spec.name
    return specs
