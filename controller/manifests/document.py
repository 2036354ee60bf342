"""The model manifest: what a user asks for, validated in one pass with errors that name the field.

One YAML (or JSON) document describes one model. The seed's example is a valid manifest as written::

    {"model": "path/to/model.safetensors", "engine": "vllm", "num_gpus": 2, "max_batch_size": 16}

``model`` is the weights: a path relative to a model root (or absolute, under one). ``num_gpus`` is
GPUs per replica (vLLM's tensor parallel size) and ``max_batch_size`` the sequences one replica serves
at once (vLLM ``--max-num-seqs``, llama.cpp ``--parallel``). Files and documents are handled by
``controller.manifests.loader``; this module only knows one document.
"""

from __future__ import annotations

import difflib
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from controller.manifests.engines import EngineName
from controller.manifests.envrefs import NEVER_PREFIX, references
from controller.manifests.flags import FIELD_OF_FLAG, reserved_flag
from controller.manifests.parsernames import (
    MAX_PARSER_CHARS,
    VLLM_REASONING_PARSERS,
    VLLM_TOOL_PARSERS,
    check_parser,
)
from controller.manifests.quoting import shown
from controller.manifests.sizes import parse_duration, parse_size

Balancing = Literal["least-outstanding", "prefix-affinity", "round-robin"]
# What a model is for: the APIs the gateway lets through to it and the engine's mode (docs/tasks.md).
Task = Literal["generate", "embed", "rerank"]
TASKS: tuple[Task, ...] = ("generate", "embed", "rerank")

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _check_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(
            f"'{shown(value)}' is not a valid name: use 1-63 lower-case letters, digits, '.', '_' or '-',"
            " starting and ending with a letter or digit"
        )
    return value


# Environment the engine must not get from a manifest: placement owns the GPUs (NVIDIA_* steer the
# container runtime's GPU hook, CUDA_VISIBLE_DEVICES renumbers or widens what the engine uses),
# LD_PRELOAD / LD_AUDIT inject code into every process of the container, and the engines' own
# variables for flags modelctl sets (an API key would make the gateway's requests fail with 401).
# LD_LIBRARY_PATH stays allowed: it only says where the image's own libraries are found, and
# images (CUDA ones among them) rely on extending it.
RESERVED_ENV_NAMES = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "LD_PRELOAD",
        "LD_AUDIT",
        "VLLM_API_KEY",
        "LLAMA_API_KEY",
        *(
            f"LLAMA_ARG_{name}"
            for name in (
                "MODEL",
                "MODEL_URL",
                "HF_REPO",
                "HF_FILE",
                "MODELS_DIR",
                "MODELS_PRESET",
                "HOST",
                "PORT",
                "API_PREFIX",
                "SSL_KEY_FILE",
                "SSL_CERT_FILE",
                "ALIAS",
                "CTX_SIZE",
                "N_PARALLEL",
                "N_GPU_LAYERS",
                "THREADS_HTTP",
                "UI",
                "ENDPOINT_SLOTS",
            )
        ),
    }
)
RESERVED_ENV_PREFIXES = ("NVIDIA_",)

# Bounds on what one document may hold: far beyond any real manifest, small enough that a hostile
# one costs nothing to check, store or hand to Docker.
MAX_PATH_CHARS = 4096  # PATH_MAX
MAX_ALIASES = 32
MAX_ARGS = 256
MAX_ARG_CHARS = 16384  # a chat template or a JSON config passed inline
MAX_ENV = 128
MAX_ENV_NAME_CHARS = 256
MAX_ENV_VALUE_CHARS = 32768
MAX_IMAGE_CHARS = 512
MAX_CONTEXT_LENGTH = 1 << 24  # 16M tokens, beyond any model's trained context
MAX_ADAPTERS = 64  # LoRA adapters on one base: KubeAI and vLLM setups serve a handful to dozens


def _check_env_name(value: str) -> str:
    if not re.fullmatch(ENV_PATTERN, value):
        raise ValueError(f"'{shown(value)}' is not a valid environment variable name")
    if value in RESERVED_ENV_NAMES or value.startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(
            f"{value} may not be set by a manifest: modelctl owns it (placement gives the GPUs, "
            "the gateway talks to the engine)"
        )
    return value


