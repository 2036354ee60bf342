"""The demand report's wire format: bounded figures, parsed strictly, names left to the controller."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from controller.endpoints.demand import (
    FUTURE_SLACK_S,
    MAX_COUNT,
    MAX_KEEP_ALIVE_S,
    MAX_MODELS,
    MAX_NAME,
    DemandReport,
    ModelDemand,
)

NOW = 1796170000.0


def test_a_report_round_trips_through_its_wire_format() -> None:
    report = DemandReport("gw-1", {"m": ModelDemand(2, 1, NOW - 3.5, -1.0), "n": ModelDemand()})
    assert DemandReport.from_json(report.to_json(), now=NOW) == report
    assert DemandReport.parse('{"reporter": "gw-1"}', now=NOW) == DemandReport("gw-1")


@pytest.mark.parametrize(
    ("figures", "field"),
    [
        pytest.param({"last_active": 1e300}, "last_active", id="the issue's last_active"),
        pytest.param({"last_active": NOW + FUTURE_SLACK_S + 1}, "last_active", id="in the future"),
        pytest.param({"last_active": -1}, "last_active", id="negative time"),
        pytest.param({"last_active": 3600.0}, "last_active", id="absurdly old"),
        pytest.param({"last_active": "1"}, "last_active", id="time as text"),
        pytest.param({"in_flight": 10**400}, "in_flight", id="a 400-digit count"),
        pytest.param({"in_flight": MAX_COUNT + 1}, "in_flight", id="count past the bound"),
        pytest.param({"waiting": -1}, "waiting", id="negative count"),
        pytest.param({"waiting": True}, "waiting", id="a boolean count"),
        pytest.param({"waiting": 1.0}, "waiting", id="a float count"),
        pytest.param({"waiting": "1"}, "waiting", id="count as text"),
        pytest.param({"keep_alive_s": MAX_KEEP_ALIVE_S * 2}, "keep_alive_s", id="keep-alive past bound"),
        pytest.param({"keep_alive_s": -2}, "keep_alive_s", id="keep-alive below -1"),
    ],
)
def test_figures_out_of_bounds_are_refused_naming_the_field(figures: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DemandReport.from_json({"reporter": "gw", "models": {"m": figures}}, now=NOW)
    assert caught.value.errors()[0]["loc"] == ("models", "m", field)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_json_tokens_that_are_no_finite_number_are_refused(token: str) -> None:
    text = '{"reporter": "gw", "models": {"m": {"last_active": TOKEN}}}'.replace("TOKEN", token)
    with pytest.raises(ValidationError):
        DemandReport.parse(text, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"reporter": ""}, id="empty reporter"),
        pytest.param({"reporter": "r" * (MAX_NAME + 1)}, id="long reporter"),
        pytest.param({"reporter": 7}, id="reporter not a string"),
        pytest.param({"models": {}}, id="no reporter"),
        pytest.param({"reporter": "gw", "models": {"m" * (MAX_NAME + 1): {}}}, id="long model name"),
        pytest.param(
            {"reporter": "gw", "models": {f"m{i}": {} for i in range(MAX_MODELS + 1)}}, id="too many"
        ),
        pytest.param({"reporter": "gw", "models": []}, id="models a list"),
        pytest.param({"reporter": "gw", "models": {"m": 3}}, id="figures a number"),
        pytest.param([], id="a list"),
    ],
)
def test_malformed_reports_are_refused(body: Any) -> None:
    with pytest.raises(ValidationError):
        DemandReport.from_json(body, now=NOW)


def test_the_slack_is_a_few_seconds_and_unknown_fields_are_ignored() -> None:
    ahead = NOW + FUTURE_SLACK_S - 0.5
    parsed = DemandReport.from_json(
        {"reporter": "gw", "newer": 1, "models": {"m": {"last_active": ahead, "tokens": 5}}}, now=NOW
    )
    assert parsed == DemandReport("gw", {"m": ModelDemand(last_active=ahead)})


def test_known_keeps_the_models_it_knows_under_their_names_and_lists_the_rest() -> None:
    report = DemandReport(
        "gw",
        {
            "smollm2": ModelDemand(1, 0, NOW - 5),
            "smollm": ModelDemand(2, 1, NOW - 1, 60.0),  # an alias
            "nope": ModelDemand(9, 9, NOW),
        },
    )
    known, unknown = report.known({"smollm2": "smollm2", "smollm": "smollm2"})
    assert known == DemandReport("gw", {"smollm2": ModelDemand(3, 1, NOW - 1, 60.0)})
    assert unknown == ("nope",)


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        (None, None),
        (math.nan, None),
        (-5.0, -1.0),
        (math.inf, -1.0),
        (1e300, -1.0),
        (0.0, 0.0),
        (600.0, 600.0),
    ],
)
def test_a_clients_keep_alive_is_sent_within_the_formats_bounds(
    asked: float | None, sent: float | None
) -> None:
    """Ollama clients choose keep_alive: a value past the bound must not get the gateway's whole
    report refused (every model's demand lost), so it is sent as what it means."""
    report = DemandReport("gw", {"m": ModelDemand(keep_alive_s=asked)})
    wire = report.to_json()
    assert wire["models"]["m"].get("keep_alive_s") == sent
    assert DemandReport.parse(json.dumps(wire), now=NOW).models["m"].keep_alive_s == sent
