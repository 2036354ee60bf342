"""What a model's weights say it is for: generating text, embedding it, or ranking passages.

An embedding or reranker model served as a generator fails deep in the engine (llama-server has no
pooled output to give, vLLM loads a causal-LM head the weights lack), and a generator served for
embeddings answers vectors nobody trained. The weights usually say which they are, and a manifest
without ``task`` gets that (``LoadedModel.task``; the loader runs ``detect_task`` as it resolves the
files, through the hook it is handed: reading headers is this package's, a layer above):

- **GGUF** (the header of shard 1): ``<arch>.pooling_type`` 4 is llama.cpp's RANK pooling (Qwen3
  and Jina rerankers) and ``<arch>.classifier.output_labels`` a classifier head (BERT-style cross
  encoders, ``convert_hf_to_gguf.py`` writes it for ``*ForSequenceClassification``): rerank. Any
  other pooling type (mean 1, cls 2, last 3: written for sentence-transformers models) or an
  encoder architecture (``bert``, ``nomic-bert``, ...; XLM-RoBERTa converts to ``bert``): embed.
- **safetensors** (``config.json`` of the folder, or beside the file): an architecture ending in
  ``ForSequenceClassification``: rerank; a sentence-transformers folder (``modules.json``), an
  encoder ``model_type`` or a bare ``*Model`` architecture (no LM head): embed.
- Anything else, hub weights (not here to read) and what cannot be read: None (generate).

Reads are bounded (``gguf``'s header reader, ``config.read_json``) and done once per version of
the files: the manifests are loaded again whenever they change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.manifests.values import Task
from controller.weights.config import read_json
from controller.weights.gguf import read_gguf_header
from controller.weights.info import BAD_HEADER, EstimateError
from controller.weights.read import fingerprint

if TYPE_CHECKING:
    from controller.manifests.model import LoadedModel

# llama.cpp's enum llama_pooling_type (include/llama.h): NONE 0, MEAN 1, CLS 2, LAST 3, RANK 4.
POOLING_RANK = 4
EMBED_POOLINGS = frozenset({1, 2, 3})
# GGUF architectures that are encoders: they have no LM head, only hidden states to pool.
GGUF_ENCODERS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert",
     "t5encoder", "eurobert", "gemma-embedding"}
)  # fmt: skip
# config.json model_type of encoders (Hugging Face's names).
CONFIG_ENCODERS = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "nomic_bert", "modernbert", "electra",
     "camembert", "mpnet", "jina_bert", "deberta-v2", "gte"}
)  # fmt: skip
_STATED: dict[tuple[Any, ...], Stated] = {}
_STATED_MAX = 256


@dataclass(frozen=True, slots=True)
class Stated:
    """What the weights say: their task (None: they do not say) and, for a GGUF, the pooling type
    llama-server uses for embeddings unless told (None: none stated, or not a GGUF)."""

    task: Task | None = None
    pooling: int | None = None


def detect_task(model: LoadedModel) -> Task | None:
    """What ``model``'s weights say it is for, or None (they do not say, are hub weights, or cannot
    be read: the weights' estimate reports that). Never raises for what the files hold."""
    return stated(model.weights).task


def stated(weights: Path | None) -> Stated:
    """What ``weights`` say (``Stated()`` for hub weights and unreadable files), read once per
    version of the files."""
    if weights is None:
        return Stated()
    try:
        key = fingerprint(weights)
        found = _STATED.get(key)
        if found is None:
            found = read_stated(weights)
            if len(_STATED) >= _STATED_MAX:
                _STATED.clear()
            _STATED[key] = found
        return found
    except (OSError, EstimateError, *BAD_HEADER):
        return Stated()


def read_stated(weights: Path) -> Stated:
    """What ``weights`` (a .gguf file, a safetensors file or folder) state. Raises EstimateError
    or OSError for files that cannot be read."""
    if weights.is_file() and weights.suffix.lower() == ".gguf":
        metadata = read_gguf_header(weights).metadata
        arch = metadata.get("general.architecture")
        pooling = metadata.get(f"{arch}.pooling_type") if isinstance(arch, str) else None
        return Stated(gguf_task(metadata), pooling if isinstance(pooling, int) and pooling > 0 else None)
    folder = weights if weights.is_dir() else weights.parent
    config = folder / "config.json"
    config_data = read_json(config) if config.is_file() else {}
    return Stated(config_task(config_data, sentence_transformers=(folder / "modules.json").is_file()))


def gguf_task(metadata: dict[str, Any]) -> Task | None:
    """The task a GGUF's metadata states (see the module's docstring), or None."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return None
    pooling = metadata.get(f"{arch}.pooling_type")
    if pooling == POOLING_RANK or f"{arch}.classifier.output_labels" in metadata:
        return "rerank"
    if pooling in EMBED_POOLINGS or arch in GGUF_ENCODERS:
        return "embed"
    return None


def config_task(config: dict[str, Any], *, sentence_transformers: bool) -> Task | None:
    """The task a config.json states (``sentence_transformers``: modules.json is beside it)."""
    architectures = config.get("architectures")
    first = architectures[0] if isinstance(architectures, list) and architectures else ""
    first = first if isinstance(first, str) else ""
    if first.endswith("ForSequenceClassification"):
        return "rerank"
    bare = first.endswith("Model") and not first.endswith(("LMHeadModel", "ForCausalLM"))
    if sentence_transformers or config.get("model_type") in CONFIG_ENCODERS or bare:
        return "embed"
    return None
