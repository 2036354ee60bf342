"""Weight bytes and architecture of any weights modelctl serves (a .gguf file, a .safetensors file
or a safetensors folder), each header read once per version of its files: the reconciler places
models on every pass, and a GGUF's metadata holds its whole vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from controller.manifests.shards import shard_paths
from controller.weights.gguf import read_gguf
from controller.weights.info import BAD_HEADER, EstimateError, WeightsInfo
from controller.weights.safetensors import read_safetensors

T = TypeVar("T")

# Headers read, by the weights' fingerprint. The reconciler places GPU models on every pass, and a
# GGUF's metadata holds its whole vocabulary (Llama 3: ~400k strings, ~0.25 s to parse in Python).
_READ: dict[tuple[tuple[str, int, int], ...], WeightsInfo] = {}
_READ_MAX = 256


def read_weights(path: Path) -> WeightsInfo:
    """Weight bytes and architecture of a .gguf file, a .safetensors file or a safetensors folder.

    Read once per version of the files (path, size and modification time of each); raises
    EstimateError."""
    try:
        if not path.exists():
            raise EstimateError(f"{path}: no such file or folder")
        return by_version(_READ, path, read_gguf, read_safetensors)
    except OSError as exc:
        raise EstimateError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except BAD_HEADER as exc:
        raise EstimateError(f"{path}: bad header ({type(exc).__name__}); set gpu_memory") from exc


def by_version(
    cache: dict[tuple[tuple[str, int, int], ...], T],
    path: Path,
    gguf: Callable[[Path], T],
    other: Callable[[Path], T],
) -> T:
    """``gguf(path)`` for a .gguf file, else ``other(path)``, read once per version of the files."""
    key = fingerprint(path)
    found = cache.get(key)
    if found is None:
        found = gguf(path) if path.is_file() and path.suffix.lower() == ".gguf" else other(path)
        if len(cache) >= _READ_MAX:
            cache.clear()
        cache[key] = found
    return found


def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime_ns) of every file the sizes are read from: changes when their content does.

    A folder: every file in it. A .safetensors file: it and the config.json beside it. Shard 1 of a
    split GGUF: every shard (ValueError for another shard).
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.suffix.lower() == ".gguf":
        files = [p for p in gguf_files(path) if p.exists()]  # a missing shard: read_gguf says it
    else:
        config = path.parent / "config.json"
        files = [path, config] if path.suffix.lower() != ".gguf" and config.is_file() else [path]
    stats = [(str(p.resolve()), p.stat()) for p in files]
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


def on_disk(weights: Path | None) -> int:
    """Bytes of a weights file, or of the files in a weights folder; 0 for hub weights (not here)."""
    try:
        if weights is None or not weights.exists():
            return 0
        if weights.is_file() and weights.suffix.lower() == ".gguf":
            return sum(p.stat().st_size for p in gguf_files(weights) if p.exists())
        if weights.is_file():
            return weights.stat().st_size
        return sum(f.stat().st_size for f in weights.rglob("*") if f.is_file())
    except OSError:  # unreadable: the engine says what is wrong when it starts
        return 0


def gguf_files(path: Path) -> tuple[Path, ...]:
    """Every shard when ``path`` is shard 1 of a split GGUF, else ``path`` alone (also for a name
    the estimate refuses, which says why)."""
    try:
        return shard_paths(path)
    except ValueError:
        return (path,)
