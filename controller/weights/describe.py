"""What a model's weights are, for the APIs that show models (Ollama's /api/tags, /api/show).

Format, family, parameter count, quantisation, a few architecture keys and the chat template,
read from the headers (``gguf``, ``safetensors``) once per version of the files. The gateway gets them through
the endpoint table (``endpoints.table.Details``), never by reading files itself.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.endpoints.table import Details
from controller.weights.config import read_json
from controller.weights.gguf import read_gguf_shards
from controller.weights.info import BAD_HEADER, EstimateError
from controller.weights.read import by_version, on_disk
from controller.weights.safetensors import safetensors_files, safetensors_header

if TYPE_CHECKING:
    from controller.manifests.model import LoadedModel

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
_VISION: dict[tuple[tuple[str, int, int], ...], bool] = {}


def describe(model: LoadedModel) -> Details:
    """What ``model``'s weights are (format, family, size, quantisation, a few header keys, chat
    template), read from the headers once per version of the files. Hub weights: from the pulled
    files once pulled, until then what the manifest says. Never raises: what cannot be read stays
    unknown ("")."""
    weights = model.readable_weights
    if weights is None:
        tag = (model.hub or "").partition(":")[2]
        engine = model.manifest.resolved_engine
        return Details(format="gguf" if engine == "llamacpp" else "safetensors", quantization=tag.upper())
    try:
        return by_version(_DESCRIBED, weights, describe_gguf, describe_safetensors)
    except (EstimateError, OSError, *BAD_HEADER):
        return Details(size=on_disk(weights) if weights.exists() else 0)


def takes_images(model: LoadedModel) -> bool | None:
    """Whether ``model`` takes images (the endpoint table's ``vision``): with a projector (llama.cpp's
    ``mmproj``), or vLLM weights whose config.json has a ``vision_config``; None when the files
    cannot tell (hub weights not pulled yet, an unreadable config). Read once per version of the
    files; never raises."""
    if model.readable_files.mmproj is not None or model.manifest.mmproj is not None:
        return True
    weights = model.readable_weights
    if weights is None:
        return None
    if model.manifest.resolved_engine != "vllm":
        return False  # llama.cpp takes images through a projector only
    try:
        return by_version(_VISION, weights, lambda _: False, _has_vision_config)
    except (EstimateError, OSError, *BAD_HEADER):
        return None


def _has_vision_config(path: Path) -> bool:
    config = (path if path.is_dir() else path.parent) / "config.json"
    return config.is_file() and isinstance(read_json(config).get("vision_config"), dict)


def describe_gguf(path: Path) -> Details:
    """A GGUF's details; of a split one, the metadata of shard 1 and the size and parameters of all."""
    headers = read_gguf_shards(path)
    meta = headers[0].metadata
    arch = str(meta.get("general.architecture", ""))
    params = sum(math.prod(t.dims) for header in headers for t in header.tensors)
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
        size=on_disk(path),
        info=tuple((k, v) for k, v in info if isinstance(v, str | int | float)),
        template=str(meta.get("tokenizer.chat_template", "")),
    )


def describe_safetensors(path: Path) -> Details:
    folder = path if path.is_dir() else path.parent
    config_file = folder / "config.json"
    config = read_json(config_file) if config_file.is_file() else {}
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
    return sum(math.prod(t["shape"]) for t in safetensors_header(path).values())


def parameter_label(count: int) -> str:
    """Parameters as Ollama shows them: "135M", "8.0B"; "" for none."""
    if count >= 1e9:
        return f"{count / 1e9:.1f}B"
    if count >= 1e6:
        return f"{count / 1e6:.0f}M"
    return f"{count / 1e3:.0f}K" if count else ""