def _check_env_value(value: str) -> str:
    _check_no_nul(value)
    for name in references(value):  # raises ValueError for a '$' that is neither '$$' nor '${NAME}'
        if name.startswith(NEVER_PREFIX):
            raise ValueError(
                f"refers to ${{{name}}}: manifests never get the controller's {NEVER_PREFIX}* variables"
            )
    return value


def _check_no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character, which no command line or environment can carry")
    return value


def _check_plain(value: str) -> str:
    """A path or image reference: no control characters (NUL, newlines, escapes)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("contains a control character")
    return value


ModelName = Annotated[
    str,
    AfterValidator(_check_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}),
]
EnvName = Annotated[
    str,
    Field(max_length=MAX_ENV_NAME_CHARS),
    AfterValidator(_check_env_name),
    WithJsonSchema({"type": "string", "pattern": ENV_PATTERN, "maxLength": MAX_ENV_NAME_CHARS}),
]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE_CHARS), AfterValidator(_check_env_value)]
Arg = Annotated[str, Field(max_length=MAX_ARG_CHARS), AfterValidator(_check_no_nul)]

ParserName = Annotated[str, Field(min_length=1, max_length=MAX_PARSER_CHARS)]
FilePath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(_check_plain)]


class Adapter(BaseModel):
    """A LoRA adapter of the base model, served under its own name: a GGUF adapter file for
    llama.cpp (``convert_lora_to_gguf.py``), a PEFT folder (adapter_config.json +
    adapter_model.safetensors) for vLLM."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: ModelName = Field(description="Name clients put in `model` to get this adapter.")
    path: FilePath = Field(description="The adapter, relative to a model root or absolute under one.")


# Engine suffixes, as Docker Model Runner chooses: GGUF is llama.cpp's, safetensors is vLLM's.
ENGINE_BY_SUFFIX: dict[str, EngineName] = {".gguf": "llamacpp", ".safetensors": "vllm"}


