"""Manifest fields that mean nothing on a cluster, or that the cluster does differently: one line
each, printed when rendering (never dropped in silence)."""

from __future__ import annotations

from controller.engines.files import hub_fields
from controller.engines.vllm import VLLM_DEFAULT_LORA_RANK
from controller.kubernetes import hubfiles
from controller.kubernetes.engine import RUNS_AS_NOBODY, container_spec, replica_count
from controller.kubernetes.options import RenderOptions
from controller.manifests.envrefs import references
from controller.manifests.model import LoadedModel


def model_notes(model: LoadedModel, options: RenderOptions) -> list[str]:
    """The lines for one model, each starting with its name and the field."""
    m = model.manifest
    lines = [*replica_notes(model), *gpu_notes(model, options)]
    if m.priority:
        lines.append(
            f"priority {m.priority}: not rendered (which pods yield is a PriorityClass, the cluster's)"
        )
    for name, value in m.env.items():
        for ref in dict.fromkeys(references(value)):
            lines.append(
                f"env.{name}: ${{{ref}}} is key {ref} of Secret {options.secret} (create it; never rendered)"
            )
    if model.hub:
        lines.append(
            f"model {m.model}: the engine downloads it into PVC {options.cache_claim} (ReadWriteMany)"
        )
    if hub := [role for role, _ in hub_fields(model)]:
        lines.append(
            f"{', '.join(hub)}: hf:// files, pulled by the pod's initContainer ({hubfiles.NAME}, image "
            f"{options.gateway_image}) into PVC {options.cache_claim}; the memory request does not count "
            "them (not here to size)" + ("" if m.num_gpus else " and the replica gets no memory limit")
        )
    if m.resolved_engine == "vllm" and m.adapters and not any(a.path.exists() for a in model.files.adapters):
        lines.append(
            "adapters: their rank is read with --model-root only; without it vLLM's default "
            f"--max-lora-rank ({VLLM_DEFAULT_LORA_RANK}) applies, too small for an adapter of a higher rank"
        )
    if not RUNS_AS_NOBODY[m.resolved_engine]:
        lines.append(
            f"engine {m.resolved_engine}: runs as its image's user (root), capabilities dropped, "
            "no privilege escalation"
        )
    return [f"{model.name}: {line}" for line in lines]


def replica_notes(model: LoadedModel) -> list[str]:
    m = model.manifest
    if not m.on_demand and m.min_count > 0:
        return []
    count = replica_count(model)
    lines = [
        f"min_replicas {m.min_count} / max_replicas {m.max_count}: rendered as replicas: {count}; "
        "no scale to zero or autoscaling on a cluster (KEDA, KubeAI: docs/kubernetes.md)"
    ]
    if m.on_demand:
        lines.append(
            f"idle_timeout {m.idle_timeout}, target_requests {m.target}: not rendered (no autoscaler)"
        )
    return lines


def gpu_notes(model: LoadedModel, options: RenderOptions) -> list[str]:
    m = model.manifest
    if not m.num_gpus:
        spec = container_spec(model, options)
        threads = (
            "" if spec.engine == "vllm" or not spec.cpuset else f", llama-server --threads {options.cpus}"
        )
        line = (
            f"num_gpus 0: {options.cpus} cores requested per replica{threads} (the scheduler's, not a cpuset)"
        )
        if isinstance(m.gpu_memory, str):
            line += f"; gpu_memory {m.gpu_memory} is its memory request"
        return [line]
    lines = [
        f"num_gpus {m.num_gpus}: limits nvidia.com/gpu: {m.num_gpus}; which GPUs is the scheduler's and the "
        "NVIDIA device plugin's, not modelctl's placement"
    ]
    if isinstance(m.gpu_memory, float):
        flag = "--gpu-memory-utilization" if m.resolved_engine == "vllm" else "no llama.cpp flag"
        lines.append(
            f"gpu_memory {m.gpu_memory:g}: {flag} {m.gpu_memory:g}; replicas still get whole GPUs unless the "
            "device plugin shares them (time-slicing, MIG)"
        )
    elif m.gpu_memory is not None:
        lines.append(f"gpu_memory {m.gpu_memory}: not rendered (the GPU's size is not known here)")
    return lines
