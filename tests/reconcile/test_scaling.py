"""Scaling decisions: from zero, up on steady load, down slower than up, to zero when idle."""

from __future__ import annotations

import itertools

import pytest

from controller.endpoints.demand import DemandReport, ModelDemand
from controller.reconcile.demand import DemandBoard
from controller.reconcile.scaling import Bounds, Scaler, ScalingSettings, desired_count

ON_DEMAND = Bounds(low=0, high=3, target=2, idle_timeout_s=60)
ALWAYS_ONE = Bounds(low=1, high=3, target=2, idle_timeout_s=60)


@pytest.mark.parametrize(
    ("bounds", "current", "average", "peak", "waiting", "idle_s", "count"),
    [
        (Bounds(2, 2, 4, 60), 0, 0, 0, 0, 999, 2),  # fixed: always N, load or not
        (Bounds(2, 2, 4, 60), 2, 50, 50, 9, 0, 2),
        (ON_DEMAND, 0, 0, 0, 0, 999, 0),  # idle and at zero: stays there
        (ON_DEMAND, 0, 1, 1, 1, 0, 1),  # a request waits: scale from zero
        (ON_DEMAND, 0, 9, 9, 9, 0, 3),  # a crowd waits: as many as it needs, up to max
        (ON_DEMAND, 0, 1, 1, 0, 5, 0),  # just scaled to zero: the load of seconds ago starts nothing
        (ON_DEMAND, 1, 2, 2, 0, 0, 1),  # exactly one replica's target: enough
        (ON_DEMAND, 1, 2.5, 3, 0, 0, 2),  # steady load above one replica's target: up
        (ON_DEMAND, 2, 20, 20, 5, 0, 3),  # capped at max
        (ON_DEMAND, 3, 1, 5, 0, 0, 3),  # the average dropped but the peak still needs 3
        (ON_DEMAND, 3, 0.5, 1, 0, 0, 1),  # the peak over the down window fits in one
        (ON_DEMAND, 1, 0, 0, 0, 30, 1),  # quiet, not yet idle: keeps one
        (ON_DEMAND, 1, 0, 0, 0, 60, 0),  # idle for idle_timeout: scaled to zero
        (ON_DEMAND, 2, 0, 4, 0, 61, 0),  # idle trumps an old peak
        (ALWAYS_ONE, 2, 0, 0, 0, 600, 1),  # idle goes down to min, never below
        (Bounds(0, 3, 2, 0), 1, 0, 0, 0, 10_000, 1),  # idle_timeout 0: never idle
    ],
)
def test_desired_count(
    bounds: Bounds, current: int, average: float, peak: float, waiting: int, idle_s: float, count: int
) -> None:
    decision = desired_count(bounds, current, average=average, peak=peak, waiting=waiting, idle_s=idle_s)
    assert decision.count == count, decision.reason


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_scaler_goes_up_fast_and_down_slowly_without_flapping() -> None:
    clock = Clock()
    scaler = Scaler(ScalingSettings(up_window_s=5, down_window_s=60), clock=clock)
    bounds = Bounds(low=0, high=4, target=2, idle_timeout_s=300)
    counts = []
    for second in range(120):  # 30 s of 6 requests in flight, then 90 s of 1
        clock.now += 1
        load = 6 if second < 30 else 1
        waiting, served = (load, 0) if second == 0 else (0, load)  # from zero they wait first
        demand = ModelDemand(in_flight=served, waiting=waiting, last_active=clock.now)
        decision = scaler.decide("m", bounds, demand, running=0)
        counts.append(decision.count)
    assert counts[0] == 3  # six waiting from zero: straight to three
    assert set(counts[:90]) == {3}  # the minute after the load fell: still three
    assert counts[-1] == 1  # then one (still in use: never to zero)
    assert sum(a != b for a, b in itertools.pairwise(counts)) == 1  # one change down: no flapping


def test_scaler_scales_to_zero_after_idle_timeout_and_seeds_from_what_runs() -> None:
    clock = Clock()
    scaler = Scaler(clock=clock)
    bounds = Bounds(low=0, high=2, target=2, idle_timeout_s=10)
    used = clock.now
    # A restarted controller finds two replicas running: it continues from two, not from zero.
    assert scaler.decide("m", bounds, ModelDemand(last_active=used), running=2).count == 2
    clock.now += 9
    assert scaler.decide("m", bounds, ModelDemand(last_active=used), running=2).count >= 1
    clock.now += 2
    decision = scaler.decide("m", bounds, ModelDemand(last_active=used), running=2)
    assert decision.count == 0 and "idle" in decision.reason


