"""Split GGUF names: llama.cpp writes a model too large for one file as shards named
``PREFIX-0000K-of-0000N.gguf`` (its ``%s-%05d-of-%05d.gguf``) and loads them all when ``-m`` names
the first; a missing sibling fails the load (docs/model-shapes.md). The loader checks every sibling
against the model roots, the engines mount each one and the estimate reads each one, all from the
names this module derives, so they agree on which files a split model is.
"""

from __future__ import annotations

import re
from pathlib import Path

SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
MAX_SHARDS = 9999  # beyond any published model (a 1T-parameter Q8 ships in ~25)


def shard_names(name: str) -> tuple[str, ...]:
    """Every shard's file name when ``name`` is shard 1 of a split GGUF; ``(name,)`` for any other
    file. Raises ValueError for another shard than the first, or a count out of range."""
    match = SHARD_NAME.match(name)
    if match is None:
        return (name,)
    number, count = int(match["no"]), int(match["count"])
    if not 1 <= count <= MAX_SHARDS or not 1 <= number <= count:
        raise ValueError(f"'{name}': shard {number} of {count} is not a valid split GGUF name")
    first = f"{match['prefix']}-00001-of-{match['count']}.gguf"
    if number != 1:
        raise ValueError(f"'{name}' is shard {number} of {count}; name shard 1 ('{first}')")
    return tuple(f"{match['prefix']}-{k:05d}-of-{match['count']}.gguf" for k in range(1, count + 1))


def shard_paths(first: Path) -> tuple[Path, ...]:
    """The files a GGUF at ``first`` is: its siblings when it is shard 1 of a split, else itself."""
    return tuple(first.with_name(name) for name in shard_names(first.name))
