"""How much memory one replica needs (a GPU's, or the host's for a CPU replica): weights + KV cache +
the files beside the weights (projector, draft, adapters) + the engine's runtime overhead.

Weights come exactly from the file headers (``controller.weights``), never by loading tensors. The KV cache
follows from the architecture (GGUF metadata, or a safetensors folder's config.json): layers x KV
heads x (key + value head size) x tokens x 2 bytes (f16/bf16, both engines' default cache type).
A draft model adds its weights and a KV cache of its own for as many tokens as the main model's
(llama.cpp gives the draft the main context). Adapters: llama.cpp loads each adapter file whole;
vLLM reserves ``--max-loras`` slots of ``--max-lora-rank`` (``controller.weights.lora``), sized
here from the largest adapter. A manifest's ``gpu_memory`` overrides all of this.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controller.manifests.sizes import parse_size
from controller.weights.info import Architecture, EstimateError
from controller.weights.lora import adapter_rank, max_lora_rank, max_loras
from controller.weights.read import by_version, on_disk, read_weights

if TYPE_CHECKING:  # not at run time: the GPU script places models without pydantic (manifests')
    from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel

GiB = 1024**3
MiB = 1024**2

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


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Bytes one replica needs in all (over all its GPUs), by part."""

    weights: int
    kv_cache: int
    overhead: int  # per GPU
    total: int  # every part, the overhead once (for one GPU)
    projector: int = 0  # llama.cpp's mmproj weights
    draft: int = 0  # the draft model's weights and its KV cache
    adapters: int = 0  # LoRA: llama.cpp's adapter files, or vLLM's reserved slots

    @property
    def shared(self) -> int:
        """The parts spread over the replica's GPUs: all but the per-GPU overhead."""
        return self.weights + self.kv_cache + self.projector + self.draft + self.adapters

    def per_gpu(self, num_gpus: int) -> int:
        """Bytes on each of ``num_gpus`` GPUs: the shared parts split evenly, overhead on every GPU.

        Even is exact for the weights and KV cache under tensor parallelism, approximate for the
        rest: llama.cpp keeps a projector whole on one GPU and splits the draft by its own layers,
        vLLM shards LoRA slots like the layers they adapt. With one GPU (the usual case for models
        with these files) it is exact."""
        return math.ceil(self.shared / max(num_gpus, 1)) + self.overhead


def estimate(model: LoadedModel) -> MemoryEstimate:
    """The memory estimate of one replica of ``model``, from its (resolved) weights.
    Raises EstimateError when the weights were not resolved or cannot be sized."""
    manifest = model.manifest
    weights = model.readable_weights
    if weights is None:
        raise EstimateError(f"model {model.name}: weights not resolved; set gpu_memory to place it")
    return estimate_files(
        weights,
        engine=manifest.resolved_engine,
        context_length=manifest.context_length,
        max_batch_size=manifest.max_batch_size,
        files=model.readable_files,
        lora_slots=max_loras(model),
    )


def estimate_files(
    weights: Path,
    *,
    engine: str,
    context_length: int | None,
    max_batch_size: int,
    files: ExtraFiles | None = None,
    lora_slots: int | None = None,
) -> MemoryEstimate:
    """As ``estimate``, from a weights path, the files beside it and the manifest's numbers
    (``lora_slots``: vLLM's --max-loras, default every adapter). Raises EstimateError."""
    info = read_weights(weights)
    if info.architecture is None:
        raise EstimateError(f"{weights}: no architecture found (config.json?); cannot size the KV cache")
    tokens = kv_tokens(info.architecture, engine, context_length, max_batch_size)
    kv = tokens * info.architecture.kv_bytes_per_token()
    mmproj, draft_file = (files.mmproj, files.draft) if files else (None, None)
    adapter_files = files.adapters if files else ()
    projector = read_weights(mmproj).weight_bytes if mmproj is not None else 0
    draft = draft_bytes(draft_file, tokens) if draft_file is not None else 0
    slots = len(adapter_files) if lora_slots is None else lora_slots
    adapters = adapter_bytes(engine, adapter_files, slots)
    overhead = OVERHEAD_BYTES[engine]
    total = info.weight_bytes + kv + projector + draft + adapters + overhead
    return MemoryEstimate(info.weight_bytes, kv, overhead, total, projector, draft, adapters)