class ModelManifest(BaseModel):
    """One model: its weights, the engine that serves them, and how many replicas of what size."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)

    model: Annotated[str, AfterValidator(_check_plain)] = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="Weights: a .gguf file or a safetensors file/folder, relative to a model root "
        "or an absolute path under one; or a Hugging Face reference 'hf://org/repo' (llama.cpp: "
        "'hf://org/repo:QUANT') that the engine downloads itself into a cache volume.",
    )
    name: ModelName | None = Field(
        default=None,
        validate_default=True,
        description="Name clients put in `model`; defaults to the weights' file name, lower-cased.",
    )
    engine: EngineName | None = Field(
        default=None,
        validate_default=True,
        description="llamacpp or vllm; defaults from the weights (GGUF -> llamacpp).",
    )
    task: Task | None = Field(
        default=None,
        description="What the model is for: generate (chat, completions), embed (/v1/embeddings, "
        "/api/embed) or rerank (/v1/rerank, /rerank, /v1/score); sets the engine's mode, and the "
        "gateway refuses the other APIs. Default: from the weights (an embedding or reranker "
        "GGUF / config.json says so), else generate.",
    )
    aliases: list[ModelName] = Field(
        default_factory=list, max_length=MAX_ALIASES, description="Other names it answers to."
    )
    min_replicas: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Fewest replicas when idle; 0 = scale to zero (the first request starts one). "
        "Default: 1 when max_replicas is set.",
    )
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        le=64,
        validate_default=True,
        description="Most replicas under load (autoscaling on in-flight requests per replica). "
        "Default: min_replicas (at least 1).",
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=64,
        validate_default=True,
        description="Always exactly this many identical servers (min = max = replicas); leave it out "
        "when setting min_replicas / max_replicas. Default 1.",
    )
    num_gpus: int = Field(
        default=0, ge=0, le=64, description="GPUs per replica (vLLM --tensor-parallel-size)."
    )
    max_batch_size: int = Field(
        default=4,
        ge=1,
        le=4096,
        description="Sequences one replica serves at once (vLLM --max-num-seqs, llama.cpp --parallel).",
    )
    context_length: int | None = Field(
        default=None,
        ge=16,
        le=MAX_CONTEXT_LENGTH,
        description="Context window (vLLM --max-model-len, llama.cpp -c).",
    )
    balancing: Balancing = Field(
        default="least-outstanding",
        description="How the gateway spreads requests over replicas: least-outstanding, "
        "prefix-affinity (a conversation returns to the replica holding its KV cache while it is not "
        "overloaded), or round-robin.",
    )
    gpu_memory: float | str | None = Field(
        default=None,
        description="GPU memory each replica may use on each of its GPUs: a fraction of one GPU "
        "(0 < f <= 1, e.g. 0.5) or a size ('24GiB', '500MB'). Default: estimated from the weights.",
    )
    idle_timeout: float | str = Field(
        default="5m",
        description="How long without any request before the model goes down to min_replicas: "
        "seconds or '30s', '10m', '1h'; 0 = never. Only matters when min_replicas < max_replicas.",
    )
    target_requests: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="In-flight plus waiting requests per replica the autoscaler aims at. "
        "Default: max_batch_size.",
    )
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="When memory is short, idle on-demand replicas of the lowest priority are "
        "stopped first (then the least recently used).",
    )
    load_timeout: float | str | None = Field(
        default=None,
        description="How long the gateway holds a request while the model has no ready replica (a "
        "cold start, a swap): seconds or '90s', '10m'. Default: 2m for llamacpp, 15m for vllm.",
    )
    mmproj: FilePath | None = Field(
        default=None,
        description="llama.cpp: the vision (or audio) projector GGUF that goes with the weights "
        "(--mmproj), relative to a model root or absolute under one. Not for vllm, which reads a "
        "vision model's projector from its folder.",
    )
    draft: FilePath | None = Field(
        default=None,
        description="A smaller model of the same vocabulary that drafts tokens for speculative "
        "decoding (llama.cpp --model-draft: a GGUF file, shard 1 of a split one; vLLM: a model "
        "folder), relative to a model root or absolute under one.",
    )
    adapters: list[Adapter] = Field(
        default_factory=list,
        max_length=MAX_ADAPTERS,
        description="LoRA adapters of this model, each served under its own name (and as "
        "'<name>:<adapter>'): GGUF adapter files for llamacpp, PEFT folders for vllm, each checked "
        "against the weights (architecture, shapes, rank) before anything starts.",
    )
    image: (
        Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS), AfterValidator(_check_plain)] | None
    ) = Field(
        default=None,
        description="Container image; defaults to the engine's own.",
    )
    args: list[Arg] = Field(
        default_factory=list,
        max_length=MAX_ARGS,
        description="Extra engine command-line args; not the flags modelctl sets itself "
        "(controller/manifests/flags.py), in any spelling the engine accepts.",
    )
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        max_length=MAX_ENV,
        description="Extra environment for the engine. A value may refer to the controller's own "
        "environment with ${NAME} (for secrets: manifests live in git): HF_TOKEN, "
        "HUGGING_FACE_HUB_TOKEN and what MODELCTL_MANIFEST_ENV_ALLOW names, never MODELCTL_*; "
        "$$ is a literal $. Not NVIDIA_*, CUDA_VISIBLE_DEVICES, LD_PRELOAD (placement owns the GPUs).",
    )
    tools: bool = Field(
        default=True,
        description="Serve requests that carry `tools`: vLLM gets --enable-auto-tool-choice and the "
        "tool-call parser of the weights' family (docs/tools.md), llama.cpp --jinja. false: no tool flags.",
    )
    tool_parser: ParserName | None = Field(
        default=None,
        validate_default=True,
        description="vLLM only: the --tool-call-parser to use instead of the one chosen from the "
        "weights' config.json (hub weights get one only from here); a name vLLM registers.",
    )
    reasoning_parser: ParserName | None = Field(
        default=None,
        validate_default=True,
        description="vLLM only: the --reasoning-parser to use instead of the one chosen from the "
        "weights' config.json; a name vLLM registers.",
    )

    @field_validator("name", mode="after")
    @classmethod
    def _default_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and "model" in info.data:
            return default_name(info.data["model"])
        return value

    @field_validator("max_replicas", mode="after")
    @classmethod
    def _max_not_below_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("min_replicas")
        if value is not None and low is not None and value < low:
            raise ValueError(f"max_replicas ({value}) is less than min_replicas ({low})")
        return value

    @field_validator("replicas", mode="after")
    @classmethod
    def _fixed_or_bounds(cls, value: int | None, info: ValidationInfo) -> int | None:
        bounded = info.data.get("min_replicas") is not None or info.data.get("max_replicas") is not None
        if value is not None and bounded:
            raise ValueError(
                "replicas means always exactly that many; with min_replicas / max_replicas leave it out"
            )
        if value is None and not bounded:
            return 1
        return value

    @field_validator("idle_timeout", "load_timeout", mode="after")
    @classmethod
    def _duration_form(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("gpu_memory", mode="after")
    @classmethod
    def _gpu_memory_form(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str):
            parse_size(value)
        elif value is not None and not 0 < value <= 1:
            raise ValueError(f"a fraction of a GPU must be in (0, 1], not {value}; or give a size '24GiB'")
        return value

    @field_validator("engine", mode="after")
    @classmethod
    def _engine_fits_weights(cls, value: EngineName | None, info: ValidationInfo) -> EngineName | None:
        if "model" not in info.data:
            return value
        engine = value or infer_engine(info.data["model"])
        check_engine_serves(engine, info.data["model"])
        return engine

    @field_validator("aliases", mode="after")
    @classmethod
    def _aliases_unique(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("name") in value:
            raise ValueError(f"alias '{info.data['name']}' repeats the model's own name")
        if len(set(value)) != len(value):
            raise ValueError("aliases repeat a name")
        return value

    @field_validator("args", mode="after")
    @classmethod
    def _args_not_reserved(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("engine"):
            check_args(info.data["engine"], value)
        return value

    @field_validator("mmproj", mode="after")
    @classmethod
    def _mmproj_for_llamacpp(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_beside_file("mmproj", value, info.data.get("engine"))
        return value

    @field_validator("draft", mode="after")
    @classmethod
    def _draft_fits_engine(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_beside_file("draft", value, info.data.get("engine"))
            if info.data.get("task") not in (None, "generate"):
                raise ValueError(f"a draft speeds up generation; task {info.data['task']} generates nothing")
        return value

    @field_validator("adapters", mode="after")
    @classmethod
    def _adapters_fit(cls, value: list[Adapter], info: ValidationInfo) -> list[Adapter]:
        """Each adapter's name is one of its own (a request names it to reach it); each path is a
        file the engine loads as an adapter. Errors are located at ``adapters.N.name`` / ``.path``."""
        taken = {alias: "an alias of this model" for alias in info.data.get("aliases", [])}
        if info.data.get("name"):
            taken[info.data["name"]] = "this model's name"
        for index, adapter in enumerate(value):
            if adapter.name in taken:
                message = (
                    f"'{adapter.name}' is already {taken[adapter.name]}; an adapter needs a name of its own"
                )
                raise error_at((index, "name"), message, adapter.name)
            taken[adapter.name] = f"the name of adapters.{index}"
            try:
                check_beside_file("adapters", adapter.path, info.data.get("engine"))
            except ValueError as exc:
                raise error_at((index, "path"), str(exc), adapter.path) from exc
        return value

    @field_validator("tool_parser", mode="after")
    @classmethod
    def _tool_parser_known(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_vllm_only("tool_parser", info.data.get("engine"))
            check_parser(value, VLLM_TOOL_PARSERS, "tool-call")
            if info.data.get("tools") is False:
                raise ValueError("tools: false serves no tool calls; leave tool_parser out")
        return value

    @field_validator("reasoning_parser", mode="after")
    @classmethod
    def _reasoning_parser_known(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_vllm_only("reasoning_parser", info.data.get("engine"))
            check_parser(value, VLLM_REASONING_PARSERS, "reasoning")
        return value

    @property
    def resolved_name(self) -> str:
        assert self.name is not None  # set by the validator
        return self.name

    @property
    def resolved_engine(self) -> EngineName:
        assert self.engine is not None  # set by the validator
        return self.engine

    @property
    def names(self) -> tuple[str, ...]:
        return (self.resolved_name, *self.aliases)

    @property
    def local_paths(self) -> tuple[tuple[str, str], ...]:
        """Every host path this manifest names, with its field ('adapters.1.path'): the weights
        (unless a hub reference) and the files beside them. Each must resolve under a model root."""
        paths = [] if hub_reference(self.model) is not None else [("model", self.model)]
        paths += [(name, path) for name, path in (("mmproj", self.mmproj), ("draft", self.draft)) if path]
        paths += [(f"adapters.{index}.path", adapter.path) for index, adapter in enumerate(self.adapters)]
        return tuple(paths)

    @property
    def min_count(self) -> int:
        """Fewest replicas: ``replicas`` when fixed, else ``min_replicas`` (1 if only max is set)."""
        if self.min_replicas is not None:
            return self.min_replicas
        if self.max_replicas is not None or self.replicas is None:
            return 1
        return self.replicas

    @property
    def max_count(self) -> int:
        """Most replicas: ``replicas`` when fixed, else ``max_replicas`` (min_replicas, at least 1)."""
        if self.max_replicas is not None:
            return self.max_replicas
        if self.min_replicas is not None:
            return max(self.min_replicas, 1)
        return self.min_count

    @property
    def on_demand(self) -> bool:
        """Scaled by the controller between min and max (as opposed to a fixed replica count)."""
        return self.min_count != self.max_count

    @property
    def idle_timeout_s(self) -> float:
        """Seconds without requests before scaling down to min_count; 0 = never."""
        return parse_duration(self.idle_timeout)

    @property
    def load_timeout_s(self) -> float:
        """Seconds the gateway holds a request while no replica is ready."""
        if self.load_timeout is not None:
            return parse_duration(self.load_timeout)
        return DEFAULT_LOAD_TIMEOUT_S[self.resolved_engine]

    @property
    def target(self) -> int:
        """In-flight plus waiting requests per replica the autoscaler aims at."""
        return self.target_requests or self.max_batch_size


def closest_field(name: str) -> str | None:
    """The manifest field an unknown ``name`` most likely misspells ('max_batchsize' ->
    'max_batch_size', 'Replicas' -> 'replicas'), or None when none is close."""
    if len(name) > 64:  # a hostile key: not worth comparing, and no field is that long
        return None
    found = difflib.get_close_matches(name.lower(), list(ModelManifest.model_fields), n=1, cutoff=0.6)
    return found[0] if found else None


# A cold llama.cpp replica answers in seconds; vLLM imports, loads and warms up for minutes.
DEFAULT_LOAD_TIMEOUT_S: dict[EngineName, float] = {"llamacpp": 120.0, "vllm": 900.0}


def default_name(weights: str) -> str:
    """Derive a valid model name from a weights path: 'SmolLM2-135M.Q4_1.gguf' -> 'smollm2-135m.q4_1'."""
    path = PurePosixPath(weights.removeprefix(HUB_PREFIX).split(":")[0].rstrip("/"))
    stem = path.stem if path.suffix in ENGINE_BY_SUFFIX else path.name
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("._-")[:63].strip("._-")
    if not re.match(NAME_PATTERN, name):
        raise ValueError(f"cannot derive a model name from '{weights}'; set `name`")
    return name


HUB_PREFIX = "hf://"
HUB_PATTERN = re.compile(r"^hf://[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")


def hub_reference(weights: str) -> str | None:
    """'org/repo[:quant]' for a hub reference 'hf://org/repo[:quant]', None for a path."""
    return weights.removeprefix(HUB_PREFIX) if weights.startswith(HUB_PREFIX) else None


def infer_engine(weights: str) -> EngineName:
    """Pick the engine from the weights' format: GGUF is llama.cpp's (a hub repo with 'GGUF' in its
    name or a ':QUANT' tag too); anything else (a safetensors file, or a folder in Hugging Face
    layout such as 'Qwen2.5-0.5B') is vLLM's."""
    ref = hub_reference(weights)
    if ref is not None:
        return "llamacpp" if ":" in ref or "gguf" in ref.lower() else "vllm"
    return "llamacpp" if PurePosixPath(weights).suffix.lower() == ".gguf" else "vllm"


