"""The parser table: every name is one vLLM registers, real config files pick the right flags,
and the manifest overrides the table (``tool_parser``, ``reasoning_parser``, ``tools: false``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.engines import build_spec, parsers
from controller.manifests.document import ModelManifest
from controller.manifests.model import LoadedModel
from controller.manifests.parsernames import VLLM_REASONING_PARSERS, VLLM_TOOL_PARSERS

HERE = Path(__file__).parent
CONFIGS = HERE / "configs"


def registered() -> dict[str, set[str]]:
    """The names vLLM 0.32 registers, as read from the stand-in image (vllm_parsers.txt)."""
    names: dict[str, set[str]] = {}
    section = ""
    for line in (HERE / "vllm_parsers.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("["):
            section = line.strip("[]")
            names[section] = set()
        else:
            names[section].add(line.strip())
    return names


def test_the_known_names_are_the_ones_vllm_registers() -> None:
    names = registered()
    assert len(names["tool"]) > 40 and "hermes" in names["tool"]
    assert set(VLLM_TOOL_PARSERS) == names["tool"]
    assert set(VLLM_REASONING_PARSERS) == names["reasoning"]


@pytest.mark.parametrize("family", parsers.FAMILIES, ids=lambda family: family.name)
def test_every_row_names_registered_parsers_and_says_why(family: parsers.Family) -> None:
    names = registered()
    assert family.tool is None or family.tool in names["tool"]
    assert family.reasoning is None or family.reasoning in names["reasoning"]
    assert family.tool or family.reasoning
    assert len(family.why) > 30
    assert family.model_types or family.architectures or family.template_has


def test_row_names_are_unique() -> None:
    names = [family.name for family in parsers.FAMILIES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("folder", "family", "tool", "reasoning"),
    [
        ("qwen2.5-0.5b-instruct", "qwen2.5", "hermes", None),
        ("llama-3.2-1b-instruct", "llama3", "llama3_json", None),
        ("mistral-7b-instruct-v0.3", "mistral", "mistral", None),
        ("smollm2-135m-instruct", "llama-chatml", "hermes", None),
        ("deepseek-r1-distill-qwen-32b", "deepseek-r1-distill", "deepseek_v3", "deepseek_r1"),
        # Real templates as llama.cpp keeps them (models/templates/ of the source the image is built
        # from), config.json's two fields as the models publish them (configs/README.md).
        ("qwen2.5-7b-instruct", "qwen2.5", "hermes", None),
        ("qwen3-0.6b", "qwen3", "hermes", "qwen3"),
        ("qwq-32b", "qwq", "hermes", "deepseek_r1"),
        ("qwen3-coder", "qwen3-coder", "qwen3_coder", None),
        ("llama-3.1-8b-instruct", "llama3", "llama3_json", None),
        ("llama-3.3-70b-instruct", "llama3", "llama3_json", None),
        ("hermes-3-llama-3.1-8b", "llama-chatml", "hermes", None),
        ("deepseek-r1-distill-llama-8b", "deepseek-r1-distill", "deepseek_v3", "deepseek_r1"),
        ("mistral-nemo-instruct-2407", "mistral", "mistral", None),
        ("gpt-oss-120b", "gpt-oss", "openai", "openai_gptoss"),
        ("granite-3.3-2b-instruct", "granite", "granite", "granite"),
        ("kimi-k2-instruct", "kimi-k2", "kimi_k2", None),
        ("glm-4.6", "glm-4.5", "glm45", "glm45"),
        ("phi-3.5-mini-instruct", None, None, None),  # its template renders no tools: no parser
    ],
)
def test_real_config_files_pick_the_family_flags(
    folder: str, family: str | None, tool: str | None, reasoning: str | None
) -> None:
    chosen = parsers.from_folder(CONFIGS / folder)
    assert chosen == parsers.Parsers(tool=tool, reasoning=reasoning, family=family)
    # The weights file's path leads to the same folder (a manifest may name model.safetensors).
    assert parsers.from_folder(CONFIGS / folder / "model.safetensors") == chosen


def test_the_template_decides_within_a_model_type() -> None:
    """Qwen2 is Qwen2.5, QwQ or an R1 distill; Llama is Llama 3 or ChatML: the template says which."""
    qwen = json.loads((CONFIGS / "qwen2.5-0.5b-instruct" / "tokenizer_config.json").read_text())
    template = qwen["chat_template"]
    qwq = template + "{{- '<|im_start|>assistant\\n<think>\\n' }}"
    assert parsers.choose({"model_type": "qwen2"}, template).family == "qwen2.5"
    assert parsers.choose({"model_type": "qwen2"}, qwq) == parsers.Parsers("hermes", "deepseek_r1", "qwq")
    assert parsers.choose({"model_type": "qwen3"}, template) == parsers.Parsers("hermes", "qwen3", "qwen3")
    assert parsers.choose({"model_type": "qwen3_moe"}, "<tool_call><function=x>").tool == "qwen3_coder"


@pytest.mark.parametrize(
    ("template", "model_type"),
    [
        # Llama 3.0: <|start_header_id|> but no tools, and no <|python_tag|> token for llama3_json.
        ("<|start_header_id|>user<|end_header_id|>", "llama"),
        ("", "llama"),  # a Llama with an unknown template: llama3_json might not start
        ("[INST] {{ message }} [/INST]", "mistral"),  # Mistral v0.1/v0.2: no [TOOL_CALLS] token
        ("<|start_of_role|>", "granite"),
    ],
)
def test_a_parser_that_needs_tokens_waits_for_the_template_to_show_them(
    template: str, model_type: str
) -> None:
    """vLLM refuses to start with a parser whose special tokens the tokenizer lacks (measured:
    llama3_json on SmolLM2), so no parser beats a guessed one."""
    assert parsers.choose({"model_type": model_type}, template) == parsers.Parsers()


@pytest.mark.parametrize(
    ("config", "template", "expected"),
    [
        # The model_type decides before the architecture: Kimi K2 is a DeepseekV3ForCausalLM.
        ({"model_type": "kimi_k2", "architectures": ["DeepseekV3ForCausalLM"]}, "", ("kimi_k2", None)),
        ({"model_type": "deepseek_v3"}, "", ("deepseek_v3", None)),
        ({"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"]}, "", ("openai", "openai_gptoss")),
        ({"model_type": "glm4_moe"}, "", ("glm45", "glm45")),
        ({"model_type": "granite"}, "<|tool_call|>", ("granite", "granite")),
        ({"model_type": "internlm2"}, "", ("internlm", None)),
        ({"model_type": "phi3"}, "<|tool|>{{ tools }}<|/tool|>", ("phi4_mini_json", None)),
        ({"model_type": "llama4"}, "", ("llama4_pythonic", None)),
        # A Hermes fine-tune of any family the table does not name: its template says Hermes.
        ({"model_type": "stablelm"}, "<tool_call>", ("hermes", None)),
    ],
)
def test_families_by_config(
    config: dict[str, object], template: str, expected: tuple[str, str | None]
) -> None:
    chosen = parsers.choose(config, template)
    assert (chosen.tool, chosen.reasoning) == expected


def test_deepseek_versions_by_their_templates() -> None:
    """V3 and R1 write 'type<sep>name' then ```json; V3.1 'name<sep>arguments' (its template, as
    llama.cpp keeps it in models/templates/deepseek-ai-DeepSeek-V3.1.jinja)."""
    calls = "<\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin\uff5c>"
    sep = "'<\uff5ctool\u2581sep\uff5c>'"
    v3 = "{{'" + calls + "' + tool['type'] + " + sep + " + tool['function']['name'] + '\\n```json'}}"
    v31 = "{{'" + calls + "'+ tool['function']['name'] + " + sep + " + tool['function']['arguments']}}"
    config = {"model_type": "deepseek_v3"}
    assert parsers.choose(config, v3).family == "deepseek-v3"
    assert parsers.choose(config, v3 + "{% if '</think>' in content %}").family == "deepseek-r1"
    assert parsers.choose(config, v31 + "</think>") == parsers.Parsers(
        "deepseek_v31", "deepseek_v3", "deepseek-v3.1"
    )


