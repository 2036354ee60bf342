"""Header-only GGUF files with the real shapes of real Llama models, for the shapes part: the
tensors as llama.cpp's converter and Q4_K_M quantizer lay them out, LoRA adapters as
convert_lora_to_gguf.py writes them, splits as llama-gguf-split writes them. The files are sparse
(extended to their real length, no data written), so a 42 GiB model takes no disk.

The ggml type table is the script's own, so the sums the estimate is checked against do not come
from the reader under test.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LORA_RANK = 16  # the rank of the two LoRA adapters written (their alpha is twice it)

# ggml type -> (GGUF type id, elements per block, bytes per block), from ggml's type traits: the
# script's own table, so the sums the estimate is checked against do not come from the reader.
GGML_TYPES = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
}
META_KINDS = {"u16": (2, "<H"), "u32": (4, "<I"), "i32": (5, "<i"), "f32": (6, "<f"), "str": (8, "")}
ALIGN = 32  # GGUF's default general.alignment

Tensor = tuple[str, tuple[int, ...], str]  # name, GGUF dims (ne0, the row length, first), ggml type
Meta = list[tuple[str, str, Any]]  # key, META_KINDS kind, value


@dataclass(frozen=True, slots=True)
class Llama:
    """A Llama model's numbers, as its config.json and GGUF state them."""

    name: str
    layers: int
    embd: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int = 128_256
    context: int = 131_072
    tied: bool = False  # no output.weight: token_embd is also the output (Llama 3.2 1B)
    is_70b: bool = False  # llama.cpp's LLM_TYPE_70B: attn_v at least Q5_K

    @property
    def head(self) -> int:
        return self.embd // self.heads

    def kv_bytes_per_token(self) -> int:
        return self.layers * self.kv_heads * 2 * self.head * 2  # key + value, f16


