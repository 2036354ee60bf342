"""What the weights say a model is for (``controller.weights.task``), through the loader's hook to
``LoadedModel.task``, and the engine flags each task gets (``controller.engines.tasks``)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from controller.engines import build_spec
from controller.manifests.loader import load_folder
from controller.weights.task import Stated, detect_task, read_stated, stated
from tests.weights.files import SMOLLM2, gguf_kv, gguf_string


def write_gguf_meta(path: Path, arch: str, extra: list[bytes]) -> Path:
    """A GGUF v3 header with no tensors: the architecture and ``extra`` key-value pairs."""
    kvs = [gguf_kv("general.architecture", 8, gguf_string(arch)), *extra]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


def pooling(arch: str, value: int) -> bytes:
    return gguf_kv(f"{arch}.pooling_type", 4, struct.pack("<I", value))


LABELS = gguf_kv("bert.classifier.output_labels", 9, struct.pack("<IQ", 8, 1) + gguf_string("LABEL_0"))


@pytest.mark.parametrize(
    ("arch", "extra", "expected"),
    [
        ("llama", [], Stated()),
        ("llama", [pooling("llama", 0)], Stated()),  # NONE: a generator's
        ("bert", [], Stated("embed")),  # an encoder: no LM head
        ("nomic-bert", [pooling("nomic-bert", 1)], Stated("embed", 1)),
        ("qwen3", [pooling("qwen3", 3)], Stated("embed", 3)),  # Qwen3-Embedding: last-token pooling
        ("qwen3", [pooling("qwen3", 4)], Stated("rerank", 4)),  # Qwen3-Reranker: RANK pooling
        ("bert", [LABELS], Stated("rerank")),  # a cross-encoder's classifier head
    ],
)
def test_gguf_metadata_states_the_task(
    tmp_path: Path, arch: str, extra: list[bytes], expected: Stated
) -> None:
    assert read_stated(write_gguf_meta(tmp_path / "m.gguf", arch, extra)) == expected


def test_the_real_smollm2_gguf_is_a_generator() -> None:
    assert stated(SMOLLM2) == Stated()


@pytest.mark.parametrize(
    ("config", "modules", "expected"),
    [
        ({"architectures": ["BertForSequenceClassification"], "model_type": "bert"}, False, "rerank"),
        ({"architectures": ["Qwen3ForSequenceClassification"], "model_type": "qwen3"}, False, "rerank"),
        ({"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta"}, False, "embed"),
        ({"architectures": ["NewModel"], "model_type": "new"}, False, "embed"),  # a bare model, no head
        (
            {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"},
            True,
            "embed",
        ),  # sentence-transformers
        ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, False, None),
        ({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, False, None),
        ({}, False, None),
    ],
)
def test_config_json_states_the_task(
    tmp_path: Path, config: dict[str, object], modules: bool, expected: str | None
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    if modules:
        (tmp_path / "modules.json").write_text("[]")
    assert read_stated(tmp_path).task == expected
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert read_stated(tmp_path / "model.safetensors").task == expected  # the file's folder says


def test_unreadable_weights_state_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00")
    assert stated(tmp_path / "bad.gguf") == Stated()
    (tmp_path / "config.json").write_text("[1, 2")
    assert stated(tmp_path) == Stated()
    assert stated(None) == Stated()


def load(tmp_path: Path, manifest: dict[str, object]) -> object:
    (tmp_path / "m.yaml").write_text(json.dumps(manifest))
    (model,) = load_folder(tmp_path / "m.yaml", model_roots=[tmp_path], detect_task=detect_task)
    return model


def test_the_loader_takes_the_task_from_the_weights_unless_the_manifest_says(tmp_path: Path) -> None:
    write_gguf_meta(tmp_path / "bge.gguf", "bert", [pooling("bert", 2)])
    assert load(tmp_path, {"model": "bge.gguf"}).task == "embed"  # type: ignore[attr-defined]
    assert load(tmp_path, {"model": "bge.gguf", "task": "rerank"}).task == "rerank"  # type: ignore[attr-defined]
    assert load(tmp_path, {"model": "hf://org/bge-GGUF:Q8_0"}).task == "generate"  # type: ignore[attr-defined]
    (tmp_path / "m.yaml").write_text(json.dumps({"model": "bge.gguf"}))
    (plain,) = load_folder(tmp_path / "m.yaml", model_roots=[tmp_path])  # no detection handed in
    assert plain.task == "generate"


def command_of(tmp_path: Path, manifest: dict[str, object]) -> list[str]:
    return list(build_spec(load(tmp_path, manifest), 0).command)  # type: ignore[arg-type]


def test_llamacpp_flags_per_task(tmp_path: Path) -> None:
    write_gguf_meta(tmp_path / "gen.gguf", "llama", [])
    write_gguf_meta(tmp_path / "bge.gguf", "bert", [pooling("bert", 2)])
    generate = command_of(tmp_path, {"model": "gen.gguf"})
    assert not {"--embeddings", "--reranking", "--pooling"} & set(generate)
    embed = command_of(tmp_path, {"model": "gen.gguf", "task": "embed"})
    assert embed[embed.index("--embeddings") :][:3] == ["--embeddings", "--pooling", "mean"]
    own = command_of(tmp_path, {"model": "gen.gguf", "task": "embed", "args": ["--pooling", "last"]})
    assert own.count("--pooling") == 1 and own[own.index("--pooling") + 1] == "last"
    stated_pooling = command_of(tmp_path, {"model": "bge.gguf"})  # the GGUF's own CLS pooling
    assert "--embeddings" in stated_pooling and "--pooling" not in stated_pooling
    assert "--reranking" in command_of(tmp_path, {"model": "gen.gguf", "task": "rerank"})


def test_vllm_flags_per_task(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    )
    embed = command_of(tmp_path, {"model": "m", "engine": "vllm", "task": "embed"})
    assert embed[embed.index("--runner") :][:4] == ["--runner", "pooling", "--convert", "embed"]
    assert "--enable-auto-tool-choice" not in embed  # a pooling model takes no tools
    rerank = command_of(tmp_path, {"model": "m", "engine": "vllm", "task": "rerank"})
    assert rerank[rerank.index("--runner") :][:4] == ["--runner", "pooling", "--convert", "classify"]
    assert "--runner" not in command_of(tmp_path, {"model": "m", "engine": "vllm"})


def test_a_draft_is_refused_for_a_model_that_generates_nothing(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from controller.manifests.document import ModelManifest

    with pytest.raises(ValidationError, match="task embed generates nothing"):
        ModelManifest.model_validate({"model": "a.gguf", "task": "embed", "draft": "b.gguf"})
