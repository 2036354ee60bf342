"""The endpoint table: the one contract between the control plane and the data plane.

The controller publishes which replicas are *ready* for each model; the gateway routes to them. It is
plain data with a JSON form so that the gateway can live in another process (or container) without a
Docker socket, and keep serving the last table it received when the controller is away.

Wire format (``GET /v1/endpoints`` on the controller's internal API)::

    {"version": 7,
     "models": [{"name": "smollm2", "aliases": ["smollm"], "created": 1764120000,
                 "balancing": "prefix-affinity", "load_timeout_s": 60.0,
                 "replicas": [{"id": "smollm2-0", "url": "http://172.18.0.3:8080",
                               "max_concurrency": 4}]}]}

``version`` grows whenever the table changes, so a client can long-poll with ``?after=<version>``.
A model with no ready replica is still listed (the gateway answers 503, not 404, for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Replica:
    """One ready backend server: where to send requests and how many it takes at once."""

    id: str
    url: str
    max_concurrency: int = 1


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

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True, slots=True)
class EndpointTable:
    """Every model the controller serves, at one version."""

    version: int = 0
    models: tuple[ModelEndpoints, ...] = field(default_factory=tuple)

    def lookup(self, model: str) -> ModelEndpoints | None:
        """Return the model served under ``model`` (its name or an alias), or None."""
        for entry in self.models:
            if model in entry.names:
                return entry
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "models": [
                {
                    "name": m.name,
                    "aliases": list(m.aliases),
                    "created": m.created,
                    "balancing": m.balancing,
                    "load_timeout_s": m.load_timeout_s,
                    "replicas": [
                        {"id": r.id, "url": r.url, "max_concurrency": r.max_concurrency} for r in m.replicas
                    ],
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
                    )
                    for r in m.get("replicas", ())
                ),
            )
            for m in data["models"]
        )
        return cls(version=int(data["version"]), models=models)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
