"""The endpoint table: the one contract between the control plane and the data plane.

The controller publishes which replicas are *ready* for each model; the gateway routes to them. It is
plain data with a JSON form so that the gateway can live in another process (or container) without a
Docker socket, and keep serving the last table it received when the controller is away.

Wire format (``GET /v1/endpoints`` on the controller's internal API)::

    {"epoch": "9f1c2ab07d3e4f60", "version": 7,
     "models": [{"name": "smollm2", "aliases": ["smollm"], "created": 1764120000,
                 "balancing": "prefix-affinity", "load_timeout_s": 60.0,
                 "replicas": [{"id": "smollm2-0", "url": "http://172.18.0.3:8080",
                               "max_concurrency": 4, "gpus": ["0"]}],
                 "engine": "llamacpp", "context_length": 4096, "unload_after_s": 600.0,
                 "details": {"format": "gguf", "family": "llama", "parameter_size": "135M",
                             "quantization": "Q4_1", "size": 98362432, "info": {...},
                             "template": "..."},
                 "adapters": ["smollm2-sea", "smollm2-poems"], "vision": false,
                 "task": "generate"}]}

``version`` grows whenever the table changes, so a client can long-poll with ``?after=<version>``.
``epoch`` is drawn at random when the controller starts: versions count from 1 again after a
restart, so a version is only comparable within one epoch. A client long-polls with
``?epoch=<epoch>&after=<version>`` and takes any table whose epoch differs from its own at once (a
restarted controller may serve a changed set at the version the client already holds). A table
without ``epoch`` (an older controller) has the epoch "".
A model with no ready replica is still listed (the gateway answers 503, not 404, for it).
``loading`` (optional) says what a model without ready replicas waits for: a hub pull's progress.
``engine``, ``context_length``, ``unload_after_s``, ``details`` and a replica's ``gpus`` describe the
model for APIs that show it (Ollama's /api/tags, /api/ps, /api/show); they are optional, so a table
from an older controller still parses.
``adapters`` names the model's LoRA adapters in the order the engine loaded them (llama.cpp's
adapter ids: the k-th name is id k); each is a model name of its own, and ``<model or alias>:<adapter>``
names it too (``EndpointTable.resolve``). ``vision``: the model takes images (true: llama.cpp with a
projector, ``mmproj``; vLLM weights whose config.json has a ``vision_config``), false: it takes none,
null: unknown (hub weights, an older controller), so the gateway does not check.
``task`` ("generate", "embed" or "rerank") says which APIs the gateway forwards to the model; a
table without it serves every model for generate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

LOADING_LIMIT = 200  # characters of a model's loading line a table may carry


@dataclass(frozen=True, slots=True)
class Replica:
    """One ready backend server: where to send requests and how many it takes at once."""

    id: str
    url: str
    max_concurrency: int = 1
    gpus: tuple[str, ...] = ()  # device IDs it was given (index or MIG UUID); () = CPU or unknown


@dataclass(frozen=True, slots=True)
class Details:
    """What the weights' headers (or the manifest, for hub weights) say about a model; "" = unknown."""

    format: str = ""  # "gguf" or "safetensors"
    family: str = ""  # GGUF general.architecture, or config.json model_type
    parameter_size: str = ""  # "135M", "8.0B": general.size_label, else counted from the tensors
    quantization: str = ""  # GGUF file type ("Q4_1"), or the safetensors dtype ("BF16")
    size: int = 0  # bytes on disk
    info: tuple[tuple[str, str | int | float], ...] = ()  # a few header keys (Ollama's model_info)
    template: str = ""  # the chat template the weights carry

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "family": self.family,
            "parameter_size": self.parameter_size,
            "quantization": self.quantization,
            "size": self.size,
            "info": dict(self.info),
            "template": self.template,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Details:
        info = data.get("info") or {}
        return cls(
            format=str(data.get("format", "")),
            family=str(data.get("family", "")),
            parameter_size=str(data.get("parameter_size", "")),
            quantization=str(data.get("quantization", "")),
            size=int(data.get("size", 0)),
            info=tuple((str(k), v) for k, v in info.items() if isinstance(v, str | int | float)),
            template=str(data.get("template", "")),
        )


@dataclass(frozen=True, slots=True)
class ModelEndpoints:
    """A served model, the extra names it answers to, and its ready replicas."""

    name: str
    aliases: tuple[str, ...] = ()
    created: int = 0
    replicas: tuple[Replica, ...] = ()
    # How the gateway spreads this model's requests: "least-outstanding", "prefix-affinity"
    # (a conversation returns to the replica holding its KV cache while it is not overloaded)
    # or "round-robin". From the manifest's `balancing`.
    balancing: str = "least-outstanding"
    # How long a request may be held while the model has no ready replica (a cold start, a swap):
    # seconds for llama.cpp, minutes for vLLM. None: the gateway's own default.
    load_timeout_s: float | None = None
    engine: str = ""  # "llamacpp" or "vllm"; "" from an older controller
    context_length: int | None = None  # the manifest's context_length (None: the engine's default)
    # Seconds without requests after which the controller stops the model's last replica (on demand,
    # min_replicas 0); None: it stays loaded.
    unload_after_s: float | None = None
    details: Details | None = None
    # The model's LoRA adapters, in the engine's order (llama.cpp: the k-th is adapter id k).
    adapters: tuple[str, ...] = ()
    vision: bool | None = None  # takes images; None: unknown (not checked)
    # What a model without ready replicas waits for, in words ("pulling 42% (120.0 of 290.1 MiB)"):
    # the gateway adds it to the loading comments of held streams. "" when nothing is said.
    loading: str = ""
    task: str = "generate"  # one of TASKS: the APIs the gateway forwards to it (docs/tasks.md)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class Target(NamedTuple):
    """What a request's model name selects: a served model, and one of its adapters (or None)."""

    entry: ModelEndpoints
    adapter: int | None = None  # index into ``entry.adapters``; None: the model itself

    @property
    def name(self) -> str:
        """The canonical name of what was selected: the adapter's, else the model's (never an alias)."""
        return self.entry.name if self.adapter is None else self.entry.adapters[self.adapter]


