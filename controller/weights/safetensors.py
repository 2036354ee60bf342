"""safetensors headers (8-byte little-endian length + JSON): every tensor's byte range and shape;
a folder's shards, as model.safetensors.index.json names them. The architecture comes from the
config.json beside them (``config``).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from controller.weights.config import config_architecture, read_json
from controller.weights.info import MAX_DIMS, MAX_ELEMENTS, EstimateError, WeightsInfo, left

MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors format's own limit


def read_safetensors(path: Path) -> WeightsInfo:
    """A .safetensors file (config.json beside it) or a folder of them (config.json inside)."""
    folder = path if path.is_dir() else path.parent
    files = safetensors_files(path)
    if not files:
        raise EstimateError(f"{path}: no .safetensors files")
    sizes = [safetensors_sizes(f) for f in files]
    return WeightsInfo(
        weight_bytes=sum(s for s, _ in sizes),
        tensors=sum(n for _, n in sizes),
        architecture=config_architecture(folder / "config.json"),
    )


def safetensors_files(path: Path) -> list[Path]:
    """The shards vLLM would load: those named by model.safetensors.index.json when there is one
    (a folder may also hold e.g. a consolidated copy), else every *.safetensors. Shard names are
    plain file names in the folder: an index cannot point the reader anywhere else."""
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map", {})
        names = list(weight_map.values()) if isinstance(weight_map, dict) else [None]
        files = {n for n in names if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n}
        if len(files) != len(set(map(str, names))):
            raise EstimateError(f"{index}: weight_map names something other than files beside it")
        return [path / name for name in sorted(files)]
    return sorted(path.glob("*.safetensors"))


def safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors of a .safetensors header (8-byte little-endian length + JSON), each checked:
    ``data_offsets`` two integers 0 <= begin <= end, ``shape`` a short list of counts. Raises
    EstimateError for anything else, before reading more than the format's limit."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise EstimateError(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_SAFETENSORS_HEADER or length > left(f):
            raise EstimateError(f"{path}: not a safetensors file (a header of {length} bytes)")
        try:
            header = json.loads(f.read(length))
        except (ValueError, RecursionError) as exc:
            raise EstimateError(f"{path}: not a safetensors file (bad header)") from exc
    if not isinstance(header, dict):
        raise EstimateError(f"{path}: not a safetensors file (the header is no JSON object)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, tensor in tensors.items():
        if not valid_tensor(tensor):
            raise EstimateError(f"{path}: tensor {name[:80]!r} has no valid data_offsets and shape")
    return tensors


def valid_tensor(tensor: Any) -> bool:
    if not isinstance(tensor, dict):
        return False
    offsets, shape = tensor.get("data_offsets"), tensor.get("shape", [])
    if not (isinstance(offsets, list) and len(offsets) == 2 and isinstance(shape, list)):
        return False
    if len(shape) > MAX_DIMS or not all(type(n) is int and n >= 0 for n in (*offsets, *shape)):
        return False
    return bool(offsets[0] <= offsets[1] and math.prod(shape) <= MAX_ELEMENTS)


def safetensors_sizes(path: Path) -> tuple[int, int]:
    """(bytes of tensor data, tensor count) from the header."""
    tensors = safetensors_header(path).values()
    return sum(end - begin for begin, end in (t["data_offsets"] for t in tensors)), len(tensors)
