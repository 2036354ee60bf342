"""What weights files say about themselves, from their headers alone, never by loading tensors.

A GGUF header lists every tensor's shape and ggml type (bytes follow from the type's block size)
and the architecture's metadata; a safetensors header lists every tensor's byte range, and the
config.json beside it the architecture. Memory estimates (``memory``) and the descriptions APIs
show (``describe``) are built on these readers; each header is read once per version of its files
(``by_version``), since the reconciler places models on every pass.

The GGUF reader is hand-written (about 80 lines) rather than the ``gguf`` package: that package
pulls numpy in and maps the whole file, while placement only needs the header.

Headers are hostile input (a manifest names the weights, anyone may have put them there): every
count and length in them is checked against the bytes left in the file and a sane maximum before
anything is read or allocated, so a bad header is an ``EstimateError`` naming the file, never a
MemoryError, a hang or another exception that would reach the reconcile loop.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from controller.errors import ModelctlError

T = TypeVar("T")

KV_DTYPE_BYTES = 2  # f16 (llama.cpp's default --cache-type-k/v) or bf16/f16 (vLLM's kv-cache-dtype auto)

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


class EstimateError(ModelctlError):
    """The weights cannot be sized (unreadable, unknown format or type); set gpu_memory instead."""


# Bounds on what a header may claim, far beyond real models (vocabularies ~262k entries, chat
# templates ~100 KB, ~100k tensors): past them the file is refused, not read.
MAX_GGUF_STRING = 16 << 20
MAX_GGUF_ARRAY = 1 << 22  # items in one metadata array
MAX_GGUF_KEPT_ARRAY = 1 << 16  # longer scalar arrays (scores, token types) are skipped, not kept
MAX_GGUF_NESTING = 4  # arrays of arrays
MAX_GGUF_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 8  # GGML_MAX_DIMS is 4; safetensors tensors have a handful
MAX_ELEMENTS = 1 << 50  # in one tensor
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors format's own limit
MAX_JSON_FILE = 16 << 20  # config.json, model.safetensors.index.json
MAX_ARCH = 1 << 20  # layers, heads, head sizes
MAX_CONTEXT = 1 << 31  # trained context length
# What a hostile header or config can make Python raise besides EstimateError and OSError.
BAD_HEADER = (struct.error, ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError)


@dataclass(frozen=True, slots=True)
class Architecture:
    """What the KV cache size depends on."""

    layers: int
    kv_heads: int
    key_length: int  # per head
    value_length: int  # per head
    context_length: int | None  # trained context (GGUF <arch>.context_length, max_position_embeddings)

    def kv_bytes_per_token(self) -> int:
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * KV_DTYPE_BYTES


@dataclass(frozen=True, slots=True)
class WeightsInfo:
    weight_bytes: int
    tensors: int
    architecture: Architecture | None  # None: no config to read it from


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

    A folder: every file in it. A .safetensors file: it and the config.json beside it.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    else:
        config = path.parent / "config.json"
        files = [path, config] if path.suffix.lower() != ".gguf" and config.is_file() else [path]
    stats = [(str(p.resolve()), p.stat()) for p in files]
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


# --- GGUF ---------------------------------------------------------------------------------------


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
    header = read_gguf_header(path)
    return WeightsInfo(header.weight_bytes(), len(header.tensors), gguf_architecture(header.metadata))


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


def bounded(count: int, most: int, what: str) -> int:
    """``count`` when at most ``most``; else EstimateError (a header claiming absurd numbers)."""
    if count > most:
        raise EstimateError(f"the header claims {count} {what}; at most {most} are read")
    return count


def left(f: BinaryIO) -> int:
    """Bytes from the current position to the end of the file."""
    return os.fstat(f.fileno()).st_size - f.tell()


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


def architecture(
    *, layers: Any, kv_heads: Any, key_length: Any, value_length: Any, context_length: Any
) -> Architecture:
    """An Architecture from a header's or config's values, each a positive integer in range
    (a hostile "24" string, -1, 1e400 or a list is an EstimateError, never a number used as one)."""
    return Architecture(
        layers=count_of(layers, "layers", MAX_ARCH),
        kv_heads=count_of(kv_heads, "KV heads", MAX_ARCH),
        key_length=count_of(key_length, "key length", MAX_ARCH),
        value_length=count_of(value_length, "value length", MAX_ARCH),
        context_length=None if context_length is None else count_of(context_length, "context", MAX_CONTEXT),
    )


def count_of(value: Any, what: str, most: int) -> int:
    """``value`` as a positive integer of at most ``most`` (integral floats and digit strings too,
    as configs write them); else EstimateError."""
    integral_float = isinstance(value, float) and value.is_integer() and abs(value) <= most
    digits = isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12
    if integral_float or digits:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise EstimateError(f"{what}: {str(value)[:40]} is not a count from 1 to {most}")
    return value


# --- safetensors ----------------------------------------------------------------------------------


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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file of at most MAX_JSON_FILE bytes. Raises EstimateError."""
    with path.open("rb") as f:
        data = f.read(MAX_JSON_FILE + 1)
    if len(data) > MAX_JSON_FILE:
        raise EstimateError(f"{path}: larger than {MAX_JSON_FILE >> 20} MiB")
    try:
        found = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise EstimateError(f"{path}: not JSON ({type(exc).__name__})") from exc
    if not isinstance(found, dict):
        raise EstimateError(f"{path}: not a JSON object")
    return found


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


def config_architecture(config: Path) -> Architecture | None:
    """KV-cache numbers from a Hugging Face config.json (or its text_config, for multimodal ones)."""
    if not config.is_file():
        return None
    data = read_json(config)
    if "num_hidden_layers" not in data and isinstance(data.get("text_config"), dict):
        data = data["text_config"]
    try:
        heads = count_of(data["num_attention_heads"], "num_attention_heads", MAX_ARCH)
        head_dim = data.get("head_dim") or count_of(data["hidden_size"], "hidden_size", MAX_ARCH) // heads
        return architecture(
            layers=data["num_hidden_layers"],
            kv_heads=data.get("num_key_value_heads") or heads,
            key_length=head_dim,
            value_length=head_dim,
            context_length=data.get("max_position_embeddings"),
        )
    except (KeyError, EstimateError) as exc:
        raise EstimateError(f"{config}: missing or bad architecture field {exc}") from exc


def on_disk(weights: Path | None) -> int:
    """Bytes of a weights file, or of the files in a weights folder; 0 for hub weights (not here)."""
    try:
        if weights is None or not weights.exists():
            return 0
        if weights.is_file():
            return weights.stat().st_size
        return sum(f.stat().st_size for f in weights.rglob("*") if f.is_file())
    except OSError:  # unreadable: the engine says what is wrong when it starts
        return 0
