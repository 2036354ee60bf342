"""Which files llama.cpp's -hf and vLLM would fetch, as tables over repo listings."""

from __future__ import annotations

import pytest

from controller.errors import HubError
from controller.hub.select import RepoFile, for_llamacpp, for_vllm


def repo(*names: str) -> tuple[RepoFile, ...]:
    return tuple(RepoFile(name, 10) for name in names)


QWEN = repo(
    "README.md",
    "Qwen3-8B-Q4_K_M.gguf",
    "Qwen3-8B-Q8_0.gguf",
    "Qwen3-8B-q4_0.gguf",
    "mmproj-Qwen3-8B-F16.gguf",
    "mmproj-Qwen3-8B-Q8_0.gguf",
    "imatrix.gguf",
)
SPLIT = repo(
    "Q4_K_M/Big-Q4_K_M-00001-of-00003.gguf",
    "Q4_K_M/Big-Q4_K_M-00002-of-00003.gguf",
    "Q4_K_M/Big-Q4_K_M-00003-of-00003.gguf",
    "Q8_0/Big-Q8_0-00001-of-00002.gguf",
    "Q8_0/Big-Q8_0-00002-of-00002.gguf",
)


@pytest.mark.parametrize(
    ("files", "tag", "want", "mmproj"),
    [
        (QWEN, "", ["Qwen3-8B-Q4_K_M.gguf"], "mmproj-Qwen3-8B-Q8_0.gguf"),  # default; nearest bits
        (QWEN, "Q4_0", ["Qwen3-8B-q4_0.gguf"], "mmproj-Qwen3-8B-Q8_0.gguf"),  # any case
        (QWEN, "q8_0", ["Qwen3-8B-Q8_0.gguf"], "mmproj-Qwen3-8B-Q8_0.gguf"),
        (repo("a-Q8_0.gguf", "a-Q2_K.gguf"), "", ["a-Q8_0.gguf"], None),  # then Q8_0
        (repo("a-Q2_K.gguf", "a-Q3_K.gguf"), "", ["a-Q2_K.gguf"], None),  # then the first
        (SPLIT, "Q4_K_M", [f"Q4_K_M/Big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)], None),
        (SPLIT, "", [f"Q4_K_M/Big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)], None),
        (SPLIT, "Q8_0", ["Q8_0/Big-Q8_0-00001-of-00002.gguf", "Q8_0/Big-Q8_0-00002-of-00002.gguf"], None),
    ],
)
def test_llamacpp_picks_what_hf_would(
    files: tuple[RepoFile, ...], tag: str, want: list[str], mmproj: str | None
) -> None:
    chosen = for_llamacpp(files, "org/repo", tag)
    assert chosen.primary == want[0]
    assert chosen.mmproj == mmproj
    assert [f.path for f in chosen.files] == want + ([mmproj] if mmproj else [])


def test_llamacpp_no_such_quant_names_the_ggufs() -> None:
    with pytest.raises(HubError, match=r"no file for quant 'Q5_K_M' \(GGUF files in the repo: a-Q8_0.gguf\)"):
        for_llamacpp(repo("a-Q8_0.gguf"), "org/repo", "Q5_K_M")


def test_llamacpp_missing_shard_is_refused() -> None:
    with pytest.raises(HubError, match="lists 2 of its 3 shards"):
        for_llamacpp(SPLIT[:2], "org/repo", "Q4_K_M")


def test_vllm_takes_configs_tokenizers_and_safetensors_only() -> None:
    files = repo(
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "chat_template.jinja", "pytorch_model.bin", "model.gguf",
        "README.md", "original/consolidated.pth", "merges.txt",
    )  # fmt: skip
    chosen = {f.path for f in for_vllm(files, "org/repo").files}
    assert chosen == {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "chat_template.jinja", "merges.txt",
    }  # fmt: skip


def test_vllm_without_safetensors_is_refused() -> None:
    with pytest.raises(HubError, match=r"no \.safetensors weights"):
        for_vllm(repo("config.json", "pytorch_model.bin"), "org/repo")
