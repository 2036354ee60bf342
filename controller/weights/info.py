"""What a weights header says, whatever its format: the weights' bytes and the architecture the KV
cache follows from; and the bounds every reader holds a header to.

Headers are hostile input (a manifest names the weights, anyone may have put them there): every
count and length in them is checked against the bytes left in the file and a sane maximum before
anything is read or allocated, so a bad header is an ``EstimateError`` naming the file, never a
MemoryError, a hang or another exception that would reach the reconcile loop.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from controller.errors import ModelctlError

KV_DTYPE_BYTES = 2  # f16 (llama.cpp's default --cache-type-k/v) or bf16/f16 (vLLM's kv-cache-dtype auto)


class EstimateError(ModelctlError):
    """The weights cannot be sized (unreadable, unknown format or type); set gpu_memory instead."""


# Bounds on what a header may claim, far beyond real models (~100k tensors): past them the file is
# refused, not read. Each format's own bounds are in its reader.
MAX_TENSORS = 1 << 20
MAX_DIMS = 8  # GGML_MAX_DIMS is 4; safetensors tensors have a handful
MAX_ELEMENTS = 1 << 50  # in one tensor
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


def bounded(count: int, most: int, what: str) -> int:
    """``count`` when at most ``most``; else EstimateError (a header claiming absurd numbers)."""
    if count > most:
        raise EstimateError(f"the header claims {count} {what}; at most {most} are read")
    return count


def left(f: BinaryIO) -> int:
    """Bytes from the current position to the end of the file."""
    return os.fstat(f.fileno()).st_size - f.tell()
