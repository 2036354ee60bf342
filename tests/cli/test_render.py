"""Status rows as `modelctl status` prints them: replicas, and on-demand models with their scaling."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.cli.render import render_table

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def replica(model: str, index: int, state: str) -> dict[str, object]:
    return {
        "model": model,
        "replica": index,
        "state": state,
        "restarts": 0,
        "started_at": "2026-12-01T11:59:00Z",
        "endpoint": "http://10.0.0.2:8080" if state == "Ready" else None,
        "container": f"modelctl-{model}-{index}-abcd",
        "reason": "",
    }


def scaling(model: str, low: int, high: int, desired: int, reason: str, used: str = "") -> dict[str, object]:
    return {
        "model": model,
        "min_replicas": low,
        "max_replicas": high,
        "desired": desired,
        "reason": reason,
        "in_flight": 0,
        "waiting": 0,
        "last_used": used,
    }


def test_a_scaled_to_zero_model_shows_as_such_with_its_last_use() -> None:
    payload = {
        "replicas": [replica("chat", 0, "Ready"), replica("chat", 1, "Ready")],
        "models": [
            scaling("chat", 2, 2, 2, "fixed"),
            scaling("coder", 0, 2, 0, "idle for 301s", used="2026-12-01T11:55:00+00:00"),
        ],
        "manifest_errors": [],
    }
    text = render_table(payload, now=NOW)
    coder = next(line for line in text.splitlines() if line.startswith("coder"))
    assert "0-2" in coder and "5m ago" in coder and "scaled to zero" in coder
    assert not any(line.startswith("chat ") and "0-2" in line for line in text.splitlines())  # fixed: no row
    assert "(no models)" not in text


def test_an_on_demand_model_counts_its_ready_replicas() -> None:
    payload = {
        "replicas": [replica("coder", 0, "Ready"), replica("coder", 1, "Starting")],
        "models": [
            scaling("coder", 0, 3, 2, "load 5.0 needs 2 at 4 per replica", used="2026-12-01T12:00:00Z")
        ],
    }
    row = next(line for line in render_table(payload, now=NOW).splitlines()[4:] if line.startswith("coder"))
    assert row.split()[1:4] == ["1", "2", "0-3"]
    assert "load 5.0 needs 2" in row and "0s ago" in row


def test_a_controller_without_models_says_so_instead_of_failing() -> None:
    text = render_table({"replicas": [], "models": [], "manifest_errors": [], "notes": []})
    assert text.splitlines()[0].split()[:2] == ["MODEL", "REPLICA"]
    assert "(no models)" in text
