"""A LoRA adapter's rank, read from its own files: vLLM reserves memory for ``--max-lora-rank`` x
``--max-loras`` and refuses an adapter whose rank exceeds it, so the controller needs the rank of
every adapter before it starts the base model.

- A PEFT folder (vLLM): ``r`` in ``adapter_config.json``.
- A GGUF adapter (llama.cpp, ``convert_lora_to_gguf.py``): the file has no rank key; the rank is the
  second dimension of any ``*.lora_a`` tensor (gguf shapes ``[input width, rank]``,
  docs/model-shapes.md).

``max_lora_rank`` and ``max_loras`` are the two numbers vLLM's flags and the memory estimate both
take from the adapters, defined once here so that they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from controller.weights.config import read_json
from controller.weights.gguf import read_gguf_header
from controller.weights.info import MAX_ARCH, EstimateError, count_of

if TYPE_CHECKING:
    from controller.manifests.model import LoadedModel

PEFT_CONFIG = "adapter_config.json"


def adapter_rank(path: Path) -> int:
    """The rank of the LoRA adapter at ``path`` (a PEFT folder or a GGUF file). Raises
    EstimateError naming the file when it states none or a bad one."""
    if path.is_dir():
        return peft_rank(path / PEFT_CONFIG)
    return gguf_rank(path)


def peft_rank(config: Path) -> int:
    """``r`` of a PEFT ``adapter_config.json``. Raises EstimateError."""
    if not config.is_file():
        raise EstimateError(f"{config.parent}: no {PEFT_CONFIG}; is this a PEFT LoRA adapter folder?")
    data = read_json(config)
    if data.get("peft_type", "LORA") != "LORA":
        raise EstimateError(f"{config}: peft_type is {str(data.get('peft_type'))[:40]}, not LORA")
    try:
        return count_of(data.get("r"), "r", MAX_ARCH)
    except EstimateError as exc:
        raise EstimateError(f"{config}: {exc}") from exc


def gguf_rank(path: Path) -> int:
    """The rank of a GGUF LoRA adapter: its ``lora_a`` tensors' second dimension. Raises
    EstimateError for a GGUF that is not a LoRA adapter."""
    header = read_gguf_header(path)
    if header.metadata.get("general.type") != "adapter" or header.metadata.get("adapter.type") != "lora":
        raise EstimateError(f"{path}: not a LoRA adapter GGUF (general.type / adapter.type)")
    for tensor in header.tensors:
        if tensor.name.endswith(".lora_a") and len(tensor.dims) == 2:
            return count_of(tensor.dims[1], "lora_a rank", MAX_ARCH)
    raise EstimateError(f"{path}: no lora_a tensor to read the rank from")


# The only values vLLM's --max-lora-rank takes (its argparse choices; `--max-lora-rank 4` exits with
# "invalid choice: 4 (choose from 1, 8, 16, 32, 64, 128, 256, 320, 512)", docs/model-shapes.md).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(ranks: Iterable[int]) -> int:
    """vLLM's ``--max-lora-rank`` for adapters of ``ranks``: the largest, rounded up to a value
    vLLM takes (it refuses an adapter whose rank exceeds it). Raises ValueError for no ranks or a
    rank above 512, which vLLM cannot serve."""
    largest = max(ranks, default=0)
    if largest < 1:
        raise ValueError("no adapter rank to size --max-lora-rank from")
    for allowed in VLLM_LORA_RANKS:
        if largest <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {largest} is above 512, the most vLLM's --max-lora-rank allows")


def max_loras(model: LoadedModel) -> int:
    """vLLM's ``--max-loras`` (adapters one batch may use at once): every adapter of ``model``, so
    that requests for different adapters never wait for a slot."""
    return len(model.manifest.adapters)
