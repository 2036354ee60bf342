"""A Hugging Face config.json: the architecture of safetensors weights (layers, KV heads, head
size, trained context), read as bounded JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controller.weights.info import MAX_ARCH, Architecture, EstimateError, architecture, count_of

MAX_JSON_FILE = 16 << 20  # config.json, model.safetensors.index.json


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