def test_no_row_fits_no_parsers() -> None:
    """Phi-3.5 has no tools in its template, and an unknown family gets nothing rather than a guess."""
    assert parsers.choose({"model_type": "phi3"}, "<|user|>") == parsers.Parsers()
    assert parsers.choose({}, "") == parsers.Parsers()
    assert parsers.choose({"model_type": 3, "architectures": "x"}, "") == parsers.Parsers()


def test_unreadable_files_count_as_empty(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text('["a list"]')
    assert parsers.from_folder(tmp_path) == parsers.Parsers()
    assert parsers.from_folder(tmp_path / "missing") == parsers.Parsers()


def test_a_changed_config_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    assert parsers.from_folder(tmp_path).tool == "hermes"
    (tmp_path / "config.json").write_text('{"model_type": "deepseek_v3", "x": 1}')
    assert parsers.from_folder(tmp_path).tool == "deepseek_v3"


def test_named_templates_in_a_list_are_read(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "mistral"}')
    templates = [
        {"name": "default", "template": "[TOOL_CALLS]"},
        {"name": "tool_use", "template": "[THINK]"},
        3,
    ]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": templates}))
    assert parsers.from_folder(tmp_path) == parsers.Parsers("mistral", "mistral", "magistral")


def loaded(weights: Path | None, **doc: object) -> LoadedModel:
    return LoadedModel(ModelManifest.model_validate(doc), "m.yaml", 1, weights)


def test_vllm_gets_the_flags_of_its_weights() -> None:
    spec = build_spec(loaded(CONFIGS / "qwen2.5-0.5b-instruct", model="qwen"), 0)
    command = list(spec.command)
    at = command.index("--enable-auto-tool-choice")
    assert command[at + 1 : at + 3] == ["--tool-call-parser", "hermes"]
    assert "--reasoning-parser" not in command
    r1 = build_spec(loaded(CONFIGS / "deepseek-r1-distill-qwen-32b", model="r1"), 0).command
    assert r1[r1.index("--reasoning-parser") + 1] == "deepseek_r1"


def test_the_manifest_overrides_the_table() -> None:
    weights = CONFIGS / "qwen2.5-0.5b-instruct"
    chosen = parsers.for_model(loaded(weights, model="q", tool_parser="qwen3_xml", reasoning_parser="qwen3"))
    assert (chosen.tool, chosen.reasoning) == ("qwen3_xml", "qwen3")
    off = build_spec(loaded(weights, model="q", tools=False), 0).command
    assert "--enable-auto-tool-choice" not in off and "--tool-call-parser" not in off


def test_hub_weights_get_parsers_only_from_the_manifest() -> None:
    hub = build_spec(loaded(None, model="hf://Qwen/Qwen2.5-0.5B-Instruct"), 0).command
    assert "--tool-call-parser" not in hub
    named = loaded(None, model="hf://Qwen/Qwen2.5-0.5B-Instruct", tool_parser="hermes")
    command = build_spec(named, 0).command
    assert command[command.index("--tool-call-parser") + 1] == "hermes"


def test_llamacpp_gets_jinja_and_deepseek_reasoning() -> None:
    gguf = Path("/srv/models/smol.gguf")
    command = build_spec(loaded(gguf, model="smol.gguf"), 0).command
    assert "--jinja" in command and command[command.index("--reasoning-format") + 1] == "deepseek"
    off = build_spec(loaded(gguf, model="smol.gguf", tools=False), 0).command
    assert "--jinja" not in off and "--reasoning-format" in off
    chosen = build_spec(loaded(gguf, model="smol.gguf", args=["--no_jinja", "--reasoning-format", "none"]), 0)
    assert chosen.command.count("--jinja") == 0 and chosen.command.count("--reasoning-format") == 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"tool_parser": "hermes2"},
            "'hermes2' is not a tool-call parser vLLM 0.32 knows; did you mean 'hermes'",
        ),
        ({"reasoning_parser": "deepseek-r1"}, "did you mean 'deepseek_r1'"),
        ({"tool_parser": "x" * 65}, "at most 64 characters"),
        ({"tools": False, "tool_parser": "hermes"}, "tools: false serves no tool calls"),
        ({"model": "m.gguf", "tool_parser": "hermes"}, "llama.cpp uses the model's chat template (--jinja)"),
        ({"model": "m.gguf", "reasoning_parser": "qwen3"}, "reasoning_parser is a vLLM setting"),
        (
            {"args": ["--tool-call-parser=hermes"]},
            "manifest field `tool_parser`; set that instead",
        ),
        (
            {"args": ["--enable_auto_tool_choice"]},
            "manifest field `tools`; set that instead",
        ),
        (
            {"args": ["--no-enable-auto-tool-choice"]},
            "manifest field `tools`; set that instead",
        ),
        (
            {"args": ["--reasoning-parser", "qwen3"]},
            "manifest field `reasoning_parser`; set that instead",
        ),
    ],
)
def test_bad_parser_settings_are_refused(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelManifest.model_validate({"model": "m", **doc})
    assert message in str(caught.value)
