"""Which tool-call and reasoning parsers vLLM gets, chosen from the weights' own config.

vLLM answers 400 to a request with ``tools`` unless it was started with ``--enable-auto-tool-choice
--tool-call-parser NAME``, and a reasoning model needs ``--reasoning-parser NAME`` to return its
thinking as ``reasoning_content`` instead of inside the answer. The right names depend on the text
format the model was trained to emit, which its family decides: ``config.json``'s ``model_type``
(then ``architectures[0]``) names the family, and where a family's members emit different formats
(a Qwen2 is Qwen2.5, QwQ or an R1 distill; a Llama may speak Llama 3 or ChatML) the chat template
decides, because the template is what tells the model how to call a tool.

``FAMILIES`` is that table, one row per family with a line of why; the first row that fits wins.
A wrong parser is worse than none: vLLM 0.32 checks a parser's special tokens against the tokenizer
at start and refuses to start without them (``--tool-call-parser llama3_json cannot be used with the
tokenizer``: SmolLM2, a Llama, has no ``<|python_tag|>``). So a row whose parser needs tokens that
not every member of the family has requires the template to show them (``template_has``); where
no row fits, vLLM gets no parser and answers 400 to ``tools``, as before.
A manifest overrides it (``tool_parser``, ``reasoning_parser``, ``tools: false``); hub weights are
not here to read, so they get parsers only when the manifest names them. Every name is one vLLM
0.32 registers (``controller.manifests.parsernames``; a test checks the table against the image).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from controller.manifests.model import LoadedModel

log = logging.getLogger(__name__)

# Bounds on what is read from the weights' folder: far beyond real files (Qwen2.5's
# tokenizer_config.json is 7 KB, DeepSeek V3's 1 MB with its added tokens), small enough to read
# at every reconcile pass without thought.
MAX_CONFIG_BYTES = 4 << 20
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")  # beside tokenizer_config.json


@dataclass(frozen=True, slots=True)
class Family:
    """One row of the table. It fits weights whose ``model_type`` is in ``model_types`` or whose
    ``architectures[0]`` is in ``architectures`` (either, when both are empty: a row decided by the
    template alone), and whose chat template contains every string of ``template_has``."""

    name: str
    tool: str | None
    reasoning: str | None
    why: str
    model_types: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    template_has: tuple[str, ...] = ()

    def fits(self, model_type: str, architecture: str, template: str) -> bool:
        typed = bool(self.model_types or self.architectures)
        family = model_type in self.model_types or architecture in self.architectures
        return (family or not typed) and all(mark in template for mark in self.template_has)


@dataclass(frozen=True, slots=True)
class Parsers:
    """The parsers one vLLM replica starts with; ``family``: the row that chose them (None: no
    row fits, or the manifest chose them)."""

    tool: str | None = None
    reasoning: str | None = None
    family: str | None = None


# DeepSeek's own tool-call tokens, spelt with full-width bars and '▁' (written '|' and '_' below).
DEEPSEEK_CALLS = "<\uff5ctool\u2581calls\u2581begin\uff5c>"
DEEPSEEK_V31_CALL = "<\uff5ctool\u2581sep\uff5c>' + tool['function']['arguments']"  # name, sep, args

FAMILIES: tuple[Family, ...] = (
    # Rows decided by the template first: they cut across model types.
    Family(
        "deepseek-r1-distill",
        "deepseek_v3",
        "deepseek_r1",
        "R1 distills keep their base's Qwen2/Llama config but DeepSeek's template: tool calls "
        "between <|tool_calls_begin|> tokens with ```json arguments, thinking in <think>...</think>",
        model_types=("qwen2", "llama"),
        template_has=(DEEPSEEK_CALLS, "</think>"),
    ),
    Family(
        "deepseek-v3.1",
        "deepseek_v31",
        "deepseek_v3",
        "V3.1 calls name<|tool_sep|>arguments (no type, no ```json); it thinks only when the "
        "request's chat_template_kwargs ask (thinking), which the deepseek_v3 reasoning parser reads",
        model_types=("deepseek_v3",),
        template_has=(DEEPSEEK_CALLS, DEEPSEEK_V31_CALL),
    ),
    Family(
        "deepseek-r1",
        "deepseek_v3",
        "deepseek_r1",
        "R1 is a DeepSeek V3 whose template strips <think>...</think> from past turns: it reasons first",
        model_types=("deepseek_v3",),
        template_has=(DEEPSEEK_CALLS, "</think>"),
    ),
    Family(
        "deepseek-v3",
        "deepseek_v3",
        None,
        "type<|tool_sep|>name then ```json arguments between DeepSeek's tool-call tokens; no thinking",
        model_types=("deepseek_v3",),
    ),
    Family(
        "kimi-k2",
        "kimi_k2",
        None,
        "Kimi K2 has DeepSeek V3's architecture but its own model_type and <|tool_call_begin|> "
        "functions.name:index <|tool_call_argument_begin|> format",
        model_types=("kimi_k2",),
    ),
    Family(
        "qwq",
        "hermes",
        "deepseek_r1",
        "QwQ is a Qwen2 whose template opens the answer with <think>; it calls tools in Hermes's "
        "<tool_call>{json}</tool_call> and its thinking ends at </think> like R1's",
        model_types=("qwen2",),
        template_has=("<tool_call>", "<think>"),
    ),
    Family(
        "qwen2.5",
        "hermes",
        None,
        'Qwen2 / Qwen2.5 templates ask for <tool_call>{"name", "arguments"}</tool_call>: Hermes\'s format',
        model_types=("qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl"),
    ),
    Family(
        "qwen3-coder",
        "qwen3_coder",
        None,
        "Qwen3-Coder's template asks for XML calls (<tool_call><function=name><parameter=...>), "
        "not JSON, and it does not think",
        model_types=("qwen3", "qwen3_moe"),
        template_has=("<function=",),
    ),
    Family(
        "qwen3",
        "hermes",
        "qwen3",
        "Qwen3 calls tools in Hermes's <tool_call> JSON and thinks in <think>...</think> (the "
        "template may open <think> itself, which the qwen3 parser expects)",
        model_types=("qwen3", "qwen3_moe", "qwen3_next"),
    ),
    Family(
        "llama3",
        "llama3_json",
        None,
        "Llama 3.1/3.2/3.3 templates (<|start_header_id|>, 'Environment: ipython' with tools) ask "
        'for a bare JSON object {"name", "parameters"}; the parser needs 3.1\'s <|python_tag|> token',
        model_types=("llama",),
        template_has=("<|start_header_id|>", "Environment: ipython"),
    ),
    Family(
        "llama-chatml",
        "hermes",
        None,
        "Llama-architecture models with a ChatML template (<|im_start|>: Hermes 3, SmolLM2) belong "
        "to the ChatML family, whose tool format is Hermes's <tool_call>; a template without tools "
        "still gets a parser, so a request with tools is answered (with text) instead of refused",
        model_types=("llama",),
        template_has=("<|im_start|>",),
    ),
    Family(
        "llama4",
        "llama4_pythonic",
        None,
        "Llama 4 calls tools as a Python list [f(x=1)], between <|python_start|> tokens when it "
        "adds them; unlike llama4_json (Llama 3's parser) it needs no <|python_tag|> token",
        model_types=("llama4",),
    ),
    Family(
        "magistral",
        "mistral",
        "mistral",
        "Magistral is a Mistral that thinks between [THINK] and [/THINK]",
        model_types=("mistral", "mistral3"),
        template_has=("[TOOL_CALLS]", "[THINK]"),
    ),
    Family(
        "mistral",
        "mistral",
        None,
        "Mistral templates (v0.3 on) list tools in [AVAILABLE_TOOLS] and the model answers "
        "[TOOL_CALLS] [json...]; v0.1/v0.2 have no such token, and their template no tools",
        model_types=("mistral", "mistral3", "mixtral", "ministral"),
        architectures=("MistralForCausalLM", "MixtralForCausalLM", "Mistral3ForConditionalGeneration"),
        template_has=("[TOOL_CALLS]",),
    ),
    Family(
        "gpt-oss",
        "openai",
        "openai_gptoss",
        "gpt-oss speaks OpenAI's harmony format: calls on the commentary channel, thinking on the "
        "analysis channel",
        model_types=("gpt_oss",),
    ),
    Family(
        "glm-4.5",
        "glm45",
        "glm45",
        "GLM-4.5/4.6 call <tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value> and think in <think>",
        model_types=("glm4_moe",),
    ),
    Family(
        "granite-4",
        "granite4",
        None,
        "Granite 4 (hybrid Mamba) templates ask for <tool_call> JSON, parsed by its own parser",
        model_types=("granitemoehybrid",),
        template_has=("<tool_call>",),
    ),
    Family(
        "granite",
        "granite",
        "granite",
        "Granite 3.x answers <|tool_call|>[json...] and, when asked to think, writes 'Here is my "
        "thought process:' before 'Here is my response:'",
        model_types=("granite", "granitemoe"),
        template_has=("<|tool_call|>",),
    ),
    Family(
        "internlm",
        "internlm",
        None,
        "InternLM2/2.5/3 call tools as <|action_start|><|plugin|>{json}<|action_end|>",
        model_types=("internlm2", "internlm3"),
        architectures=("InternLM2ForCausalLM", "InternLM3ForCausalLM"),
    ),
    Family(
        "phi-4-mini",
        "phi4_mini_json",
        None,
        "Phi-4-mini (a phi3 model type) lists tools between <|tool|> and <|/tool|> and answers "
        "functools[json...]; Phi-3/3.5 templates have no tools",
        model_types=("phi3",),
        template_has=("<|tool|>",),
    ),
    # Rows decided by the template alone, for families the table does not name.
    Family(
        "hermes",
        "hermes",
        None,
        "a template that asks for <tool_call>{json}</tool_call> (Hermes 2 Pro and its fine-tunes)",
        template_has=("<tool_call>",),
    ),
)


def choose(config: dict[str, Any], template: str) -> Parsers:
    """The parsers of the first row that fits ``config`` (config.json's fields) and ``template``
    (every chat template the tokenizer files hold, joined); none when no row fits."""
    model_type = str(config.get("model_type") or "")
    architectures = config.get("architectures")
    architecture = str(architectures[0]) if isinstance(architectures, list) and architectures else ""
    for family in FAMILIES:
        if family.fits(model_type, architecture, template):
            return Parsers(tool=family.tool, reasoning=family.reasoning, family=family.name)
    return Parsers()


def for_model(model: LoadedModel) -> Parsers:
    """The parsers a vLLM replica of ``model`` starts with: the table's choice from its weights'
    folder, overridden by the manifest (``tool_parser``, ``reasoning_parser``; ``tools: false``
    drops the tool parser). Hub weights are not here to read: only what the manifest names."""
    manifest = model.manifest
    chosen = from_folder(Path(model.weights)) if model.weights is not None else Parsers()
    tool = manifest.tool_parser or chosen.tool
    reasoning = manifest.reasoning_parser or chosen.reasoning
    return Parsers(tool=tool if manifest.tools else None, reasoning=reasoning, family=chosen.family)


def from_folder(weights: Path) -> Parsers:
    """The table's choice for the weights at ``weights`` (a folder, or a file in one). Files that
    are missing, too large or not JSON count as empty: vLLM reports bad weights itself."""
    folder = weights if weights.is_dir() else weights.parent
    return _from_files(*(_stamp(folder / name) for name in CONFIG_FILES))


CONFIG_FILES = ("config.json", "tokenizer_config.json", *TEMPLATE_FILES)


def _stamp(path: Path) -> tuple[str, int, int]:
    """``path`` with its modification time and size, so that the cache sees a changed file."""
    try:
        stat = path.stat()
    except OSError:
        return (str(path), 0, -1)
    return (str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _from_files(*stamps: tuple[str, int, int]) -> Parsers:
    config, tokenizer, jinja, processor = (_read(path, size) for path, _, size in stamps)
    parts = [_templates(_json(tokenizer, stamps[1][0])), jinja, _templates(_json(processor, stamps[3][0]))]
    return choose(_json(config, stamps[0][0]), "\n".join(part for part in parts if part))


def _read(path: str, size: int) -> str:
    if size < 0:
        return ""
    if size > MAX_CONFIG_BYTES:
        log.warning(
            "%s: %d bytes, more than %d: not read for the parser choice", path, size, MAX_CONFIG_BYTES
        )
        return ""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.warning("%s: cannot read it for the parser choice: %s", path, exc)
        return ""


def _json(text: str, path: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        log.warning("%s: not JSON, ignored for the parser choice: %s", path, exc)
        return {}
    return value if isinstance(value, dict) else {}


def _templates(tokenizer: dict[str, Any]) -> str:
    """Every chat template a tokenizer_config.json (or chat_template.json) holds: one string, or a
    list of named ones ({"name": "tool_use", "template": ...})."""
    value = tokenizer.get("chat_template")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(
            item["template"]
            for item in value
            if isinstance(item, dict) and isinstance(item.get("template"), str)
        )
    return ""
