"""GGUF headers: every tensor's shape and ggml type (bytes follow from the type's block size) and
the architecture's metadata, read without loading a tensor.

The reader is hand-written (about 80 lines) rather than the ``gguf`` package: that package pulls
numpy in and maps the whole file, while placement only needs the header. Every count and length is
bounded (``info``) before it is read.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from controller.manifests.shards import shard_paths
from controller.weights.info import (
    BAD_HEADER,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_TENSORS,
    Architecture,
    EstimateError,
    WeightsInfo,
    architecture,
    bounded,
    left,
)

GGUF_MAGIC = b"GGUF"

# ggml type -> (elements per block, bytes per block), as ggml's type traits (gguf-py GGML_QUANT_SIZES).
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
}

# GGUF metadata value types -> struct format of a fixed-size scalar (8 STRING and 9 ARRAY are special).
GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
GGUF_STRING, GGUF_ARRAY = 8, 9

# Bounds on GGUF metadata (vocabularies ~262k entries, chat templates ~100 KB), beyond real models.
MAX_GGUF_STRING = 16 << 20
MAX_GGUF_ARRAY = 1 << 22  # items in one metadata array
MAX_GGUF_KEPT_ARRAY = 1 << 16  # longer scalar arrays (scores, token types) are skipped, not kept
MAX_GGUF_NESTING = 4  # arrays of arrays
MAX_GGUF_KV = 1 << 16


@dataclass(frozen=True, slots=True)
class GgufTensor:
    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data region

    def nbytes(self) -> int:
        if self.ggml_type not in GGML_BLOCKS:
            raise EstimateError(f"tensor {self.name}: unknown ggml type {self.ggml_type}")
        block, size = GGML_BLOCKS[self.ggml_type]
        return math.prod(self.dims) // block * size


@dataclass(frozen=True, slots=True)
class GgufHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[GgufTensor, ...]
    data_offset: int  # where tensor data starts in the file

    def weight_bytes(self) -> int:
        return sum(t.nbytes() for t in self.tensors)


def read_gguf(path: Path) -> WeightsInfo:
    """Weight bytes of every shard (a split GGUF's tensors are spread over its shards), the
    architecture from the first (shard 1 holds the model's metadata)."""
    headers = read_gguf_shards(path)
    try:
        weight_bytes = sum(h.weight_bytes() for h in headers)
    except EstimateError as exc:  # a tensor of a type we cannot size: say which file
        raise EstimateError(f"{path}: {exc}") from exc
    tensors = sum(len(h.tensors) for h in headers)
    return WeightsInfo(weight_bytes, tensors, gguf_architecture(headers[0].metadata))


def read_gguf_shards(path: Path) -> list[GgufHeader]:
    """The header of ``path`` and, when it is shard 1 of a split GGUF, of each sibling shard, whose
    number must agree with the first shard's ``split.count``. Raises EstimateError."""
    try:
        shards = shard_paths(path)
    except ValueError as exc:
        raise EstimateError(str(exc)) from exc
    first = read_gguf_header(path)
    count = first.metadata.get("split.count", 1)
    if count != len(shards):
        raise EstimateError(f"{path}: split.count is {str(count)[:20]}, the file name says {len(shards)}")
    return [first, *(read_gguf_header(p) for p in shards[1:])]


def read_gguf_header(path: Path) -> GgufHeader:
    """Parse a GGUF (v2 or v3) header: metadata and tensor infos. Raises EstimateError."""
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise EstimateError(f"{path}: not a GGUF file (bad magic)")
        try:
            return parse_gguf(f)
        except struct.error as exc:
            raise EstimateError(f"{path}: truncated GGUF header") from exc
        except EstimateError as exc:
            raise EstimateError(f"{path}: {exc}") from exc
        except BAD_HEADER as exc:
            raise EstimateError(f"{path}: bad GGUF header ({type(exc).__name__})") from exc


def parse_gguf(f: BinaryIO) -> GgufHeader:
    (version,) = unpack(f, "<I")
    if version not in (2, 3):
        raise EstimateError(f"GGUF version {version} is not supported (2 or 3 are)")
    tensor_count, kv_count = unpack(f, "<QQ")
    bounded(kv_count, MAX_GGUF_KV, "metadata entries")
    bounded(tensor_count, MAX_TENSORS, "tensors")
    metadata = {}
    for _ in range(kv_count):
        key = read_string(f)
        metadata[key] = read_value(f, unpack(f, "<I")[0])
    tensors = tuple(read_tensor_info(f) for _ in range(tensor_count))
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or not 1 <= alignment <= 1 << 20:
        raise EstimateError(f"general.alignment {str(alignment)[:40]} is not a small positive integer")
    data_offset = -(-f.tell() // alignment) * alignment
    return GgufHeader(version, metadata, tensors, data_offset)


def read_tensor_info(f: BinaryIO) -> GgufTensor:
    name = read_string(f)
    (n_dims,) = unpack(f, "<I")
    dims = unpack(f, f"<{bounded(n_dims, MAX_DIMS, 'dimensions')}Q")
    bounded(math.prod(dims), MAX_ELEMENTS, f"elements in tensor {name[:80]}")
    ggml_type, offset = unpack(f, "<IQ")
    return GgufTensor(name, tuple(dims), ggml_type, offset)


def read_value(f: BinaryIO, kind: int, depth: int = 0) -> Any:
    if kind in GGUF_SCALARS:
        return unpack(f, GGUF_SCALARS[kind])[0]
    if kind == GGUF_STRING:
        return read_string(f)
    if kind == GGUF_ARRAY:
        bounded(depth, MAX_GGUF_NESTING, "levels of nested arrays")
        item_kind, count = unpack(f, "<IQ")
        bounded(count, MAX_GGUF_ARRAY, "items in one array")
        if item_kind in GGUF_SCALARS:
            return read_scalars(f, item_kind, count)
        items = (read_value(f, item_kind, depth + 1) for _ in range(count))
        if count > MAX_GGUF_KEPT_ARRAY:  # read past (the vocabulary's strings), not kept
            return f"<{sum(1 for _ in items)} items, not read>"
        return list(items)
    raise EstimateError(f"unknown GGUF metadata type {kind}")


def read_scalars(f: BinaryIO, kind: int, count: int) -> list[Any] | str:
    """An array of fixed-size scalars, read in one go (vocabularies have 100k+ entries); one longer
    than anything this module reads (token scores, types) is skipped and described instead."""
    fmt = GGUF_SCALARS[kind][1]
    size = count * struct.calcsize(fmt)
    if size > left(f):
        raise EstimateError(f"an array of {count} items runs past the end of the file")
    if count > MAX_GGUF_KEPT_ARRAY:
        f.seek(size, os.SEEK_CUR)
        return f"<{count} items, not read>"
    return list(struct.unpack(f"<{count}{fmt}", f.read(size)))


def read_string(f: BinaryIO) -> str:
    (length,) = unpack(f, "<Q")
    if length > 4096 and (length > MAX_GGUF_STRING or length > left(f)):  # small ones: EOF says it
        raise EstimateError(f"a string of {length} bytes is longer than {MAX_GGUF_STRING} or the file")
    return f.read(length).decode("utf-8", errors="replace")


def unpack(f: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, f.read(size))


def gguf_architecture(metadata: dict[str, Any]) -> Architecture | None:
    """KV-cache numbers from ``<arch>.*`` metadata; None when the architecture keys are absent."""
    arch = metadata.get("general.architecture")

    def get(key: str) -> Any:
        return metadata.get(f"{arch}.{key}")

    layers, heads, embedding = get("block_count"), get("attention.head_count"), get("embedding_length")
    if not (arch and layers and heads and embedding):
        return None
    heads = max(heads) if isinstance(heads, list) else heads  # per-layer arrays in some models
    kv_heads = get("attention.head_count_kv") or heads
    kv_heads = max(kv_heads) if isinstance(kv_heads, list) else kv_heads
    key_length = get("attention.key_length") or embedding // heads
    return architecture(
        layers=layers,
        kv_heads=kv_heads,
        key_length=key_length,
        value_length=get("attention.value_length") or key_length,
        context_length=get("context_length"),
    )
