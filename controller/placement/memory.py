"""How much memory one replica needs (a GPU's, or the host's for a CPU replica): weights + KV cache +
the engine's runtime overhead.

Weights come exactly from the file headers, never by loading tensors: a GGUF header lists every
tensor's shape and ggml type (bytes follow from the type's block size), and a safetensors header
lists every tensor's byte range. The KV cache follows from the architecture (GGUF metadata, or a
safetensors folder's config.json): layers x KV heads x (key + value head size) x tokens x 2 bytes
(f16/bf16, both engines' default cache type). A manifest's ``gpu_memory`` overrides all of this.

The GGUF reader is hand-written (about 80 lines) rather than the ``gguf`` package: that package
pulls numpy in and maps the whole file, while placement only needs the header.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from controller.endpoints.table import Details
from controller.errors import ModelctlError

if TYPE_CHECKING:
    from controller.manifests.loader import LoadedModel

T = TypeVar("T")

GiB = 1024**3
MiB = 1024**2

KV_DTYPE_BYTES = 2  # f16 (llama.cpp's default --cache-type-k/v) or bf16/f16 (vLLM's kv-cache-dtype auto)

# Runtime overhead per GPU, on top of weights and KV cache. Stated constants, not measurements here:
# - llama.cpp: CUDA context and cuBLAS workspace (~300-400 MiB on Ampere/Hopper) plus compute
#   buffers for one 512-token micro-batch (logits, activations: ~100-300 MiB for <=8B models).
# - vLLM: CUDA context (~500 MiB), CUDA graphs captured for the decode batch sizes (~0.5-1 GiB),
#   the activation peak vLLM profiles at start (max_num_batched_tokens x hidden), NCCL buffers when
#   tensor parallel. vLLM's own docs leave ~10% of an 80 GiB GPU for this; 2 GiB suits small models.
OVERHEAD_BYTES = {"llamacpp": 512 * MiB, "vllm": 2 * GiB}
# A CPU replica's process beside its weights and KV cache, in host memory. Measured here: llama-server
# serving SmolLM2-135M held ~181 MiB RSS in all; vLLM's CPU build ~3.9 GiB RSS with the same model
# (torch, the Python server, its CPU KV cache space).
CPU_OVERHEAD_BYTES = {"llamacpp": 256 * MiB, "vllm": 4 * GiB}

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


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Bytes one replica needs in all (over all its GPUs), by part."""

    weights: int
    kv_cache: int
    overhead: int  # per GPU
    total: int  # weights + kv_cache + overhead, for one GPU

    def per_gpu(self, num_gpus: int) -> int:
        """Bytes on each of ``num_gpus`` GPUs: weights and KV split by tensor parallelism, overhead
        on every GPU."""
        return math.ceil((self.weights + self.kv_cache) / max(num_gpus, 1)) + self.overhead


def estimate(model: LoadedModel) -> MemoryEstimate:
    """The memory estimate of one replica of ``model``, from its (resolved) weights.
    Raises EstimateError when the weights were not resolved or cannot be sized."""
    manifest = model.manifest
    if model.weights is None:
        raise EstimateError(f"model {model.name}: weights not resolved; set gpu_memory to place it")
    return estimate_files(
        model.weights,
        engine=manifest.resolved_engine,
        context_length=manifest.context_length,
        max_batch_size=manifest.max_batch_size,
    )


def estimate_files(
    weights: Path, *, engine: str, context_length: int | None, max_batch_size: int
) -> MemoryEstimate:
    """As ``estimate``, from a weights path and the manifest's numbers. Raises EstimateError."""
    info = read_weights(weights)
    if info.architecture is None:
        raise EstimateError(f"{weights}: no architecture found (config.json?); cannot size the KV cache")
    tokens = kv_tokens(info.architecture, engine, context_length, max_batch_size)
    kv = tokens * info.architecture.kv_bytes_per_token()
    overhead = OVERHEAD_BYTES[engine]
    return MemoryEstimate(info.weight_bytes, kv, overhead, info.weight_bytes + kv + overhead)


def kv_tokens(arch: Architecture, engine: str, context_length: int | None, max_batch_size: int) -> int:
    """Tokens the engine holds KV for. With a context length, both engines keep that many per
    sequence (llama.cpp gets -c context x --parallel). Without one, llama.cpp allocates the trained
    context once, shared by its slots; vLLM sizes for max_num_seqs sequences of the trained length."""
    if context_length is None:
        if arch.context_length is None:
            raise EstimateError("the model states no context length; set context_length")
        return arch.context_length if engine == "llamacpp" else arch.context_length * max_batch_size
    return context_length * max_batch_size


# Headers read, by the weights' fingerprint. The reconciler places GPU models on every pass, and a
# GGUF's metadata holds its whole vocabulary (Llama 3: ~400k strings, ~0.25 s to parse in Python).
_READ: dict[tuple[tuple[str, int, int], ...], WeightsInfo] = {}
_READ_MAX = 256