@dataclass(frozen=True, slots=True)
class EndpointTable:
    """Every model the controller serves, at one version of one controller's run (``epoch``)."""

    version: int = 0
    models: tuple[ModelEndpoints, ...] = field(default_factory=tuple)
    epoch: str = ""  # random per controller start; "" before any (or from an older controller)

    def same_as(self, epoch: str, version: int) -> bool:
        """True when this is the table a client holding ``epoch`` and ``version`` already has."""
        return self.epoch == epoch and self.version == version

    def lookup(self, model: str) -> ModelEndpoints | None:
        """Return the model served under ``model`` (its name or an alias), or None."""
        for entry in self.models:
            if model in entry.names:
                return entry
        return None

    def resolve(self, name: str) -> Target | None:
        """Return what ``name`` selects, or None: a model (its name or an alias), an adapter (its
        name), or ``<model or alias>:<adapter>`` (the model's own adapter only)."""
        entry = self.lookup(name)
        if entry is not None:
            return Target(entry)
        base, colon, adapter = name.partition(":")
        for entry in self.models:
            if colon and base not in entry.names:
                continue
            wanted = adapter if colon else name
            if wanted in entry.adapters:
                return Target(entry, entry.adapters.index(wanted))
        return None

    def served_names(self) -> tuple[str, ...]:
        """Every name a client may use for a model or an adapter (``<model>:<adapter>`` aside)."""
        return tuple(n for m in self.models for n in (*m.names, *m.adapters))

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "version": self.version,
            "models": [
                {
                    "name": m.name,
                    "aliases": list(m.aliases),
                    "created": m.created,
                    "balancing": m.balancing,
                    "load_timeout_s": m.load_timeout_s,
                    "replicas": [
                        {"id": r.id, "url": r.url, "max_concurrency": r.max_concurrency, "gpus": list(r.gpus)}
                        for r in m.replicas
                    ],
                    "engine": m.engine,
                    "context_length": m.context_length,
                    "unload_after_s": m.unload_after_s,
                    "details": m.details.to_json() if m.details is not None else None,
                    "adapters": list(m.adapters),
                    "vision": m.vision,
                    "loading": m.loading,
                    "task": m.task,
                }
                for m in self.models
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndpointTable:
        """Parse the wire format; raises KeyError/TypeError/ValueError on a malformed document."""
        models = tuple(
            ModelEndpoints(
                name=str(m["name"]),
                aliases=tuple(str(a) for a in m.get("aliases", ())),
                created=int(m.get("created", 0)),
                balancing=str(m.get("balancing", "least-outstanding")),
                load_timeout_s=_optional_float(m.get("load_timeout_s")),
                replicas=tuple(
                    Replica(
                        id=str(r["id"]),
                        url=str(r["url"]),
                        max_concurrency=int(r.get("max_concurrency", 1)),
                        gpus=tuple(str(g) for g in r.get("gpus", ())),
                    )
                    for r in m.get("replicas", ())
                ),
                engine=str(m.get("engine", "")),
                context_length=_optional_int(m.get("context_length")),
                unload_after_s=_optional_float(m.get("unload_after_s")),
                details=Details.from_json(m["details"]) if m.get("details") else None,
                adapters=tuple(str(a) for a in m.get("adapters") or ()),
                vision=_optional_bool(m.get("vision")),
                loading=str(m.get("loading", ""))[:LOADING_LIMIT],
                task=known_task(m.get("task", "generate")),
            )
            for m in data["models"]
        )
        return cls(version=int(data["version"]), models=models, epoch=str(data.get("epoch", "")))


# What a model is for (the manifest's ``task``); a table from an older controller has none: generate.
GENERATE, EMBED, RERANK = "generate", "embed", "rerank"
TASKS = (GENERATE, EMBED, RERANK)
# The engines a model's ``engine`` names (the manifest's); "" from an older controller.
LLAMACPP, VLLM = "llamacpp", "vllm"


def known_task(value: Any) -> str:
    """``value`` if it is one of TASKS; raises ValueError (the table is malformed) otherwise."""
    if value not in TASKS:
        raise ValueError(f"unknown task {str(value)[:40]!r}")
    return str(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"vision must be true, false or null, not {value!r}")
