"""The engine flags that put a server in its model's task (``LoadedModel.task``, docs/tasks.md).

- **llama.cpp** (b11434): ``--embeddings`` serves ``/v1/embeddings`` (and nothing to generate),
  with ``--pooling mean`` where the GGUF states no pooling type (a generator served for embeddings:
  llama-server refuses OpenAI embeddings without pooling) and the manifest's args choose none;
  ``--reranking`` serves ``/v1/rerank`` (llama-server sets RANK pooling itself, which needs a
  classifier head or a RANK-pooled GGUF).
- **vLLM** 0.32 (``vllm serve --help=all``: no ``--task`` any more): ``--runner pooling`` with
  ``--convert embed`` (``/v1/embeddings``) or ``--convert classify`` (``/v1/rerank``, ``/v1/score``);
  a native pooling model (``BertModel``, ``*ForSequenceClassification``) is left as it is by the
  conversion, a generator gets vLLM's pooling adapter.

Generate needs no flag on either. The flags are reserved (``controller.manifests.flags``): an
``args`` entry that sets them is refused, naming the ``task`` field.
"""

from __future__ import annotations

from controller.manifests.model import LoadedModel
from controller.weights.task import stated

# The pooling llama-server gets for embeddings when the GGUF states none (and no arg chooses).
DEFAULT_POOLING = "mean"
VLLM_CONVERT = {"embed": "embed", "rerank": "classify"}


def llamacpp_flags(model: LoadedModel) -> list[str]:
    """llama-server's flags for ``model``'s task."""
    task = model.task
    if task == "rerank":
        return ["--reranking"]
    if task != "embed":
        return []
    flags = ["--embeddings"]
    local = model.weights is not None
    if local and stated(model.weights).pooling is None and not sets_pooling(model.manifest.args):
        flags += ["--pooling", DEFAULT_POOLING]
    return flags


def sets_pooling(args: list[str]) -> bool:
    """True when ``args`` choose llama-server's pooling (``--pooling``, its env is LLAMA_ARG_POOLING)."""
    return any(arg.replace("_", "-") == "--pooling" for arg in args if arg.startswith("--"))


def vllm_flags(model: LoadedModel) -> list[str]:
    """``vllm serve``'s flags for ``model``'s task."""
    convert = VLLM_CONVERT.get(model.task)
    return ["--runner", "pooling", "--convert", convert] if convert else []