def read_weights(path: Path) -> WeightsInfo:
    """Weight bytes and architecture of a .gguf file, a .safetensors file or a safetensors folder.

    Read once per version of the files (path, size and modification time of each); raises
    EstimateError."""
    if not path.exists():
        raise EstimateError(f"{path}: no such file or folder")
    try:
        return by_version(_READ, path, read_gguf, read_safetensors)
    except OSError as exc:
        raise EstimateError(f"{path}: cannot read: {exc.strerror or exc}") from exc


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


def parse_gguf(f: BinaryIO) -> GgufHeader:
    (version,) = unpack(f, "<I")
    if version not in (2, 3):
        raise EstimateError(f"GGUF version {version} is not supported (2 or 3 are)")
    tensor_count, kv_count = unpack(f, "<QQ")
    metadata = {}
    for _ in range(kv_count):
        key = read_string(f)
        metadata[key] = read_value(f, unpack(f, "<I")[0])
    tensors = tuple(read_tensor_info(f) for _ in range(tensor_count))
    alignment = int(metadata.get("general.alignment", 32))
    data_offset = -(-f.tell() // alignment) * alignment
    return GgufHeader(version, metadata, tensors, data_offset)


def read_tensor_info(f: BinaryIO) -> GgufTensor:
    name = read_string(f)
    (n_dims,) = unpack(f, "<I")
    dims = unpack(f, f"<{n_dims}Q")
    ggml_type, offset = unpack(f, "<IQ")
    return GgufTensor(name, tuple(dims), ggml_type, offset)


def read_value(f: BinaryIO, kind: int) -> Any:
    if kind in GGUF_SCALARS:
        return unpack(f, GGUF_SCALARS[kind])[0]
    if kind == GGUF_STRING:
        return read_string(f)
    if kind == GGUF_ARRAY:
        item_kind, count = unpack(f, "<IQ")
        if item_kind in GGUF_SCALARS:  # read in one go: vocabularies have 100k+ entries
            return list(unpack(f, f"<{count}{GGUF_SCALARS[item_kind][1]}"))
        return [read_value(f, item_kind) for _ in range(count)]
    raise EstimateError(f"unknown GGUF metadata type {kind}")


def read_string(f: BinaryIO) -> str:
    (length,) = unpack(f, "<Q")
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
    return Architecture(
        layers=int(layers),
        kv_heads=int(kv_heads),
        key_length=int(key_length),
        value_length=int(get("attention.value_length") or key_length),
        context_length=get("context_length"),
    )


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
    (a folder may also hold e.g. a consolidated copy), else every *.safetensors."""
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [path / name for name in sorted(set(weight_map.values()))]
    return sorted(path.glob("*.safetensors"))


def safetensors_sizes(path: Path) -> tuple[int, int]:
    """(bytes of tensor data, tensor count) from the header: 8-byte little-endian length + JSON."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise EstimateError(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EstimateError(f"{path}: not a safetensors file (bad header)") from exc
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    return sum(end - begin for begin, end in (t["data_offsets"] for t in tensors)), len(tensors)


def config_architecture(config: Path) -> Architecture | None:
    """KV-cache numbers from a Hugging Face config.json (or its text_config, for multimodal ones)."""
    if not config.is_file():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    if "num_hidden_layers" not in data and isinstance(data.get("text_config"), dict):
        data = data["text_config"]
    try:
        heads = int(data["num_attention_heads"])
        head_dim = int(data.get("head_dim") or data["hidden_size"] // heads)
        return Architecture(
            layers=int(data["num_hidden_layers"]),
            kv_heads=int(data.get("num_key_value_heads") or heads),
            key_length=head_dim,
            value_length=head_dim,
            context_length=data.get("max_position_embeddings"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EstimateError(f"{config}: missing or bad architecture field {exc}") from exc


def cpu_need(model: LoadedModel) -> int:
    """Host memory one CPU replica needs: the manifest's ``gpu_memory`` when it is a size (for a
    CPU replica it means host memory), else weights + KV cache + the engine's CPU overhead (weights
    that cannot be sized count by their size on disk). Raises EstimateError for a fraction of a
    GPU, which means nothing on the CPU."""
    from controller.manifests.document import parse_size  # pydantic lives there; keep it off the import path

    manifest = model.manifest
    if isinstance(manifest.gpu_memory, str):
        return parse_size(manifest.gpu_memory)
    if manifest.gpu_memory is not None:
        raise EstimateError(
            f"model {model.name}: gpu_memory {manifest.gpu_memory} is a share of a GPU; a CPU replica "
            "needs a size ('2GiB') or none (estimated from the weights)"
        )
    overhead = CPU_OVERHEAD_BYTES[manifest.resolved_engine]
    try:
        found = estimate(model)
    except EstimateError:
        # Unreadable or unsized weights: the engine will say what is wrong with them when it starts
        # (a clearer reason than ours). Until then they need at least what they weigh on disk.
        return on_disk(model.weights) + overhead
    return found.weights + found.kv_cache + overhead


def on_disk(weights: Path | None) -> int:
    """Bytes of a weights file, or of the files in a weights folder; 0 for hub weights (not here)."""
    if weights is None or not weights.exists():
        return 0
    if weights.is_file():
        return weights.stat().st_size
    return sum(f.stat().st_size for f in weights.rglob("*") if f.is_file())


def gpu_need(model: LoadedModel) -> int | float:
    """Memory each GPU of one replica must give: the manifest's ``gpu_memory`` (a fraction of a GPU,
    or bytes from a size) when set, else the estimate split over ``num_gpus``. Raises EstimateError."""
    from controller.manifests.document import parse_size  # pydantic lives there; keep it off the import path

    manifest = model.manifest
    if isinstance(manifest.gpu_memory, str):
        return parse_size(manifest.gpu_memory)
    if manifest.gpu_memory is not None:
        return float(manifest.gpu_memory)
    return estimate(model).per_gpu(manifest.num_gpus)


# --- what the weights are, for APIs that show models (Ollama's /api/tags, /api/show) -------------

# llama.cpp's llama_ftype (GGUF general.file_type) -> the name Ollama shows as quantization_level.
GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M",
    18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip
# config.json keys -> the GGUF-style keys Ollama's model_info uses (after "<arch>.").
_CONFIG_INFO = {
    "max_position_embeddings": "context_length",
    "hidden_size": "embedding_length",
    "num_hidden_layers": "block_count",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "vocab_size": "vocab_size",
}
_DESCRIBED: dict[tuple[tuple[str, int, int], ...], Details] = {}


def describe(model: LoadedModel) -> Details:
    """What ``model``'s weights are (format, family, size, quantisation, a few header keys, chat
    template), read from the headers once per version of the files. Hub weights: what the manifest
    says. Never raises: what cannot be read stays unknown ("")."""
    weights = model.weights
    if weights is None:
        tag = (model.hub or "").partition(":")[2]
        engine = model.manifest.resolved_engine
        return Details(format="gguf" if engine == "llamacpp" else "safetensors", quantization=tag.upper())
    try:
        return by_version(_DESCRIBED, weights, describe_gguf, describe_safetensors)
    except (EstimateError, OSError, ValueError, KeyError, TypeError):
        return Details(size=on_disk(weights) if weights.exists() else 0)


def describe_gguf(path: Path) -> Details:
    header = read_gguf_header(path)
    meta = header.metadata
    arch = str(meta.get("general.architecture", ""))
    params = sum(math.prod(t.dims) for t in header.tensors)
    size_label = meta.get("general.size_label") or parameter_label(params)
    keys = (
        "context_length",
        "embedding_length",
        "block_count",
        "attention.head_count",
        "attention.head_count_kv",
    )
    info = [("general.architecture", arch), ("general.parameter_count", params)]
    info += [(f"{arch}.{k}", meta[f"{arch}.{k}"]) for k in keys if f"{arch}.{k}" in meta]
    return Details(
        format="gguf",
        family=arch,
        parameter_size=str(size_label),
        quantization=GGUF_FILE_TYPES.get(meta.get("general.file_type", -1), ""),
        size=path.stat().st_size,
        info=tuple((k, v) for k, v in info if isinstance(v, str | int | float)),
        template=str(meta.get("tokenizer.chat_template", "")),
    )


def describe_safetensors(path: Path) -> Details:
    folder = path if path.is_dir() else path.parent
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    text: dict[str, Any] = config["text_config"] if isinstance(config.get("text_config"), dict) else config
    arch = str(config.get("model_type", ""))
    params = sum(safetensors_elements(f) for f in safetensors_files(path))
    info = [("general.architecture", arch), ("general.parameter_count", params)]
    info += [(f"{arch}.{ours}", text[theirs]) for theirs, ours in _CONFIG_INFO.items() if theirs in text]
    template = folder / "chat_template.jinja"
    return Details(
        format="safetensors",
        family=arch,
        parameter_size=parameter_label(params),
        quantization=str(config.get("torch_dtype") or config.get("dtype") or "")
        .upper()
        .replace("FLOAT", "F"),
        size=on_disk(path),
        info=tuple((k, v) for k, v in info if isinstance(v, str | int | float)),
        template=template.read_text(encoding="utf-8") if template.is_file() else "",
    )


def safetensors_elements(path: Path) -> int:
    """Parameters (tensor elements) in one .safetensors file, from its header."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def parameter_label(count: int) -> str:
    """Parameters as Ollama shows them: "135M", "8.0B"; "" for none."""
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    if count >= 1e6:
        return f"{count / 1e6:.0f}M"
    return f"{count / 1e3:.0f}K" if count else ""
