"""Demand: what the gateway tells the controller about each model's load, for scaling on demand.

The gateway sees every request; the controller owns the replicas. So the data plane reports, per
model, how many requests replicas are serving (``in_flight``), how many it holds waiting for a slot
or for a replica to become ready (``waiting``), and when the model last had a request
(``last_active``, unix seconds). The controller scales from zero when ``waiting`` > 0, autoscales on
``in_flight + waiting`` per replica, and scales to zero after ``idle_timeout`` without activity.

Wire format (``POST /v1/demand`` on the controller's internal API), one report per gateway process::

    {"reporter": "gateway-7f3a-1234", "models": {"smollm2": {"in_flight": 2, "waiting": 1,
                                                             "last_active": 1764120000.5}}}

``keep_alive_s`` (optional) is how long a client asked the model to stay loaded after its request
(Ollama's ``keep_alive``; -1 = for ever, 0 = unload now); it overrides the manifest's idle timeout
of an on-demand model until another request says otherwise.

A report replaces the reporter's previous one; a reporter that stops reporting is forgotten after a
few seconds (its process died), so its figures never hold replicas up forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelDemand:
    """One model's load as one gateway process (or all of them, added up) sees it."""

    in_flight: int = 0  # requests a replica is serving now
    waiting: int = 0  # requests held for a slot, or for a replica to become ready
    last_active: float = 0.0  # unix time a request last started or ended; 0: none seen
    keep_alive_s: float | None = None  # a client's keep-alive for the model (-1: for ever); None: none

    @property
    def load(self) -> int:
        return self.in_flight + self.waiting

    def plus(self, other: ModelDemand) -> ModelDemand:
        latest = self if self.last_active >= other.last_active else other
        keep = latest.keep_alive_s
        if keep is None:
            keep = (other if latest is self else self).keep_alive_s
        return ModelDemand(
            self.in_flight + other.in_flight,
            self.waiting + other.waiting,
            max(self.last_active, other.last_active),
            keep,
        )


@dataclass(frozen=True, slots=True)
class DemandReport:
    """One gateway process's view of every model it has seen requests for."""

    reporter: str
    models: Mapping[str, ModelDemand] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "reporter": self.reporter,
            "models": {
                name: {"in_flight": d.in_flight, "waiting": d.waiting, "last_active": d.last_active}
                | ({} if d.keep_alive_s is None else {"keep_alive_s": d.keep_alive_s})
                for name, d in self.models.items()
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> DemandReport:
        """Parse the wire format; raises ValueError (naming the field) on a malformed report."""
        if not isinstance(data, dict) or not isinstance(data.get("reporter"), str):
            raise ValueError("a demand report is a JSON object with a string 'reporter'")
        models = data.get("models", {})
        if not isinstance(models, dict):
            raise ValueError("'models' must be an object of model name -> figures")
        return cls(data["reporter"], {str(k): _figures(str(k), v) for k, v in models.items()})


def _figures(model: str, value: Any) -> ModelDemand:
    if not isinstance(value, dict):
        raise ValueError(f"models.{model} must be an object")
    try:
        keep = value.get("keep_alive_s")
        demand = ModelDemand(
            int(value.get("in_flight", 0)),
            int(value.get("waiting", 0)),
            float(value.get("last_active", 0)),
            None if keep is None else float(keep),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"models.{model}: in_flight and waiting are integers, last_active a number") from exc
    if demand.in_flight < 0 or demand.waiting < 0:
        raise ValueError(f"models.{model}: in_flight and waiting cannot be negative")
    return demand
