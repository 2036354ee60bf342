"""Which ready replica gets the next request, by the model's ``balancing`` strategy.

Kept free of aiohttp and of the clock so it can be tested by tables. Every strategy only considers
replicas with room (in-flight requests below ``Replica.max_concurrency``, the replica's batch size):
``pick`` returning None while replicas remain means "all full", and the caller queues the request.

- ``least-outstanding``: the lowest load *relative to capacity* (in_flight / max_concurrency), ties
  taken in turn (table order, after the previous pick), so sequential requests alternate.
- ``round-robin``: the next replica in table order that has room.
- ``prefix-affinity``: bounded-load consistent hashing (Mirrokni, Thorup, Zadimoghaddam 2018). The
  request's prefix key (``prefix.prefix_key``) picks a point on a hash ring; the first replica
  clockwise whose in-flight count is below its bound takes it. The bound is
  ``max(ceil(c * (total + 1) * w / W), ceil(w / 2))``, where ``total`` is the model's in-flight sum,
  ``w`` the replica's and ``W`` all replicas' max_concurrency, and ``c`` the load factor (1.25). So a
  conversation returns to the replica holding its KV cache unless that one carries more than c
  times its fair share *and* half its batch slots are busy. The floor is for LLM engines: a replica
  with idle batch slots runs one more request at once, while moving a conversation costs its whole
  history in prompt processing; without it, at light load (one request in flight, bound 1) every
  second turn of a conversation left its cache (measured by bench/routing.py). A request without a
  key (embeddings) falls back to least-outstanding.

Adapters: a model served with LoRA adapters runs each request under one adapter set (llama.cpp
cannot batch sequences of different adapters in one pass, and a slot that changes adapter drops
its cached prompt). So every request of such a model carries a ``group`` (the adapter it names, or
the base), and least-outstanding first prefers a replica with room that runs no other group at the
moment, then the lowest load: two adapters over two replicas settle one per replica, each batching
its own (bench/lora_by_name.py measures it); ``fits`` lets admission's queue hand a freed slot to
a waiter of the group running there. Models without adapters have no groups.

The proxy ``acquire``s the picked replica and calls the returned ``done`` when the response has
ended, however it ended. Not thread-safe by design: one event loop, and nothing here awaits.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection

from controller.endpoints.table import ModelEndpoints, Replica
from controller.gateway.admission.hashring import HashRing

Done = Callable[[], None]

LEAST_OUTSTANDING = "least-outstanding"
PREFIX_AFFINITY = "prefix-affinity"
ROUND_ROBIN = "round-robin"
STRATEGIES = frozenset({LEAST_OUTSTANDING, PREFIX_AFFINITY, ROUND_ROBIN})


class Balancer:
    """In-flight counts per replica id, a turn cursor per model, and a hash ring per replica set."""

    def __init__(self, *, load_factor: float = 1.25, virtual_nodes: int = 64) -> None:
        if load_factor < 1.0:
            raise ValueError(f"load_factor must be at least 1.0, not {load_factor}")
        self._load_factor = load_factor
        self._virtual_nodes = virtual_nodes
        self._in_flight: dict[str, int] = {}
        self._cursor: dict[str, int] = {}
        self._rings: dict[tuple[str, ...], HashRing] = {}
        self._groups: dict[str, Counter[str]] = {}  # replica id -> in-flight requests per group

    def in_flight(self, replica_id: str) -> int:
        """Return how many acquired, not yet done, requests ``replica_id`` has."""
        return self._in_flight.get(replica_id, 0)

    def has_room(self, replica: Replica) -> bool:
        """True while ``replica`` has fewer in-flight requests than its ``max_concurrency``."""
        return self._in_flight.get(replica.id, 0) < replica.max_concurrency

    def pick(
        self,
        model: ModelEndpoints,
        exclude: Collection[str] = (),
        key: int | None = None,
        group: str | None = None,
    ) -> Replica | None:
        """Return the replica of ``model`` that should take the next request, or None.

        Replicas in ``exclude`` (ids that already failed this request) and replicas without room are
        skipped; None means none is left. ``key`` is the request's prefix key, used by
        prefix-affinity only; ``group`` the adapter (or base) a request of a model with adapters
        runs under. Picking does not count as a request: call ``acquire`` on the result.
        """
        replicas = model.replicas
        if len(replicas) == 1:  # the common small deployment: no choice to make
            only = replicas[0]
            if only.id in exclude or self._in_flight.get(only.id, 0) >= only.max_concurrency:
                return None
            if model.balancing != PREFIX_AFFINITY or key is None:
                self._cursor[model.name] = 1  # where the strategies below leave it
            return only
        return self.pick_general(model, exclude, key, group)

    def pick_general(
        self,
        model: ModelEndpoints,
        exclude: Collection[str] = (),
        key: int | None = None,
        group: str | None = None,
    ) -> Replica | None:
        """``pick`` without the one-replica shortcut: the strategy chooses among replicas with room."""
        candidates = [r for r in model.replicas if r.id not in exclude and self.has_room(r)]
        if not candidates:
            return None
        if model.balancing == ROUND_ROBIN:
            return self._in_turn(model, candidates)
        if model.balancing == PREFIX_AFFINITY and key is not None:
            return self._affine(model, candidates, key)
        return self._least_loaded(model, candidates, group)

    def fits(self, model: ModelEndpoints, group: str) -> bool:
        """True when some replica of ``model`` has room and runs no other group than ``group`` now:
        a request of ``group`` would batch with what runs there (admission's queue uses it)."""
        return any(self.has_room(r) and not self._mixes(r.id, group) for r in model.replicas)

    def acquire(self, replica_id: str, group: str | None = None) -> Done:
        """Count one more request on ``replica_id`` (under ``group``, if any); return the idempotent
        ``done`` callback."""
        self._in_flight[replica_id] = self._in_flight.get(replica_id, 0) + 1
        if group is not None:
            self._groups.setdefault(replica_id, Counter())[group] += 1
        released = False

        def done() -> None:
            nonlocal released
            if released:
                return
            released = True
            remaining = self._in_flight.get(replica_id, 0) - 1
            if remaining > 0:
                self._in_flight[replica_id] = remaining
            else:
                self._in_flight.pop(replica_id, None)
            if group is not None:
                self._ungroup(replica_id, group)

        return done

    def _ungroup(self, replica_id: str, group: str) -> None:
        counts = self._groups.get(replica_id)
        if counts is None:
            return
        counts[group] -= 1
        if counts[group] <= 0:
            del counts[group]
        if not counts:
            del self._groups[replica_id]

    def _mixes(self, replica_id: str, group: str | None) -> bool:
        """True when ``replica_id`` runs requests of another group than ``group`` right now."""
        counts = self._groups.get(replica_id)
        return group is not None and counts is not None and any(g != group for g in counts)

    def _least_loaded(
        self, model: ModelEndpoints, candidates: list[Replica], group: str | None = None
    ) -> Replica:
        """Lowest in_flight / max_concurrency, after a replica that would mix ``group`` with another
        one; among equals, the first at or after the cursor."""
        size = len(model.replicas)
        start = self._cursor.get(model.name, 0) % size
        index = {r.id: i for i, r in enumerate(model.replicas)}
        replica = min(
            candidates,
            key=lambda r: (
                self._mixes(r.id, group),
                self.in_flight(r.id) / max(r.max_concurrency, 1),
                (index[r.id] - start) % size,
            ),
        )
        self._cursor[model.name] = index[replica.id] + 1
        return replica

    def _in_turn(self, model: ModelEndpoints, candidates: list[Replica]) -> Replica:
        """The first candidate at or after the cursor, in table order."""
        size = len(model.replicas)
        start = self._cursor.get(model.name, 0) % size
        allowed = {r.id for r in candidates}
        for step in range(size):
            index = (start + step) % size
            if model.replicas[index].id in allowed:
                self._cursor[model.name] = index + 1
                return model.replicas[index]
        raise AssertionError("candidates are replicas of the model")  # pragma: no cover

    def _affine(self, model: ModelEndpoints, candidates: list[Replica], key: int) -> Replica:
        """The first candidate clockwise from ``key`` under its bounded-load share."""
        total = sum(self.in_flight(r.id) for r in model.replicas)
        capacity = sum(max(r.max_concurrency, 1) for r in model.replicas)
        by_id = {r.id: r for r in candidates}
        for rid in self._ring(model).walk(key):
            replica = by_id.get(rid)
            if replica is None:
                continue
            slots = max(replica.max_concurrency, 1)
            bound = max(math.ceil(self._load_factor * (total + 1) * slots / capacity), math.ceil(slots / 2))
            if self.in_flight(rid) < bound:
                return replica
        # Only reachable when exclusions removed every replica under its bound.
        return self._least_loaded(model, candidates)

    def _ring(self, model: ModelEndpoints) -> HashRing:
        ids = tuple(r.id for r in model.replicas)
        ring = self._rings.get(ids)
        if ring is None:
            if len(self._rings) >= 256:  # replica sets come and go; keep the cache bounded
                self._rings.clear()
            ring = self._rings[ids] = HashRing(ids, virtual_nodes=self._virtual_nodes)
        return ring