def test_a_model_never_used_since_start_is_idle_from_the_controller_start() -> None:
    clock = Clock()
    scaler = Scaler(clock=clock)
    bounds = Bounds(low=0, high=1, target=1, idle_timeout_s=10)
    assert scaler.decide("m", bounds, ModelDemand(), running=1).count == 1  # adopted, not dropped at once
    clock.now += 11
    assert scaler.decide("m", bounds, ModelDemand(), running=1).count == 0


def test_demand_board_adds_reporters_and_forgets_silent_ones_but_not_last_use() -> None:
    clock = Clock()
    board = DemandBoard(stale_after_s=10, clock=clock)
    assert not board.record(DemandReport("a", {"m": ModelDemand(in_flight=2, last_active=5.0)}))
    assert board.record(DemandReport("b", {"m": ModelDemand(waiting=1, last_active=7.0)}))
    assert board.demand("m") == ModelDemand(in_flight=2, waiting=1, last_active=7.0)
    board.record(DemandReport("a", {"m": ModelDemand(in_flight=1, last_active=8.0)}))  # replaces a's
    assert board.demand("m") == ModelDemand(in_flight=1, waiting=1, last_active=8.0)
    clock.now += 11
    assert board.demand("m") == ModelDemand(last_active=8.0)  # both silent: figures gone, use kept
    assert board.demand("other") == ModelDemand()


def test_demand_reports_parse_and_refuse_nonsense_by_field() -> None:
    report = DemandReport("g1", {"m": ModelDemand(1, 2, 3.5)})
    assert DemandReport.from_json(report.to_json(), now=100.0) == report
    for bad, words in [
        ({"models": {}}, "reporter"),
        ({"reporter": "g", "models": []}, "models"),
        ({"reporter": "g", "models": {"m": {"in_flight": "x"}}}, "models.m"),
        ({"reporter": "g", "models": {"m": {"waiting": -1}}}, "greater than or equal to 0"),
    ]:
        with pytest.raises(ValueError, match=words):
            DemandReport.from_json(bad)


def test_a_clients_keep_alive_overrides_the_idle_timeout() -> None:
    """Ollama's keep_alive: 0 lets the model go as soon as nothing is in flight, -1 keeps it for
    ever, N seconds replaces the manifest's idle_timeout; a fixed model ignores it."""
    clock = Clock()
    bounds = Bounds(low=0, high=1, target=1, idle_timeout_s=300)
    used = clock.now
    cases = [(0.0, 1, 0), (-1.0, 10_000, 1), (30.0, 29, 1), (30.0, 31, 0), (None, 299, 1)]
    for keep, later, count in cases:
        scaler = Scaler(clock=clock)
        scaler.started = used
        clock.now = used + later
        demand = ModelDemand(last_active=used, keep_alive_s=keep)
        assert scaler.decide("m", bounds, demand, running=1).count == count, (keep, later)
    fixed = Bounds(low=1, high=1, target=1, idle_timeout_s=300)
    assert Scaler(clock=clock).decide("m", fixed, ModelDemand(keep_alive_s=0.0), running=1).count == 1


def test_the_board_remembers_the_latest_keep_alive_and_reports_carry_it() -> None:
    clock = Clock()
    board = DemandBoard(stale_after_s=10, clock=clock)
    board.record(DemandReport("a", {"m": ModelDemand(last_active=5.0, keep_alive_s=600.0)}))
    board.record(DemandReport("b", {"m": ModelDemand(last_active=6.0, keep_alive_s=0.0)}))
    assert board.demand("m").keep_alive_s == 0.0  # the latest request's word wins
    clock.now += 11
    assert board.demand("m").keep_alive_s == 0.0  # remembered after the reporters went quiet
    report = DemandReport("g", {"m": ModelDemand(1, 0, 2.0, -1.0), "n": ModelDemand(0, 1, 3.0)})
    assert DemandReport.from_json(report.to_json(), now=100.0) == report
    assert "keep_alive_s" not in report.to_json()["models"]["n"]
