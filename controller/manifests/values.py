"""The values a manifest is made of, each typed and bounded where it is declared: names (the pattern
clients route by), environment names and values (never one modelctl owns, never a reference to the
controller's own variables), args, paths, parser names and adapters, and how many of each a document
may hold. ``controller.manifests.document`` builds the manifest from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from controller.manifests.envrefs import NEVER_PREFIX, references
from controller.manifests.parsernames import MAX_PARSER_CHARS
from controller.manifests.quoting import shown

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


def check_plain(value: str) -> str:
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
FilePath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(check_plain)]


class Adapter(BaseModel):
    """A LoRA adapter of the base model, served under its own name: a GGUF adapter file for
    llama.cpp (``convert_lora_to_gguf.py``), a PEFT folder (adapter_config.json +
    adapter_model.safetensors) for vLLM."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: ModelName = Field(description="Name clients put in `model` to get this adapter.")
    path: FilePath = Field(description="The adapter, relative to a model root or absolute under one.")