def check_engine_serves(engine: EngineName, weights: str) -> None:
    """Refuse weights the engine cannot load (llama.cpp only reads GGUF; vLLM here no GGUF)."""
    if weights.startswith(HUB_PREFIX):
        if not HUB_PATTERN.match(weights):
            raise ValueError(
                f"'{weights}' is not a hub reference: use hf://org/repo (or hf://org/repo:QUANT)"
            )
        if engine == "vllm" and ":" in weights.removeprefix(HUB_PREFIX):
            raise ValueError(
                f"':QUANT' selects a GGUF file, which is llama.cpp's; not for vllm ('{weights}')"
            )
        return
    suffix = PurePosixPath(weights).suffix.lower()
    if engine == "llamacpp" and suffix != ".gguf":
        raise ValueError(f"engine llamacpp serves GGUF weights only, not '{weights}'")
    if engine == "vllm" and suffix == ".gguf":
        raise ValueError(f"engine vllm is not set up for GGUF weights ('{weights}'); use llamacpp")


# What each engine loads from the files beside the weights: llama.cpp GGUF files throughout; vLLM a
# model folder as the draft and PEFT folders as adapters, and no projector (a vision model's folder
# holds its vision tower).
BESIDE_WHAT = {"mmproj": "projector", "draft": "draft", "adapters": "adapter"}
VLLM_FOLDERS = {
    "draft": "a model folder (config.json and safetensors)",
    "adapters": "a PEFT folder (adapter_config.json and adapter_model.safetensors)",
}


