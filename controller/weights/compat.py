"""Whether the files beside the weights fit them, read from headers before anything starts.

An adapter for another base, a projector of another width or a draft of another vocabulary is
found by the engine only while it loads, and then it exits ("tensor 'blk.0.attn_k.weight' has
incorrect shape (hint: maybe wrong base model?)", "mismatch between text model (n_embd = 576) and
mmproj (n_embd = 64)", docs/model-shapes.md): a replica that never becomes ready. Found here, it
is one located manifest error instead, and nothing running is touched.

The checks are pure functions over paths (bounded header and JSON reads, ``gguf``, ``config``,
``lora``), each raising EstimateError naming the file; ``check_files`` runs those that apply to a
loaded model and says which manifest field each problem is about. The manifest loader calls it
through the hook it is handed (``controller.manifests.loader.FilesCheck``): reading headers is this
package's, a layer above the manifests. Hub files (``hf://``) are checked the same way once the
controller has pulled them (``controller.hub.fit``, handing in the pulled weights' place).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.weights.config import read_json
from controller.weights.gguf import GgufHeader, GgufTensor, read_gguf_header, read_gguf_shards
from controller.weights.info import BAD_HEADER, MAX_ARCH, EstimateError, count_of
from controller.weights.lora import adapter_rank, max_lora_rank
from controller.weights.read import fingerprint

if TYPE_CHECKING:
    from controller.manifests.model import LoadedModel

# A problem: the manifest field it is about (("adapters", 1, "path")) and what is wrong.
Problem = tuple[tuple[str | int, ...], str]

MAX_VOCAB = 1 << 24  # tokens in a vocabulary (the largest ship ~260k)
_CHECKED: dict[tuple[Any, ...], list[Problem]] = {}
_CHECKED_MAX = 256


def check_files(model: LoadedModel) -> list[Problem]:
    """Every problem with ``model``'s resolved files beside its weights, each with its field; none
    when it names none, or when the weights are not here (``readable_weights``: resolved under a
    root, or hub weights pulled into the cache). Read once per version of the files: the manifests
    are loaded again whenever they change, and on every reconcile pass."""
    weights = model.readable_weights
    files = model.files
    if weights is None or not (files.mmproj or files.draft or files.adapters):
        return []
    paths = [weights, *(p for p in (files.mmproj, files.draft) if p), *(a.path for a in files.adapters)]
    try:
        key = (model.manifest.resolved_engine, files, *(fingerprint(p) for p in paths))
    except (OSError, ValueError) as exc:
        return [((), f"cannot read the files beside the weights: {exc}")]
    found = _CHECKED.get(key)
    if found is None:
        found = run_checks(model, weights)
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = found
    return found


def run_checks(model: LoadedModel, weights: Path) -> list[Problem]:
    """The checks of ``check_files`` against ``weights``, each problem located at its field."""
    files = model.files
    llamacpp = model.manifest.resolved_engine == "llamacpp"
    checks: list[tuple[tuple[str | int, ...], Callable[[], object]]] = []
    if files.mmproj is not None:  # llama.cpp's alone (the manifest refuses it for vLLM)
        checks.append((("mmproj",), bind(check_mmproj, files.mmproj, weights)))
    if files.draft is not None:
        draft_check = check_gguf_draft if llamacpp else check_folder_draft
        checks.append((("draft",), bind(draft_check, files.draft, weights)))
    for index, adapter in enumerate(files.adapters):
        check = (
            bind(check_gguf_adapter, adapter.path, weights)
            if llamacpp
            else bind(check_peft_adapter, adapter.path)
        )
        checks.append((("adapters", index, "path"), check))
    return [problem for loc, check in checks if (problem := run_one(loc, check)) is not None]


def bind(check: Callable[..., object], *paths: Path) -> Callable[[], object]:
    return lambda: check(*paths)


def run_one(loc: tuple[str | int, ...], check: Callable[[], object]) -> Problem | None:
    """``check``'s refusal as a problem at ``loc``; a file that cannot be read is one too."""
    try:
        check()
    except EstimateError as exc:
        return (loc, str(exc))
    except OSError as exc:
        return (loc, f"{exc.filename or 'a file'}: cannot read: {exc.strerror or exc}")
    except BAD_HEADER as exc:  # a hostile header past the readers' own checks
        return (loc, f"cannot read the file: bad header ({type(exc).__name__})")
    return None


# --- llama.cpp: GGUF files ---------------------------------------------------------------------


def check_mmproj(mmproj: Path, weights: Path) -> None:
    """A projector GGUF whose output width (``clip.vision.projection_dim``, or the audio one) is
    the text model's ``<arch>.embedding_length``, as llama.cpp's mtmd requires. Raises EstimateError."""
    meta = read_gguf_header(mmproj).metadata
    if meta.get("general.architecture") != "clip":
        found = str(meta.get("general.architecture"))[:40]
        raise EstimateError(f"{mmproj}: not a projector GGUF (general.architecture is {found}, not clip)")
    arch, width = text_width(weights)
    for kind in ("vision", "audio"):
        dim = meta.get(f"clip.{kind}.projection_dim")
        if dim is not None and width is not None and dim != width:
            raise EstimateError(
                f"{mmproj}: the projector's output width (clip.{kind}.projection_dim {str(dim)[:20]}) is "
                f"not the text model's ({arch}.embedding_length {width}): it belongs to another model "
                f"(llama.cpp: mismatch between text model (n_embd = {width}) and mmproj (n_embd = {dim}))"
            )


