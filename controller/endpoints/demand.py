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

The controller's API faces anything on its network, so a report is parsed into a typed model with
bounds (``parse``) before anything believes it: counts are integers from 0 to ``MAX_COUNT``,
``last_active`` a finite time no more than ``FUTURE_SLACK_S`` ahead of the controller's clock and
no more than ``MAX_AGE_S`` behind it (or 0), ``keep_alive_s`` -1 to ``MAX_KEEP_ALIVE_S``, the
reporter and the model names bounded strings, at most ``MAX_MODELS`` models. A figure that is not
a plain JSON number of the right kind (``true``, ``"3"``, ``NaN``, ``1e400``) is refused, naming its
field; fields this controller does not know are ignored (a newer gateway may send more). Which
names are models is the controller's to say (``DemandReport.known``), not this format's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

MAX_MODELS = 1000  # models in one report (a gateway reports those it has seen requests for)
MAX_NAME = 256  # characters of the reporter id and of a model name
MAX_COUNT = 1_000_000  # in_flight and waiting, per model and reporter
FUTURE_SLACK_S = 5.0  # how far last_active may be ahead of the controller's clock (skew, rounding)
MAX_AGE_S = 10 * 365 * 86400.0  # how far behind it (a time before that is garbage, not history)
MAX_KEEP_ALIVE_S = 10 * 365 * 86400.0  # the longest keep-alive that is not -1, "for ever"


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
        """The wire format. A client's keep-alive is sent as the format bounds it (``wire_keep_alive``),
        so no value a client of the gateway chose can get the whole report refused."""
        models: dict[str, dict[str, Any]] = {}
        for name, d in self.models.items():
            figures: dict[str, Any] = {
                "in_flight": d.in_flight,
                "waiting": d.waiting,
                "last_active": d.last_active,
            }
            keep = wire_keep_alive(d.keep_alive_s)
            if keep is not None:
                figures["keep_alive_s"] = keep
            models[name] = figures
        return {"reporter": self.reporter, "models": models}

    def known(self, names: Mapping[str, str]) -> tuple[DemandReport, tuple[str, ...]]:
        """This report with only the models ``names`` knows (name or alias -> model name), keyed by
        model name (an alias's figures added to its model's), and the names it did not know."""
        models: dict[str, ModelDemand] = {}
        unknown: list[str] = []
        for name, demand in self.models.items():
            model = names.get(name)
            if model is None:
                unknown.append(name)
            else:
                models[model] = models[model].plus(demand) if model in models else demand
        return DemandReport(self.reporter, models), tuple(unknown)

    @classmethod
    def from_json(cls, data: Any, *, now: float | None = None) -> DemandReport:
        """Parse the wire format, already decoded from JSON, against the clock ``now`` (default:
        this process's). Raises pydantic's ValidationError (a ValueError) naming each bad field."""
        wire = _Report.model_validate(data, context={"now": _now(now)})
        return wire.report()

    @classmethod
    def parse(cls, body: bytes | str, *, now: float | None = None) -> DemandReport:
        """Parse a request body (JSON text). Raises ValidationError as ``from_json`` does, also for
        text that is not JSON or nests too deep."""
        wire = _Report.model_validate_json(body, context={"now": _now(now)})
        return wire.report()


def wire_keep_alive(seconds: float | None) -> float | None:
    """A keep-alive as the wire format carries it: longer than ``MAX_KEEP_ALIVE_S`` (ten years) is
    for ever, so -1, as any negative; a NaN says nothing, so None."""
    if seconds is None or math.isnan(seconds):
        return None
    return -1.0 if seconds < 0 or seconds > MAX_KEEP_ALIVE_S else seconds


def _now(now: float | None) -> float:
    return time.time() if now is None else now


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class _Figures(BaseModel):
    """One model's figures on the wire; checked, then turned into a ModelDemand."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")

    in_flight: Count = 0
    waiting: Count = 0
    last_active: Annotated[float, Field(ge=0)] = 0.0
    keep_alive_s: Annotated[float, Field(ge=-1, le=MAX_KEEP_ALIVE_S)] | None = None

    @field_validator("last_active")
    @classmethod
    def _near_now(cls, value: float, info: ValidationInfo) -> float:
        if value == 0:  # none seen
            return value
        now = float((info.context or {}).get("now", time.time()))
        if value > now + FUTURE_SLACK_S:
            raise ValueError(
                f"{value:.17g} is {value - now:.3g} s ahead of the controller's clock "
                f"(at most {FUTURE_SLACK_S:g} s); unix seconds, please"
            )
        if value < now - MAX_AGE_S:
            years = MAX_AGE_S / 86400 / 365
            raise ValueError(f"{value:.17g} is more than {years:g} years ago (0: none seen)")
        return value

    def demand(self) -> ModelDemand:
        return ModelDemand(self.in_flight, self.waiting, self.last_active, self.keep_alive_s)


class _Report(BaseModel):
    """A report on the wire (the format in this module's docstring)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")

    reporter: Name
    models: Annotated[dict[Name, _Figures], Field(max_length=MAX_MODELS)] = Field(default_factory=dict)

    def report(self) -> DemandReport:
        return DemandReport(self.reporter, {name: f.demand() for name, f in self.models.items()})