def check_beside_file(field: str, path: str, engine: EngineName | None) -> None:
    """Refuse a file beside the weights (``mmproj``, ``draft``, an adapter's path) that ``engine``
    cannot load from there (``engine`` None: it was invalid, already reported). Raises ValueError."""
    if path.startswith(HUB_PREFIX):
        raise ValueError(
            f"hub references are not supported for {field} yet ('{shown(path)}'): download the "
            "file and give its path under a model root"
        )
    suffix = PurePosixPath(path).suffix.lower()
    if engine == "llamacpp":
        if suffix != ".gguf":
            raise ValueError(f"llama.cpp loads a GGUF {BESIDE_WHAT[field]} file, not '{shown(path)}'")
        if field == "adapters" and ("," in path or ":" in path):  # --lora-scaled FILE:SCALE,...
            raise ValueError(f"'{shown(path)}': llama.cpp cannot take an adapter path with ',' or ':'")
    elif engine == "vllm":
        if field == "mmproj":
            raise ValueError(
                "mmproj is llama.cpp's (--mmproj); vLLM reads a vision model's projector from the "
                "model folder itself: leave mmproj out"
            )
        if suffix in ENGINE_BY_SUFFIX:
            kind = VLLM_FOLDERS[field]
            raise ValueError(f"vLLM's {BESIDE_WHAT[field]} is {kind}, not the file '{shown(path)}'")