def draft_bytes(draft: Path, tokens: int) -> int:
    """A draft model's weights and its KV cache for ``tokens`` (as many as the main model's)."""
    info = read_weights(draft)
    if info.architecture is None:
        raise EstimateError(f"{draft}: the draft states no architecture; cannot size its KV cache")
    return info.weight_bytes + tokens * info.architecture.kv_bytes_per_token()


_RANKS: dict[tuple[tuple[str, int, int], ...], int] = {}


def adapter_bytes(engine: str, adapters: tuple[AdapterFile, ...], slots: int) -> int:
    """Memory for LoRA adapters. llama.cpp: every adapter file's tensors. vLLM: ``slots`` buffers
    of ``--max-lora-rank``, each the largest adapter's bytes scaled from its rank to that rank
    (approximate: vLLM allocates in the model's dtype, for the modules it supports; a f32 adapter
    counts double against a bf16 model, on the safe side)."""
    if not adapters:
        return 0
    sizes = [read_weights(a.path).weight_bytes for a in adapters]
    if engine == "llamacpp":
        return sum(sizes)
    ranks = [by_version(_RANKS, a.path, adapter_rank, adapter_rank) for a in adapters]
    try:
        top = max_lora_rank(ranks)
    except ValueError as exc:
        raise EstimateError(f"adapters: {exc}") from exc
    largest = max(range(len(adapters)), key=lambda i: sizes[i])
    return math.ceil(sizes[largest] * top / ranks[largest]) * slots


def kv_tokens(arch: Architecture, engine: str, context_length: int | None, max_batch_size: int) -> int:
    """Tokens the engine holds KV for. With a context length, both engines keep that many per
    sequence (llama.cpp gets -c context x --parallel). Without one, llama.cpp allocates the trained
    context once, shared by its slots; vLLM sizes for max_num_seqs sequences of the trained length."""
    if context_length is None:
        if arch.context_length is None:
            raise EstimateError("the model states no context length; set context_length")
        return arch.context_length if engine == "llamacpp" else arch.context_length * max_batch_size
    return context_length * max_batch_size


def cpu_need(model: LoadedModel) -> int:
    """Host memory one CPU replica needs: the manifest's ``gpu_memory`` when it is a size (for a
    CPU replica it means host memory), else weights + KV cache + the engine's CPU overhead (weights
    that cannot be sized count by their size on disk). Raises EstimateError for a fraction of a
    GPU, which means nothing on the CPU."""
    manifest = model.manifest
    if isinstance(manifest.gpu_memory, str):
        return parse_size(manifest.gpu_memory)
    if manifest.gpu_memory is not None:
        raise EstimateError(
            f"model {model.name}: gpu_memory {manifest.gpu_memory} is a share of a GPU; a CPU replica "
            "needs a size ('2GiB') or none (estimated from the weights)"
        )
    try:
        return host_estimate(model).total
    except EstimateError:
        # Unreadable or unsized weights: the engine will say what is wrong with them when it starts
        # (a clearer reason than ours). Until then they need at least what they weigh on disk.
        return sum(map(on_disk, files_of(model))) + CPU_OVERHEAD_BYTES[manifest.resolved_engine]


def host_estimate(model: LoadedModel) -> MemoryEstimate:
    """``estimate`` of a CPU replica: every part in host memory, the engine's CPU overhead (its
    process) in place of the GPU one. Raises EstimateError."""
    found = estimate(model)
    overhead = CPU_OVERHEAD_BYTES[model.manifest.resolved_engine]
    return dataclasses.replace(found, overhead=overhead, total=found.shared + overhead)


def files_of(model: LoadedModel) -> list[Path | None]:
    """The weights and every file beside them (unresolved ones as None)."""
    extra = model.readable_files
    return [model.readable_weights, extra.mmproj, extra.draft, *(a.path for a in extra.adapters)]


def gpu_need(model: LoadedModel) -> int | float:
    """Memory each GPU of one replica must give: the manifest's ``gpu_memory`` (a fraction of a GPU,
    or bytes from a size) when set, else the estimate split over ``num_gpus``. Raises EstimateError."""
    manifest = model.manifest
    if isinstance(manifest.gpu_memory, str):
        return parse_size(manifest.gpu_memory)
    if manifest.gpu_memory is not None:
        return float(manifest.gpu_memory)
    return estimate(model).per_gpu(manifest.num_gpus)
