"""Replica states as a type: eight values, the JSON strings the console and CLI compare, and the
moves between passes in one table, checked where the loop derives them."""

from __future__ import annotations

import json
import logging

import pytest

from controller.reconcile.states import TRANSITIONS, ReplicaState, allowed, unexpected
from controller.reconcile.status import ReplicaStatus
from tests.reconcile.test_events import model, stack

S = ReplicaState


def test_the_values_are_the_strings_status_has_always_shown() -> None:
    assert [s.value for s in ReplicaState] == [
        "Pending", "Waiting", "BackingOff", "Pulling", "Starting", "Ready", "Outdated", "Draining",
    ]  # fmt: skip
    assert json.dumps({"state": S.BACKING_OFF}) == '{"state": "BackingOff"}'
    assert S.READY == "Ready" and set(TRANSITIONS) == set(ReplicaState)


@pytest.mark.parametrize(
    ("before", "after", "ok"),
    [
        (S.STARTING, S.READY, True),
        (S.READY, S.STARTING, True),  # stopped answering its health check
        (S.READY, S.OUTDATED, True),
        (S.OUTDATED, S.DRAINING, True),
        (S.PENDING, S.STARTING, True),
        (S.BACKING_OFF, S.STARTING, True),
        (S.DRAINING, S.DRAINING, True),
        (S.DRAINING, S.READY, False),  # a drain is not undone
        (S.READY, S.PENDING, False),  # a container's row is never Pending
        (S.OUTDATED, S.BACKING_OFF, False),
        (S.PENDING, S.PULLING, True),  # hub weights pulled before the start
        (S.PULLING, S.STARTING, True),
        (S.PULLING, S.BACKING_OFF, True),  # the pull failed
        (S.PULLING, S.READY, False),  # a pulling slot has no container yet
    ],
)
def test_the_table(before: ReplicaState, after: ReplicaState, ok: bool) -> None:
    assert allowed(before, after) is ok


def test_unexpected_names_the_row_and_ignores_rows_that_come_and_go() -> None:
    before = [
        ReplicaStatus("a", 0, S.DRAINING, container="c-a-0"),
        ReplicaStatus("a", 1, S.READY, container="c-a-1"),
        ReplicaStatus("b", 0, S.PENDING),
    ]
    after = [
        ReplicaStatus("a", 0, S.READY, container="c-a-0"),
        ReplicaStatus("a", 1, S.OUTDATED, container="c-a-1"),
        ReplicaStatus("a", 1, S.STARTING, container="c-a-1-new"),  # a new row: no move
        ReplicaStatus("b", 0, S.BACKING_OFF),
    ]
    assert unexpected(before, after) == [
        "replica c-a-0: Draining -> Ready is not a transition the loop makes"
    ]


async def test_a_roll_and_a_removal_move_only_along_the_table(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="controller.reconcile.loop")
    s = stack([model(max_batch_size=2)])
    await s.passes(1)
    (old,) = s.runtime.containers
    s.prober.mark(old)
    await s.passes(2)
    s.models = [model(max_batch_size=4)]
    await s.passes(2)
    seen = {(r.container, r.state) for r in s.reconciler.reports.current().replicas}
    assert (old.name, S.OUTDATED) in seen
    s.prober.mark(next(c for c in s.runtime.containers if c.id != old.id))
    await s.passes(3)
    s.models = []
    await s.passes(3)
    assert s.runtime.containers == [] and s.reconciler.reports.current().replicas == ()
    assert "is not a transition" not in caplog.text
