"""Which ready replica gets the next request: least outstanding requests, ties taken in turn.

Kept free of aiohttp and of the clock so it can be tested by tables. The proxy asks ``pick`` for a
replica (excluding the ones that already failed this request), then ``acquire``s it and calls the
returned ``done`` callback when the response has ended, however it ended. Counting in-flight requests
here, and not in the backend, is what lets sequential requests alternate and concurrent ones spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controller.endpoints import ModelEndpoints, Replica

Done = Callable[[], None]


class Balancer:
    """In-flight counts per replica id and a round-robin cursor per model.

    Not thread-safe by design: the gateway runs on one event loop, and nothing here awaits.
    """

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._cursor: dict[str, int] = {}

    def in_flight(self, replica_id: str) -> int:
        """Return how many acquired, not yet done, requests ``replica_id`` has."""
        return self._in_flight.get(replica_id, 0)

    def pick(self, model: ModelEndpoints, exclude: Iterable[str] = ()) -> Replica | None:
        """Return the replica of ``model`` with the fewest in-flight requests, or None.

        Replicas whose id is in ``exclude`` are skipped; None means no replica is left. Among equally
        loaded replicas the one after the previous pick (in table order) wins, so sequential requests
        alternate. Picking does not count as a request: call ``acquire`` on the result.
        """
        skipped = set(exclude)
        candidates = [(i, r) for i, r in enumerate(model.replicas) if r.id not in skipped]
        if not candidates:
            return None
        least = min(self.in_flight(r.id) for _, r in candidates)
        tied = [(i, r) for i, r in candidates if self.in_flight(r.id) == least]
        start = self._cursor.get(model.name, 0) % len(model.replicas)
        index, replica = min(tied, key=lambda pair: (pair[0] - start) % len(model.replicas))
        self._cursor[model.name] = index + 1
        return replica

    def acquire(self, replica_id: str) -> Done:
        """Count one more request on ``replica_id``; return the idempotent ``done`` callback."""
        self._in_flight[replica_id] = self.in_flight(replica_id) + 1
        released = False

        def done() -> None:
            nonlocal released
            if released:
                return
            released = True
            remaining = self.in_flight(replica_id) - 1
            if remaining > 0:
                self._in_flight[replica_id] = remaining
            else:
                self._in_flight.pop(replica_id, None)

        return done