def error_at(loc: tuple[int | str, ...], message: str, value: object) -> ValidationError:
    """A validation error at ``loc`` inside the field being validated (pydantic prefixes the
    field's name), so the loader locates it at that item's line: ``adapters.1.name``."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(
        "ModelManifest", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


def check_vllm_only(field: str, engine: EngineName | None) -> None:
    """Refuse a vLLM parser setting for llama.cpp, which parses tool calls and reasoning from the
    model's own chat template (--jinja) and has no parser to choose."""
    if engine == "llamacpp":
        raise ValueError(
            f"{field} is a vLLM setting; llama.cpp uses the model's chat template (--jinja) for tool "
            "calls and reasoning instead: leave it out (tools: false turns tool calls off)"
        )


def check_args(engine: EngineName, args: list[str]) -> None:
    """Refuse extra args that would set a flag modelctl owns, in any spelling ``engine`` accepts
    (``controller.manifests.flags``); the error names the entry and the flag."""
    for index, arg in enumerate(args):
        flag = reserved_flag(engine, arg)
        if flag is not None:
            field = FIELD_OF_FLAG.get(flag)
            source = f"the manifest field `{field}`; set that instead" if field else "the manifest"
            raise ValueError(
                f"args[{index}] '{shown(arg)}' may not set {flag} ({engine} reads '{shown(arg, 40)}'"
                f" as {flag}): modelctl sets it from {source}"
            )