def check_gguf_adapter(adapter: Path, weights: Path) -> None:
    """A LoRA adapter GGUF for these weights: ``general.type`` adapter, LoRA, the base's
    architecture, and every ``lora_a`` / ``lora_b`` pair shaped for the base tensor it adapts
    (llama.cpp's own check: base ne0 = lora_a ne0, base ne1 = lora_b ne1). Raises EstimateError."""
    header = read_gguf_header(adapter)
    meta = header.metadata
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise EstimateError(f"{adapter}: not a LoRA adapter GGUF (general.type / adapter.type)")
    base = read_gguf_shards(weights)
    base_arch = base[0].metadata.get("general.architecture")
    if meta.get("general.architecture") != base_arch:
        found = str(meta.get("general.architecture"))[:40]
        raise EstimateError(f"{adapter}: an adapter for architecture {found}; the weights are {base_arch}")
    check_lora_shapes(adapter, header, {t.name: t for h in base for t in h.tensors})


def check_lora_shapes(adapter: Path, header: GgufHeader, base: dict[str, GgufTensor]) -> None:
    tensors = {t.name: t for t in header.tensors}
    for name, lora_a in tensors.items():
        if not name.endswith(".lora_a"):
            continue
        target = name.removesuffix(".lora_a")
        lora_b, model = tensors.get(target + ".lora_b"), base.get(target)
        if lora_b is None:
            raise EstimateError(f"{adapter}: tensor '{name[:120]}' has no lora_b beside it")
        if model is None:
            raise EstimateError(f"{adapter}: adapts '{target[:120]}', which the weights do not have")
        if len(model.dims) < 2 or len(lora_a.dims) < 2 or len(lora_b.dims) < 2:
            raise EstimateError(f"{adapter}: tensor '{target[:120]}' is not a matrix")
        if model.dims[0] != lora_a.dims[0] or model.dims[1] != lora_b.dims[1]:
            raise EstimateError(
                f"{adapter}: tensor '{target[:120]}' is {model.dims[0]}x{model.dims[1]} in the weights, "
                f"the adapter's is {lora_a.dims[0]}x{lora_b.dims[1]}: an adapter for another base model "
                "(llama.cpp: 'has incorrect shape (hint: maybe wrong base model?)')"
            )


def check_gguf_draft(draft: Path, weights: Path) -> None:
    """A draft GGUF that is a model (not a projector or an adapter) of the weights' vocabulary
    size, when both state one. Raises EstimateError."""
    meta = read_gguf_shards(draft)[0].metadata
    if meta.get("general.type") == "adapter" or meta.get("general.architecture") == "clip":
        raise EstimateError(f"{draft}: not a model GGUF (an adapter or a projector)")
    mine, theirs = gguf_vocab(meta), gguf_vocab(read_gguf_header(weights).metadata)
    if mine is not None and theirs is not None and mine != theirs:
        raise EstimateError(
            f"{draft}: a vocabulary of {mine} tokens, the weights' has {theirs}: a draft must share "
            "the model's vocabulary"
        )


def text_width(weights: Path) -> tuple[str, int | None]:
    """The text model's architecture and ``<arch>.embedding_length`` (None: not stated)."""
    meta = read_gguf_header(weights).metadata
    arch = str(meta.get("general.architecture", ""))[:40]
    width = meta.get(f"{arch}.embedding_length")
    return arch, None if width is None else count_of(width, f"{arch}.embedding_length", MAX_ARCH)


_NOT_READ = re.compile(r"^<(\d{1,9}) items, not read>$")


def gguf_vocab(meta: dict[str, Any]) -> int | None:
    """Tokens in a GGUF's vocabulary: ``<arch>.vocab_size``, else the length of
    ``tokenizer.ggml.tokens`` (kept, or described by the reader when too long to keep)."""
    stated = meta.get(f"{meta.get('general.architecture')}.vocab_size")
    if stated is not None:
        return count_of(stated, "vocab_size", MAX_VOCAB)
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        return len(tokens)
    match = _NOT_READ.match(tokens) if isinstance(tokens, str) else None
    return int(match[1]) if match else None


# --- vLLM: folders -----------------------------------------------------------------------------


def check_peft_adapter(folder: Path) -> None:
    """A PEFT LoRA folder whose rank is readable and one vLLM can serve (at most 512). Raises
    EstimateError naming the file."""
    rank = adapter_rank(folder)
    try:
        max_lora_rank([rank])
    except ValueError as exc:
        raise EstimateError(f"{folder}: {exc}") from exc


def check_folder_draft(draft: Path, weights: Path) -> None:
    """A draft model folder (config.json) of the weights' vocabulary size, when both state one.
    Raises EstimateError."""
    config = draft / "config.json"
    if not config.is_file():
        raise EstimateError(f"{draft}: no config.json; vLLM's draft is a model folder")
    mine = config_vocab(read_json(config))
    base = weights if weights.is_dir() else weights.parent
    theirs = config_vocab(read_json(base / "config.json")) if (base / "config.json").is_file() else None
    if mine is not None and theirs is not None and mine != theirs:
        raise EstimateError(
            f"{config}: vocab_size {mine}, the weights' is {theirs}: a draft must share the model's "
            "vocabulary"
        )


def config_vocab(config: dict[str, Any]) -> int | None:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    stated = text.get("vocab_size") if isinstance(text, dict) else None
    return None if stated is None else count_of(stated, "vocab_size", MAX_VOCAB)
