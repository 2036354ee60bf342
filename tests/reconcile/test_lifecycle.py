"""Restart backoff and health timing, over a fake clock (plain numbers)."""

from __future__ import annotations

from controller.reconcile.lifecycle import Lifecycle, LifecycleSettings

SLOT = ("m", 0)


def test_backoff_doubles_and_is_capped() -> None:
    life = Lifecycle(LifecycleSettings(backoff_initial_s=2, backoff_max_s=10))
    delays = [life.failed(SLOT, "boom", now=0) for _ in range(5)]
    assert delays == [2, 4, 8, 10, 10]
    assert not life.may_start(SLOT, now=9.9) and life.may_start(SLOT, now=10)
    assert (life.slot(SLOT).restarts, life.slot(SLOT).reason) == (5, "boom")


def test_a_stable_replica_resets_the_failure_count_but_not_the_restart_total() -> None:
    life = Lifecycle(LifecycleSettings(stable_after_s=60))
    life.failed(SLOT, "boom", now=0)
    life.failed(SLOT, "boom", now=0)
    assert life.observe("c1", SLOT, ready=True, now=100) is None
    assert life.slot(SLOT).failures == 2
    life.observe("c1", SLOT, ready=True, now=160)
    assert (life.slot(SLOT).failures, life.slot(SLOT).restarts) == (0, 2)


def test_unhealthy_after_being_ready_and_never_ready_are_reasons_to_replace() -> None:
    life = Lifecycle(LifecycleSettings(unhealthy_after_s=30, start_timeout_s=600))
    assert life.observe("c1", SLOT, ready=False, now=0) is None
    assert life.observe("c1", SLOT, ready=True, now=5) is None
    assert life.observe("c1", SLOT, ready=False, now=20) is None
    assert "stopped answering" in (life.observe("c1", SLOT, ready=False, now=35) or "")
    assert life.observe("c2", SLOT, ready=False, now=0) is None
    assert "not ready 600s" in (life.observe("c2", SLOT, ready=False, now=600) or "")


def test_forget_drops_containers_that_are_gone() -> None:
    life = Lifecycle()
    life.observe("c1", SLOT, ready=True, now=0)
    life.observe("c2", SLOT, ready=True, now=0)
    life.forget({"c2"})
    assert set(life.containers) == {"c2"} and life.ready_once("c2") and not life.ready_once("c1")


def test_one_container_is_counted_once_however_many_passes_see_it() -> None:
    life = Lifecycle(LifecycleSettings(backoff_initial_s=2, backoff_max_s=300))
    delays = [life.container_failed("c1", SLOT, "boom", now=t) for t in range(10)]
    assert delays == [2, *[None] * 9]
    assert (life.slot(SLOT).restarts, life.slot(SLOT).failures) == (1, 1)
    assert life.container_failed("c2", SLOT, "boom", now=10) == 4  # the next container: doubled
    life.forget({"c2"})
    assert life.counted == {"c2"}


def test_a_stop_that_is_not_a_crash_restarts_at_once_and_keeps_the_backoff() -> None:
    life = Lifecycle(LifecycleSettings(backoff_initial_s=2, backoff_max_s=300))
    life.failed(SLOT, "boom", now=0)
    assert life.container_failed("c1", SLOT, "engine stopped it", now=5, crash=False) == 0
    record = life.slot(SLOT)
    assert (record.restarts, record.failures, record.reason) == (2, 1, "engine stopped it")
    assert life.may_start(SLOT, now=5)


def test_a_failed_removal_is_reported_once_per_container() -> None:
    life = Lifecycle()
    assert [life.first_removal_failure("c1") for _ in range(3)] == [True, False, False]
    assert life.first_removal_failure("c2")
    life.forget(set())
    assert life.first_removal_failure("c1")  # forgotten once it is gone
