"""Replica states as a type: the eight values ``modelctl status``, ``/v1/status`` and the console
show, and the moves between them the control loop makes.

A row's state is derived each pass from what Docker and the health checks say (``status.statuses``),
so a state is never set by hand; the table below is what the design allows from one pass to the
next for the same row (a container's row: keyed by its name; a slot without a container: by its
model and replica). ``unexpected`` lists the moves outside the table, and the loop logs each one
(a warning) and goes on rather than raising: the states follow the outside world, which may do what
the design does not (someone runs ``docker restart`` on a draining replica), and a pass that
raised would stop converging everything else over one odd row. A row that appears or goes is no
move: containers are adopted in any state and leave from any state.

The JSON values are the enum's values, unchanged ("Pending", "BackingOff", ...): the console's
script and the CLI compare them as strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Protocol


class ReplicaState(StrEnum):
    PENDING = "Pending"  # cannot be placed or built (the reason says why)
    WAITING = "Waiting"  # rolls after another replica of the same model
    BACKING_OFF = "BackingOff"  # crashed or could not start; waits before the next start
    PULLING = "Pulling"  # hub weights downloading into the cache; the container starts after
    STARTING = "Starting"  # container up (or about to be created), engine not ready yet
    READY = "Ready"  # answers its health check: in the endpoint table
    OUTDATED = "Outdated"  # an old spec still serving while its replacement starts
    DRAINING = "Draining"  # leaving: finishing its requests, then removed


S = ReplicaState

# From each state, the states the same row may have on the next pass (staying is always allowed).
# Slot rows (no container: Pending, Waiting, BackingOff, Pulling, and Starting before its create) move among
# themselves as placement, rolls and backoff change; a container's row goes Starting -> Ready ->
# Outdated -> Draining, back to Starting when its engine stops answering, and a Draining container
# only leaves.
TRANSITIONS: Mapping[ReplicaState, frozenset[ReplicaState]] = {
    S.PENDING: frozenset({S.WAITING, S.BACKING_OFF, S.PULLING, S.STARTING}),
    S.WAITING: frozenset({S.PENDING, S.BACKING_OFF, S.PULLING, S.STARTING}),
    S.BACKING_OFF: frozenset({S.PENDING, S.WAITING, S.PULLING, S.STARTING}),
    S.PULLING: frozenset({S.PENDING, S.WAITING, S.BACKING_OFF, S.STARTING}),
    S.STARTING: frozenset({S.PENDING, S.WAITING, S.BACKING_OFF, S.PULLING, S.READY, S.OUTDATED, S.DRAINING}),
    S.READY: frozenset({S.STARTING, S.OUTDATED, S.DRAINING}),
    S.OUTDATED: frozenset({S.READY, S.STARTING, S.DRAINING}),
    S.DRAINING: frozenset(),
}


def allowed(before: ReplicaState, after: ReplicaState) -> bool:
    """True when a row may go from ``before`` to ``after`` between two passes."""
    return before == after or after in TRANSITIONS[before]


class Row(Protocol):
    @property
    def model(self) -> str: ...
    @property
    def replica(self) -> int: ...
    @property
    def state(self) -> ReplicaState: ...
    @property
    def container(self) -> str | None: ...


def key(row: Row) -> tuple[str, int, str]:
    """A row's identity across passes: its container, or its slot when it has none."""
    return (row.model, row.replica, row.container or "")


def unexpected(before: Iterable[Row], after: Iterable[Row]) -> list[str]:
    """One line per row whose state moved outside ``TRANSITIONS`` between two passes' rows."""
    previous = {key(r): r.state for r in before}
    problems = []
    for row in after:
        was = previous.get(key(row))
        if was is not None and not allowed(was, row.state):
            name = row.container or f"{row.model}-{row.replica}"
            problems.append(f"replica {name}: {was} -> {row.state} is not a transition the loop makes")
    return problems