LLAMA_70B = Llama("Meta-Llama-3.1-70B-Instruct", 80, 8192, 64, 8, 28_672, is_70b=True)
LLAMA_8B = Llama("Meta-Llama-3.1-8B-Instruct", 32, 4096, 32, 8, 14_336)
LLAMA_1B = Llama("Llama-3.2-1B-Instruct", 16, 2048, 32, 8, 8192, tied=True)


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k_m_tensors(m: Llama) -> list[Tensor]:
    """Every tensor of ``m`` quantized Q4_K_M, typed as llama.cpp's llama_tensor_get_type does:
    Q4_K, but attn_v and ffn_down Q6_K on the ``more_bits`` layers (attn_v Q5_K on the others of a
    70B), the output (or tied embeddings) Q6_K, norms and rope factors F32; the converter's order."""
    kv = m.kv_heads * m.head
    tensors: list[Tensor] = [
        ("token_embd.weight", (m.embd, m.vocab), "Q6_K" if m.tied else "Q4_K"),
        ("rope_freqs.weight", (m.head // 2,), "F32"),
    ]
    for i in range(m.layers):
        more = more_bits(i, m.layers)
        tensors += [
            (f"blk.{i}.attn_norm.weight", (m.embd,), "F32"),
            (f"blk.{i}.attn_q.weight", (m.embd, m.embd), "Q4_K"),
            (f"blk.{i}.attn_k.weight", (m.embd, kv), "Q4_K"),
            (f"blk.{i}.attn_v.weight", (m.embd, kv), "Q6_K" if more else "Q5_K" if m.is_70b else "Q4_K"),
            (f"blk.{i}.attn_output.weight", (m.embd, m.embd), "Q4_K"),
            (f"blk.{i}.ffn_norm.weight", (m.embd,), "F32"),
            (f"blk.{i}.ffn_gate.weight", (m.embd, m.ffn), "Q4_K"),
            (f"blk.{i}.ffn_up.weight", (m.embd, m.ffn), "Q4_K"),
            (f"blk.{i}.ffn_down.weight", (m.ffn, m.embd), "Q6_K" if more else "Q4_K"),
        ]
    tensors.append(("output_norm.weight", (m.embd,), "F32"))
    return tensors if m.tied else [*tensors, ("output.weight", (m.embd, m.vocab), "Q6_K")]


def lora_tensors(m: Llama, rank: int) -> list[Tensor]:
    """A f16 LoRA adapter of ``rank`` on q, k, v and o of every layer, shaped as llama.cpp's
    convert_lora_to_gguf.py writes them: lora_a [input width, rank], lora_b [rank, output width]."""
    kv = m.kv_heads * m.head
    outputs = {"attn_q": m.embd, "attn_k": kv, "attn_v": kv, "attn_output": m.embd}
    return [
        (f"blk.{i}.{target}.weight.lora_{ab}", (m.embd, rank) if ab == "a" else (rank, width), "F16")
        for i in range(m.layers)
        for target, width in outputs.items()
        for ab in "ab"
    ]


def tensor_bytes(tensors: list[Tensor]) -> int:
    """Bytes of the tensors' data, by GGML_TYPES."""
    total = 0
    for _, dims, kind in tensors:
        _, block, size = GGML_TYPES[kind]
        total += math.prod(dims) // block * size
    return total


def model_metadata(m: Llama) -> Meta:
    """What llama.cpp's converter writes for a Llama, less the vocabulary's strings (nothing here
    reads them; ``vocab_size`` states how many)."""
    counts = {
        "block_count": m.layers,
        "context_length": m.context,
        "embedding_length": m.embd,
        "feed_forward_length": m.ffn,
        "attention.head_count": m.heads,
        "attention.head_count_kv": m.kv_heads,
        "rope.dimension_count": m.head,
        "vocab_size": m.vocab,
    }
    return [
        ("general.architecture", "str", "llama"),
        ("general.type", "str", "model"),
        ("general.name", "str", m.name),
        ("general.file_type", "u32", 15),  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        ("llama.rope.freq_base", "f32", 500_000.0),
        ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5),
        *((f"llama.{key}", "u32", value) for key, value in counts.items()),
    ]


def adapter_metadata(name: str) -> Meta:
    return [
        ("general.architecture", "str", "llama"),
        ("general.type", "str", "adapter"),
        ("general.name", "str", name),
        ("adapter.type", "str", "lora"),
        ("adapter.lora.alpha", "f32", 2.0 * LORA_RANK),
    ]


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_header(meta: Meta, tensors: list[Tensor]) -> tuple[bytes, int]:
    """A GGUF v3 header (metadata, then tensor infos with ALIGN-ed data offsets), and the length of
    the whole file: the header padded to ALIGN, then each tensor's data padded to ALIGN."""
    kvs = b""
    for key, kind, value in meta:
        code, fmt = META_KINDS[kind]
        kvs += gguf_string(key) + struct.pack("<I", code)
        kvs += gguf_string(value) if kind == "str" else struct.pack(fmt, value)
    infos, offset = b"", 0
    for name, dims, kind in tensors:
        infos += gguf_string(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
        infos += struct.pack("<IQ", GGML_TYPES[kind][0], offset)
        offset += -(-tensor_bytes([(name, dims, kind)]) // ALIGN) * ALIGN
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + kvs + infos
    return header, -(-len(header) // ALIGN) * ALIGN + offset


def write_gguf(path: Path, meta: Meta, tensors: list[Tensor]) -> int:
    """A header-only GGUF at ``path``, extended to the real file's length without writing the data
    (sparse: it takes no disk). Returns the bytes of its tensors."""
    header, length = gguf_header(meta, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(header)
        f.truncate(length)
    return tensor_bytes(tensors)


def write_split(prefix: Path, meta: Meta, tensors: list[Tensor], count: int) -> list[int]:
    """``tensors`` in ``count`` shards as llama-gguf-split --split-max-tensors writes them
    (``PREFIX-0000K-of-0000N.gguf``; the model's metadata in shard 1 only; ``split.no`` (u16, from
    0), ``split.count`` (u16) and ``split.tensors.count`` (i32) in each). Returns each one's bytes."""
    per = -(-len(tensors) // count)
    sizes = []
    for k in range(count):
        split: Meta = [("split.no", "u16", k), ("split.count", "u16", count)]
        split.append(("split.tensors.count", "i32", len(tensors)))
        path = prefix.with_name(f"{prefix.name}-{k + 1:05d}-of-{count:05d}.gguf")
        sizes.append(write_gguf(path, (meta if k == 0 else []) + split, tensors[k * per : (k + 1) * per]))
    return sizes
