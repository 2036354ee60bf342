"""Rules that relate a manifest's fields to each other and to the engines: which engine serves which
weights (and the name a model gets from them), what a file beside the weights must be for its
engine, and which ``args`` set flags modelctl sets itself. Each raises ValueError in the words a
manifest author needs; ``controller.manifests.document`` calls them from its validators.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from controller.manifests.engines import EngineName
from controller.manifests.flags import FIELD_OF_FLAG, reserved_flag
from controller.manifests.quoting import shown
from controller.manifests.values import NAME_PATTERN

# Engine suffixes, as Docker Model Runner chooses: GGUF is llama.cpp's, safetensors is vLLM's.
ENGINE_BY_SUFFIX: dict[str, EngineName] = {".gguf": "llamacpp", ".safetensors": "vllm"}


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
        check_beside_hub(field, path, engine)
        return
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


def check_beside_hub(field: str, ref: str, engine: EngineName | None) -> None:
    """A hub reference beside the weights (pulled with them, ``controller.hub``): ``hf://org/repo``,
    with ``:TAG`` for llama.cpp (which GGUF of the repo); vLLM takes no projector and no tag."""
    if not HUB_PATTERN.match(ref):
        raise ValueError(f"'{shown(ref)}' is not a hub reference: use hf://org/repo (or hf://org/repo:TAG)")
    if engine == "vllm":
        if field == "mmproj":
            raise ValueError(
                "mmproj is llama.cpp's (--mmproj); vLLM reads a vision model's projector from the "
                "model folder itself: leave mmproj out"
            )
        if ":" in ref.removeprefix(HUB_PREFIX):
            raise ValueError(
                f"':TAG' selects a GGUF file, which is llama.cpp's; not for vllm ('{shown(ref)}')"
            )


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
