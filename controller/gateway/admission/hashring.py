"""A consistent-hash ring with virtual nodes: the stable order in which prefix affinity tries replicas.

A conversation's prefix hashes to a point on the ring; its home replica is the first one clockwise,
and if that one is overloaded the next distinct replica clockwise takes it, and so on. Adding or
removing a replica moves only the keys next to its points (about 1/n of them), so most conversations
keep the replica that holds their KV / prompt cache while the table changes. Pure and clock-free.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence


def hash64(data: bytes) -> int:
    """Return a stable 64-bit hash of ``data`` (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """``virtual_nodes`` points per replica id on a 64-bit ring; ``walk`` yields ids clockwise."""

    def __init__(self, ids: Sequence[str], *, virtual_nodes: int = 64) -> None:
        if virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be at least 1, not {virtual_nodes}")
        points = sorted((hash64(f"{rid}#{v}".encode()), rid) for rid in ids for v in range(virtual_nodes))
        self._hashes = [h for h, _ in points]
        self._ids = [rid for _, rid in points]
        self._distinct = len(set(ids))

    def walk(self, key: int) -> Iterator[str]:
        """Yield each replica id once, starting with the first point at or after ``key``, clockwise."""
        if not self._ids:
            return
        start = bisect.bisect_left(self._hashes, key)
        seen: set[str] = set()
        size = len(self._ids)
        for step in range(size):
            rid = self._ids[(start + step) % size]
            if rid not in seen:
                seen.add(rid)
                yield rid
                if len(seen) == self._distinct:
                    return
