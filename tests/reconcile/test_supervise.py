"""Supervision's parts: errors counted and logged once, backoff doubling to a cap, tasks started
again, and the heartbeat liveness reads (progress inside a long pass counts only while healthy)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.reconcile.supervise import Backoff, Failures, Heartbeat, default_liveness_s, supervised


def test_an_error_is_counted_every_time_and_logged_once_until_it_changes_or_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = Failures()
    caplog.set_level(logging.INFO, logger="controller.reconcile.supervise")
    said = [
        failures.record("energy", KeyError("gpu"), then="again"),
        failures.record("energy", KeyError("gpu"), then="again"),
        failures.record("energy", KeyError("mig"), then="again"),  # changed: logged
        failures.record("docker-events", KeyError("mig"), then="again"),  # another task: its own
        failures.record("energy", KeyError("mig"), stage="x", subject="a-0", then="again"),  # a subject
    ]
    failures.recovered("energy")
    said.append(failures.record("energy", KeyError("mig"), then="again"))  # news again after recovery
    assert said == [True, False, True, True, True, True]
    assert failures.counts == {("energy", ""): 4, ("docker-events", ""): 1, ("energy", "x"): 1}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert all(r.exc_info is not None for r in errors) and len(errors) == 5
    assert errors[-2].getMessage() == "energy failed (at x a-0); again: KeyError: 'mig'"
    assert "energy works again" in caplog.messages


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, max_s=30.0)
    assert [backoff.next() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.streak = 10**6  # no overflow however long it repeats
    assert backoff.next() == 30.0
    backoff.reset()
    assert backoff.next() == 0.5


async def test_a_task_is_started_again_with_backoff_and_cancelling_stops_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    failures = Failures()

    async def broken() -> None:
        runs.append(len(runs))
        raise ValueError(f"a document the parser did not expect (#{len(runs)})")  # each one new

    caplog.set_level(logging.ERROR, logger="controller.reconcile.supervise")
    task = asyncio.create_task(supervised("scraper", broken, failures=failures, first_s=0.01, max_s=0.04))
    for _ in range(1000):
        if len(runs) >= 5:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failures.counts[("scraper", "")] == len(runs) >= 5
    delays = [r.getMessage().split("starting it again in ")[1].split("s:")[0] for r in caplog.records]
    assert delays[:5] == ["0.01", "0.02", "0.04", "0.04", "0.04"]  # doubling, capped
    assert caplog.records[0].exc_info is not None


async def test_a_task_that_returns_is_done() -> None:
    async def done() -> None:
        return None

    await asyncio.wait_for(supervised("once", done, failures=Failures()), 5)


async def test_a_run_that_lasted_counts_as_recovered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="controller.reconcile.supervise")
    now = [0.0]
    runs: list[int] = []
    failures = Failures()

    async def fails_after_a_while() -> None:
        runs.append(len(runs))
        now[0] += 100.0  # each run "lasts" 100 s, longer than healthy_after_s
        raise ValueError("same")

    task = asyncio.create_task(
        supervised("w", fails_after_a_while, failures=failures, first_s=0.001, clock=lambda: now[0])
    )
    for _ in range(1000):
        if len(runs) >= 3:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Each logged again, with the first delay again: recovered in between.
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == len(runs) >= 3
    assert all(m.startswith("w failed; starting it again in 0.001s") for m in said)


def test_heartbeat_counts_completed_passes_and_progress_only_while_healthy() -> None:
    now = [0.0]
    beat = Heartbeat(60.0, clock=lambda: now[0])
    now[0] = 59.0
    assert beat.status().ok  # the start counts as a pass: the first one has the whole bound
    now[0] = 61.0
    assert not beat.status("create").ok
    beat.progressed()  # a long pass that creates replica after replica is alive
    now[0] = 100.0
    live = beat.status("create")
    assert live.ok and live.since_pass_s == 39.0 and live.stage == "create"
    beat.broke(OverflowError("timestamp out of range"))
    beat.progressed()  # a failing loop's progress proves nothing
    now[0] = 122.0
    live = beat.status("desire")
    assert not live.ok and live.error == "OverflowError"
    assert live.to_json() == {
        "status": "stalled",
        "since_last_pass_s": 61.0,
        "bound_s": 60.0,
        "stage": "desire",
        "error": "OverflowError",
    }
    assert "no reconcile pass completed for 61s (bound 60s" in live.describe()
    beat.completed()
    assert beat.status().ok and beat.status().error == ""


@pytest.mark.parametrize(("interval_s", "bound_s"), [(5.0, 90.0), (0.5, 90.0), (30.0, 180.0)])
def test_the_default_bound_outlasts_a_docker_call_and_several_intervals(
    interval_s: float, bound_s: float
) -> None:
    assert default_liveness_s(interval_s) == bound_s
