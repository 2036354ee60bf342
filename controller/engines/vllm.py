"""vLLM's OpenAI-compatible server in the official image vllm/vllm-openai.

The official image's entrypoint is ``vllm serve``, so the command starts with the model path
(positional), then: ``--served-model-name`` (name and aliases), ``--tensor-parallel-size`` (GPUs per
replica), ``--max-num-seqs`` (concurrent sequences), ``--max-model-len`` (context length).
Flags checked against ``vllm serve --help=all`` of vLLM 0.32.0 (the CPU build in the stand-in image).
Readiness: ``GET /health`` answers 200 once the engine is up (the port refuses connections before).
A replica without GPUs gets ``--enforce-eager`` unless its args choose compilation themselves: vLLM's
default torch.compile needs a C++ compiler on CPU (the engine fails, then hangs, without one) and
costs minutes at every start there for no faster decoding. GPU replicas keep vLLM's default.
vLLM's workers talk through shared memory, so the container gets a larger /dev/shm (not ipc=host).
Tool calls and reasoning: ``--enable-auto-tool-choice --tool-call-parser X --reasoning-parser Y``
from the weights' family (``controller.engines.parsers``) or the manifest; without them vLLM
answers 400 to any request with ``tools``.

LoRA adapters (PEFT folders): ``--enable-lora --max-lora-rank R --max-loras N --lora-modules
name=path ...``; each adapter is then a model of its own in /v1/models (``parent``: the base) and a
request selects it by ``"model": name``. R is the largest adapter rank rounded up to the values vLLM
accepts (it refuses any other at start, and an adapter above R once loaded); N every adapter. A
draft model goes in ``--speculative-config`` (JSON). vLLM takes no projector file: the manifest
refuses ``mmproj`` for it.
"""

from __future__ import annotations

import json
import re

from controller.engines import parsers, tasks
from controller.engines.common import HUB_CACHE_DIR, cpu_list, engine_spec, weights_source
from controller.engines.files import NO_FILES, Placed, place_files
from controller.errors import EngineError, ModelctlError
from controller.manifests.engines import VLLM
from controller.manifests.model import LoadedModel
from controller.placement.memory import GiB
from controller.runtime.spec import ContainerSpec
from controller.weights.lora import adapter_rank, max_lora_rank, max_loras

# The thin layer in images/vllm over the official image (adds a health check and labels).
DEFAULT_IMAGE = "modelctl/vllm:openai"
PORT = 8000
HEALTH_PATH = "/health"
SHM_SIZE = "2g"
# vLLM runs an API server, an engine core and a worker per GPU, each with torch's and the
# tokenizers' thread pools (sized by the host's cores) and NCCL/CUDA threads: more than llama-server.
# Measured here (vLLM CPU 0.32, SmolLM2, 2 cores): 74 tasks serving; pools grow with the cores.
PIDS_LIMIT = 16384
# The CPU backend's KV cache: VLLM_CPU_KVCACHE_SPACE GiB, 4 when unset (vLLM's default), allocated
# whatever the context length; a CPU replica's memory limit leaves room for it (``memory_limit``).
KVCACHE_SPACE_VAR = "VLLM_CPU_KVCACHE_SPACE"
KVCACHE_SPACE_DEFAULT_GIB = 4
# Flags by which `args` choose vLLM's compilation mode (vLLM 0.32: --[no-]enforce-eager,
# -cc/--compilation-config with its dotted forms such as -cc.mode=0, -O/--optimization-level and
# -O0..-O3); any of them turns the CPU default --enforce-eager off.
COMPILATION_FLAGS = (
    "--enforce-eager",
    "--no-enforce-eager",
    "--compilation-config",
    "-cc",
    "--optimization-level",
    "-O",
)
# vLLM's --max-lora-rank when the flag is not given (vLLM 0.32).
VLLM_DEFAULT_LORA_RANK = 16
# Tokens the draft model proposes per step (--speculative-config num_speculative_tokens).
SPECULATIVE_TOKENS = 5


def container_spec(
    model: LoadedModel,
    replica: int,
    gpus: tuple[str, ...],
    gpu_share: float | None = None,
    *,
    cpus: tuple[int, ...] = (),
) -> ContainerSpec:
    """The spec of replica ``replica`` of a safetensors model served by vLLM; ``gpu_share`` is its
    share of each GPU's memory when placement shares GPUs (--gpu-memory-utilization)."""
    weights = weights_source(model, whole_folder=True)
    files = place_files(model, folders=True, mmproj=False)
    hub_env = (("HF_HOME", f"{HUB_CACHE_DIR}/huggingface"),) if weights.hub else ()
    return engine_spec(
        model,
        replica,
        engine=VLLM,
        default_image=DEFAULT_IMAGE,
        command=command(model, str(weights.hub or weights.path), gpus, gpu_share, files),
        port=PORT,
        health_path=HEALTH_PATH,
        weights=weights,
        hub_env=hub_env,
        gpus=gpus,
        shm_size=SHM_SIZE,
        cpus=cpus,
        # vLLM's CPU backend binds its OpenMP threads to these cores (one thread each).
        extra_env=(("VLLM_CPU_OMP_THREADS_BIND", cpu_list(cpus)),) if cpus else (),
        pids_limit=PIDS_LIMIT,
        memory_reserve=0 if gpus else cpu_kv_cache(model),
        extra_mounts=files.mounts,
    )


