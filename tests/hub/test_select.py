"""Which files llama.cpp's -hf and vLLM would fetch, as tables over repo listings; and which a
draft, a projector or an adapter named as a hub reference brings."""

from __future__ import annotations

import pytest

from controller.errors import HubError
from controller.hub.select import RepoFile, for_llamacpp, for_lora_gguf, for_mmproj, for_peft, for_vllm


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


def test_a_llamacpp_draft_is_the_model_without_its_projector() -> None:
    chosen = for_llamacpp(QWEN, "org/repo", "Q8_0", projector=False)
    assert (chosen.primary, chosen.mmproj) == ("Qwen3-8B-Q8_0.gguf", None)
    assert [f.path for f in chosen.files] == ["Qwen3-8B-Q8_0.gguf"]


@pytest.mark.parametrize(
    ("files", "tag", "want"),
    [
        (QWEN, "F16", "mmproj-Qwen3-8B-F16.gguf"),  # named by its own quant
        (QWEN, "q8_0", "mmproj-Qwen3-8B-Q8_0.gguf"),
        (QWEN, "Q4_K_M", "mmproj-Qwen3-8B-Q8_0.gguf"),  # the model's quant: the nearest bits
        (QWEN, "", "mmproj-Qwen3-8B-Q8_0.gguf"),  # as -hf beside the model it picks (Q4_K_M)
        (repo("tiny-vlm.gguf", "mmproj-tiny-vlm.gguf"), "", "mmproj-tiny-vlm.gguf"),  # the only one
        (repo("tiny-vlm.gguf", "mmproj-tiny-vlm.gguf"), "Q4_0", "mmproj-tiny-vlm.gguf"),
    ],
)
def test_a_projector_by_its_tag_or_the_only_one(files: tuple[RepoFile, ...], tag: str, want: str) -> None:
    chosen = for_mmproj(files, "org/repo", tag)
    assert (chosen.primary, chosen.mmproj, [f.path for f in chosen.files]) == (want, want, [want])


def test_a_repo_without_a_projector_is_refused_naming_its_ggufs() -> None:
    with pytest.raises(
        HubError,
        match=r"^hf://org/repo: no projector \(mmproj\*\.gguf\) in the repo \(GGUF files: a\.gguf\)$",
    ):
        for_mmproj(repo("a.gguf", "README.md"), "org/repo", "")


def test_several_projectors_and_nothing_to_match_asks_for_a_tag() -> None:
    with pytest.raises(HubError, match=r"several projectors .* name one with :TAG"):
        for_mmproj(repo("mmproj-a-F16.gguf", "mmproj-b-F32.gguf"), "org/repo", "")


LORAS = repo("README.md", "smollm2-lora-a.gguf", "smollm2-lora-b.gguf", "imatrix.gguf")


@pytest.mark.parametrize(
    ("files", "tag", "want"),
    [
        (repo("README.md", "smollm2-lora-a.gguf"), "", "smollm2-lora-a.gguf"),  # the only one
        (LORAS, "a", "smollm2-lora-a.gguf"),  # a word of the name: not the 'a' of 'lora'
        (LORAS, "B", "smollm2-lora-b.gguf"),
        (repo("x/Qwen-LoRA-F16.gguf", "x/Qwen-LoRA-Q8_0.gguf"), "q8_0", "x/Qwen-LoRA-Q8_0.gguf"),
    ],
)
def test_a_llamacpp_adapter_is_the_one_lora_gguf_or_the_tagged_one(
    files: tuple[RepoFile, ...], tag: str, want: str
) -> None:
    chosen = for_lora_gguf(files, "org/loras", tag)
    assert (chosen.primary, [f.path for f in chosen.files]) == (want, [want])


@pytest.mark.parametrize(
    ("files", "tag", "words"),
    [
        (LORAS, "", "several LoRA GGUF files in the repo (smollm2-lora-a.gguf, smollm2-lora-b.gguf): "
         "name one with :TAG"),
        (LORAS, "c", "no GGUF file matching 'c' in the repo"),
        (repo("README.md"), "", "no LoRA GGUF file in the repo (GGUF files: none)"),
        (repo("a,b.gguf"), "", "llama.cpp cannot take an adapter path with ',' or ':' (a,b.gguf)"),
    ],
)  # fmt: skip
def test_an_adapter_repo_that_does_not_say_which_is_one_error(
    files: tuple[RepoFile, ...], tag: str, words: str
) -> None:
    with pytest.raises(HubError) as caught:
        for_lora_gguf(files, "org/loras", tag)
    assert words in str(caught.value) and str(caught.value).startswith(
        f"hf://org/loras{':' + tag if tag else ''}: "
    )


def test_a_vllm_adapter_is_the_peft_pair_and_nothing_else() -> None:
    files = repo("README.md", "adapter_config.json", "adapter_model.safetensors", "training_args.bin")
    assert [f.path for f in for_peft(files, "org/peft").files] == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    with pytest.raises(
        HubError, match=r"^hf://org/peft: not a PEFT adapter repo: no adapter_model\.safetensors"
    ):
        for_peft(files[:2], "org/peft")
