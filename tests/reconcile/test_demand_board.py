"""The demand board is bounded: a new reporter past the cap is refused, those reporting keep their
place, and a silent one frees its place."""

from __future__ import annotations

import pytest

from controller.endpoints.demand import DemandReport, ModelDemand
from controller.reconcile.demand import DemandBoard, TooManyReporters


def test_a_new_reporter_past_the_cap_is_refused_until_one_goes_silent() -> None:
    clock = [100.0]
    board = DemandBoard(clock=lambda: clock[0], max_reporters=3, stale_after_s=10)
    for name in ("a", "b", "c"):
        board.record(DemandReport(name, {"m": ModelDemand(in_flight=1)}))
    with pytest.raises(TooManyReporters, match="at most 3"):
        board.record(DemandReport("d", {"m": ModelDemand(in_flight=5)}))
    assert board.reporters == 3 and board.demand("m").in_flight == 3  # nothing of d's was kept
    board.record(DemandReport("a", {"m": ModelDemand(in_flight=2)}))  # a reporter in place: fine
    assert board.demand("m").in_flight == 4
    clock[0] += 6
    board.record(DemandReport("a", {}))
    clock[0] += 6  # b and c: silent for 12 s
    board.record(DemandReport("d", {"m": ModelDemand(in_flight=5)}))
    assert board.reporters == 2 and board.demand("m").in_flight == 5
