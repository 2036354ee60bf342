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
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from controller.manifests.engines import EngineName
from controller.manifests.parsernames import (
    VLLM_REASONING_PARSERS,
    VLLM_TOOL_PARSERS,
    check_parser,
)
from controller.manifests.rules import (
    check_args,
    check_beside_file,
    check_engine_serves,
    check_vllm_only,
    default_name,
    error_at,
    hub_reference,
    infer_engine,
)
from controller.manifests.sizes import parse_duration, parse_size
from controller.manifests.values import (
    MAX_ADAPTERS,
    MAX_ALIASES,
    MAX_ARGS,
    MAX_CONTEXT_LENGTH,
    MAX_ENV,
    MAX_IMAGE_CHARS,
    MAX_PATH_CHARS,
    Adapter,
    Arg,
    Balancing,
    EnvName,
    EnvValue,
    FilePath,
    ModelName,
    ParserName,
    Task,
    check_plain,
)


class ModelManifest(BaseModel):
    """One model: its weights, the engine that serves them, and how many replicas of what size."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)

    model: Annotated[str, AfterValidator(check_plain)] = Field(
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
        Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS), AfterValidator(check_plain)] | None
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