def cpu_kv_cache(model: LoadedModel) -> int:
    """Bytes of KV cache vLLM's CPU backend allocates: VLLM_CPU_KVCACHE_SPACE GiB from the
    manifest's env, else vLLM's default (an image may set less: the limit is then looser)."""
    value = dict(model.env).get(KVCACHE_SPACE_VAR, "").strip()
    gib = int(value) if value.isdigit() and len(value) <= 6 else KVCACHE_SPACE_DEFAULT_GIB
    return gib * GiB


def command(
    model: LoadedModel,
    model_path: str,
    gpus: tuple[str, ...],
    gpu_share: float | None = None,
    files: Placed = NO_FILES,
) -> list[str]:
    """`vllm serve` arguments; ``model_path`` is the folder inside the container or 'org/repo';
    ``files`` where the draft and adapters appear in it. The manifest's own args come last. Raises
    EngineError when an adapter's rank cannot be read."""
    manifest = model.manifest
    args = [model_path, "--served-model-name", *manifest.names, "--host", "0.0.0.0"]
    args += ["--port", str(PORT), "--max-num-seqs", str(manifest.max_batch_size)]
    if gpus:
        args += ["--tensor-parallel-size", str(len(gpus))]
    if manifest.context_length:
        args += ["--max-model-len", str(manifest.context_length)]
    if gpus and gpu_share is not None:
        args += ["--gpu-memory-utilization", f"{gpu_share:g}"]
    if not gpus and not chooses_compilation(manifest.args):
        args.append("--enforce-eager")
    chosen = parsers.for_model(model) if model.task == "generate" else parsers.Parsers()
    return (
        args + file_flags(model, files) + parser_flags(chosen) + tasks.vllm_flags(model) + list(manifest.args)
    )


def parser_flags(chosen: parsers.Parsers) -> list[str]:
    """Tool calls (``--enable-auto-tool-choice`` needs a ``--tool-call-parser``) and reasoning."""
    flags = ["--enable-auto-tool-choice", "--tool-call-parser", chosen.tool] if chosen.tool else []
    return flags + (["--reasoning-parser", chosen.reasoning] if chosen.reasoning else [])


def file_flags(model: LoadedModel, files: Placed) -> list[str]:
    """The draft's speculative config and the adapters' LoRA flags. Raises EngineError."""
    args: list[str] = []
    if files.draft:
        config = {"model": files.draft, "num_speculative_tokens": SPECULATIVE_TOKENS}
        args += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
    if files.adapters:
        args += ["--enable-lora", *lora_rank_flag(model), "--max-loras", str(max_loras(model))]
        args += ["--lora-modules", *(f"{name}={path}" for name, path in files.adapters)]
    return args


def lora_rank_flag(model: LoadedModel) -> list[str]:
    """``--max-lora-rank R``: the adapters' largest rank rounded up to a value vLLM takes
    (``weights.lora.max_lora_rank``, as the memory estimate sizes it). Adapters none of which is on
    this machine (a Kubernetes rendering without --model-root, whose notes say so) leave vLLM's
    default (VLLM_DEFAULT_LORA_RANK). Raises EngineError naming an adapter whose rank cannot be
    read or is above vLLM's largest."""
    adapters = model.files.adapters
    if not any(adapter.path.exists() for adapter in adapters):
        return []
    ranks = []
    for adapter in adapters:
        try:
            rank = adapter_rank(adapter.path)
            max_lora_rank([rank])
        except (ModelctlError, OSError, ValueError) as exc:
            raise EngineError(f"model {model.name}: adapter {adapter.name}: {exc}") from exc
        ranks.append(rank)
    return ["--max-lora-rank", str(max_lora_rank(ranks))]


def chooses_compilation(args: list[str]) -> bool:
    """True when ``args`` set vLLM's compilation mode: `--flag`, `--flag=v`, `--flag.key=v`, and
    for the short flags also the attached form (`-O0`)."""
    return any(_sets(arg, flag) for arg in args for flag in COMPILATION_FLAGS)


def _sets(arg: str, flag: str) -> bool:
    if flag.startswith("--"):
        return arg == flag or arg.startswith((f"{flag}=", f"{flag}."))
    return arg.startswith(flag) and not arg.startswith("--")


# Draining: vLLM's Prometheus metrics count running and waiting requests.
IDLE_PATH = "/metrics"
_BUSY = re.compile(r"^vllm:num_requests_(?:running|waiting)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", re.MULTILINE)


def is_idle(body: str) -> bool:
    """True when vLLM reports no running or waiting request (``body`` is GET /metrics)."""
    return all(float(value) == 0 for value in _BUSY.findall(body))
