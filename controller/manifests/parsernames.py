"""The tool-call and reasoning parser names vLLM knows, so that a manifest's ``tool_parser`` /
``reasoning_parser`` is checked when it is loaded rather than when vLLM refuses to start.

The names are those vLLM 0.32.0 registers (``ToolParserManager.list_registered()`` and
``ReasoningParserManager.list_registered()`` in the stand-in image); tests/engines/vllm_parsers.txt
holds the list read from the image and a test keeps the two equal. The table that picks a parser
from the weights' own config is ``controller.engines.parsers``; it lives above the manifests, so
the names it and the manifest share live here.
"""

from __future__ import annotations

import difflib

from controller.manifests.quoting import shown

VLLM_TOOL_PARSERS = frozenset(
    {
        "apertus", "cohere_command3", "cohere_command4", "deepseek_v3", "deepseek_v31", "deepseek_v32",
        "deepseek_v4", "deepseek_v41", "dots", "ernie45", "functiongemma", "gemma4", "gigachat3",
        "glm45", "glm47", "granite", "granite-20b-fc", "granite4", "hermes", "hf", "hunyuan_a13b",
        "hy_v3", "hy_v4", "inkling", "internlm", "jamba", "k2_horizon", "kimi_k2", "kimi_k3", "lfm2",
        "ling3", "llama3_json", "llama4_json", "llama4_pythonic", "longcat", "mimo", "minicpm5",
        "minimax_m2", "minimax_m3", "mistral", "muse_glimmer", "olmo3", "openai", "phi4_mini_json",
        "plamo3", "poolside_v1", "pythonic", "qwen3_coder", "qwen3_json", "qwen3_xml", "seed_oss",
        "step3", "step3p5", "xlam",
    }
)  # fmt: skip

VLLM_REASONING_PARSERS = frozenset(
    {
        "cohere_command3", "cohere_command4", "deepseek_r1", "deepseek_v3", "deepseek_v4",
        "deepseek_v41", "ernie45", "gemma4", "glm45", "glm47", "granite", "granite_thinking_parser",
        "hf", "holo2", "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "k2_horizon", "kimi_k2", "kimi_k3",
        "ling3", "mimo", "minicpmv", "minimax_m2", "minimax_m2_append_think", "minimax_m3", "mistral",
        "muse_glimmer", "nemotron_v3", "olmo3", "openai_gptoss", "plamo3", "poolside_v1", "qwen3",
        "seed_oss", "step3", "step3p5",
    }
)  # fmt: skip

MAX_PARSER_CHARS = 64  # the longest name vLLM registers is 23


def check_parser(value: str, known: frozenset[str], kind: str) -> str:
    """``value`` when it is one of the ``known`` names; else ValueError naming the closest ones."""
    if value in known:
        return value
    close = difflib.get_close_matches(value, sorted(known), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
    raise ValueError(f"'{shown(value)}' is not a {kind} parser vLLM 0.32 knows{hint}")
