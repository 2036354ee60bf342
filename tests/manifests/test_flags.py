"""Reserved engine flags, in every spelling the engine's own parser accepts, are refused in `args`;
flags modelctl does not own pass, however they are spelled."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.manifests.document import ModelManifest
from controller.manifests.flags import reserved_flag

WEIGHTS = {"llamacpp": "m.gguf", "vllm": "m.safetensors"}

REFUSED = [
    # vLLM: argparse with allow_abbrev, and FlexibleArgumentParser's '_' -> '-' before the first '.'
    ("vllm", "--gpu-memory-utilization", "--gpu-memory-utilization"),
    ("vllm", "--gpu_memory_utilization", "--gpu-memory-utilization"),
    ("vllm", "--gpu_memory_utilization=0.9", "--gpu-memory-utilization"),
    ("vllm", "--gpu-mem", "--gpu-memory-utilization"),
    ("vllm", "--gpu_mem=0.5", "--gpu-memory-utilization"),
    ("vllm", "--gpu-memory-utilization.x=1", "--gpu-memory-utilization"),
    ("vllm", "--port", "--port"),
    ("vllm", "--port=9000", "--port"),
    ("vllm", "--po", "--port"),
    ("vllm", "--host=::", "--host"),
    ("vllm", "--model=/etc", "--model"),
    ("vllm", "--served_model_name", "--served-model-name"),
    ("vllm", "--served-model", "--served-model-name"),
    ("vllm", "--tensor-parallel-size=8", "--tensor-parallel-size"),
    ("vllm", "--tensor_parallel", "--tensor-parallel-size"),
    ("vllm", "-tp", "--tensor-parallel-size"),
    ("vllm", "-tp8", "--tensor-parallel-size"),
    ("vllm", "-tp=8", "--tensor-parallel-size"),
    ("vllm", "-t", "--tensor-parallel-size"),
    ("vllm", "-pp", "--pipeline-parallel-size"),
    ("vllm", "--pipeline_parallel_size=2", "--pipeline-parallel-size"),
    ("vllm", "-dp=2", "--data-parallel-size"),
    ("vllm", "--max-num-seqs", "--max-num-seqs"),
    ("vllm", "--max_num_seqs=512", "--max-num-seqs"),
    ("vllm", "--max-model", "--max-model-len"),
    ("vllm", "--max_model_len=1", "--max-model-len"),
    ("vllm", "--api-key=x", "--api-key"),
    ("vllm", "--api_key", "--api-key"),
    ("vllm", "--uds=/tmp/s", "--uds"),
    ("vllm", "--config=/models/x.yaml", "--config"),
    ("vllm", "--headless", "--headless"),
    ("vllm", "--ssl-keyfile=k", "--ssl-keyfile"),
    # vLLM, from the files beside the weights (draft, adapters)
    ("vllm", "--enable-lora", "--enable-lora"),
    ("vllm", "--enable_lora", "--enable-lora"),
    ("vllm", "--lora-modules", "--lora-modules"),
    ("vllm", "--lora_modules=a=/x", "--lora-modules"),
    ("vllm", "--lora-mod", "--lora-modules"),
    ("vllm", "--max-lora-rank=64", "--max-lora-rank"),
    ("vllm", "--max_lora_rank", "--max-lora-rank"),
    ("vllm", "--max-loras=4", "--max-loras"),
    ("vllm", "--max_loras", "--max-loras"),
    ("vllm", "--speculative-config", "--speculative-config"),
    ("vllm", "--speculative_config={}", "--speculative-config"),
    ("vllm", "--speculative", "--speculative-config"),
    # llama.cpp: exact names, '_' -> '-' in '--' arguments, short forms exact; '=' refused too
    ("llamacpp", "-m", "--model"),
    ("llamacpp", "--model", "--model"),
    ("llamacpp", "--port", "--port"),
    ("llamacpp", "--port=9000", "--port"),
    ("llamacpp", "--host", "--host"),
    ("llamacpp", "-c", "--ctx-size"),
    ("llamacpp", "--ctx_size", "--ctx-size"),
    ("llamacpp", "-np", "--parallel"),
    ("llamacpp", "--parallel", "--parallel"),
    ("llamacpp", "-ngl", "--n-gpu-layers"),
    ("llamacpp", "--gpu_layers", "--n-gpu-layers"),
    ("llamacpp", "--n_gpu_layers", "--n-gpu-layers"),
    ("llamacpp", "-a", "--alias"),
    ("llamacpp", "--threads_http", "--threads-http"),
    ("llamacpp", "--webui", "--no-webui"),
    ("llamacpp", "--no_webui", "--no-webui"),
    ("llamacpp", "--api-key", "--api-key"),
    ("llamacpp", "--api_key_file", "--api-key-file"),
    ("llamacpp", "-hf", "--hf-repo"),
    ("llamacpp", "-hfr", "--hf-repo"),
    ("llamacpp", "--hf_repo", "--hf-repo"),
    ("llamacpp", "-mu", "--model-url"),
    ("llamacpp", "--no-slots", "--no-slots"),
    ("llamacpp", "--api-prefix", "--api-prefix"),
    ("llamacpp", "--models-dir", "--models-dir"),
    # llama.cpp, from the files beside the weights (mmproj, draft, adapters)
    ("llamacpp", "-mm", "--mmproj"),
    ("llamacpp", "--mmproj", "--mmproj"),
    ("llamacpp", "-mmu", "--mmproj-url"),
    ("llamacpp", "--mmproj_url", "--mmproj-url"),
    ("llamacpp", "-md", "--spec-draft-model"),
    ("llamacpp", "--model-draft", "--spec-draft-model"),
    ("llamacpp", "--model_draft", "--spec-draft-model"),
    ("llamacpp", "--spec-draft-model", "--spec-draft-model"),
    ("llamacpp", "-hfd", "--spec-draft-hf"),
    ("llamacpp", "--hf-repo-draft", "--spec-draft-hf"),
    ("llamacpp", "-ngld", "--n-gpu-layers-draft"),
    ("llamacpp", "--gpu-layers-draft", "--n-gpu-layers-draft"),
    ("llamacpp", "--spec-type", "--spec-type"),
    ("llamacpp", "--spec_type", "--spec-type"),
    ("llamacpp", "--lora", "--lora"),
    ("llamacpp", "--lora-scaled", "--lora-scaled"),
    ("llamacpp", "--lora_scaled", "--lora-scaled"),
]

ALLOWED = [
    ("vllm", "--enforce-eager"),
    ("vllm", "--dtype=half"),
    ("vllm", "--model-impl=transformers"),  # starts with --model but is a flag of its own
    ("vllm", "--max-logprobs=5"),
    ("vllm", "--data-parallel-size-local"),  # longer than a reserved flag: its own option
    ("vllm", "-O3"),
    ("vllm", "-q"),
    ("vllm", "fp8"),
    ("vllm", "-1"),
    ("llamacpp", "--threads"),  # a CPU replica that sets it is left unpinned (README)
    ("llamacpp", "-t"),
    ("llamacpp", "--port-x"),
    ("llamacpp", "--jinja"),
    ("llamacpp", "--ctx-size-draft"),
    ("llamacpp", "-cd"),
    ("llamacpp", "--mmproj-offload"),  # where the projector runs, not which one
    ("llamacpp", "--lora-init-without-apply"),
    ("llamacpp", "--spec-draft-n-max"),  # how many tokens to draft, not which draft
    ("vllm", "--lora-dtype=bfloat16"),  # longer than no reserved flag's prefix: its own option
    ("vllm", "--max-cpu-loras"),
    ("llamacpp", "--po"),  # llama.cpp has no prefixes (it would refuse to start, not mis-set a flag)
    ("llamacpp", "-"),
    ("llamacpp", "--pooling"),  # how embeddings are pooled: the manifest's to choose
    ("llamacpp", "--embd-normalize"),
    ("vllm", "--pooler-config"),
]


@pytest.mark.parametrize(("engine", "arg", "flag"), REFUSED)
def test_a_reserved_flag_in_any_spelling_is_refused_naming_flag_and_field(
    engine: str, arg: str, flag: str
) -> None:
    assert reserved_flag(engine, arg) == flag  # type: ignore[arg-type]
    doc = {"model": WEIGHTS[engine], "engine": engine, "args": ["--x-ok", "1", arg]}
    with pytest.raises(ValidationError) as caught:
        ModelManifest.model_validate(doc)
    (error,) = caught.value.errors()
    assert error["loc"] == ("args",)
    assert f"args[2] '{arg}' may not set {flag}" in error["msg"]


@pytest.mark.parametrize(
    ("engine", "arg", "field"),
    [
        ("llamacpp", "-mm", "mmproj"),
        ("llamacpp", "--model-draft", "draft"),
        ("llamacpp", "--spec-type", "draft"),
        ("llamacpp", "-ngld", "draft"),
        ("llamacpp", "--lora", "adapters"),
        ("vllm", "--speculative-config", "draft"),
        ("vllm", "--lora-modules", "adapters"),
        ("vllm", "--max-loras", "adapters"),
        ("llamacpp", "--embedding", "task"),
        ("llamacpp", "--rerank", "task"),
        ("vllm", "--runner=pooling", "task"),
        ("vllm", "--convert", "task"),
    ],
)
def test_a_flag_set_from_a_file_field_names_that_field(engine: str, arg: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelManifest.model_validate({"model": WEIGHTS[engine], "engine": engine, "args": [arg]})
    (error,) = caught.value.errors()
    assert f"modelctl sets it from the manifest field `{field}`; set that instead" in error["msg"]


@pytest.mark.parametrize(("engine", "arg"), ALLOWED)
def test_flags_modelctl_does_not_own_pass(engine: str, arg: str) -> None:
    assert reserved_flag(engine, arg) is None  # type: ignore[arg-type]
    ModelManifest.model_validate({"model": WEIGHTS[engine], "engine": engine, "args": [arg]})


def test_every_field_named_for_a_flag_is_for_a_flag_the_check_reports() -> None:
    from controller.manifests.flags import FIELD_OF_FLAG, LLAMACPP_RESERVED, VLLM_RESERVED

    reported = {max(spellings, key=len) for spellings in (*LLAMACPP_RESERVED, *VLLM_RESERVED)}
    assert set(FIELD_OF_FLAG) <= reported
    assert set(FIELD_OF_FLAG.values()) == {
        "mmproj",
        "draft",
        "adapters",
        "tools",
        "tool_parser",
        "reasoning_parser",
        "task",
    }
