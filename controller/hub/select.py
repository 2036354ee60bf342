"""Which files of a hub repo an engine would fetch itself, so the controller fetches those and no
more: pure rules over the repo's listing (path and size of each file).

llama.cpp (``-hf org/repo[:TAG]``, as llama.cpp's common/download.cpp ``common_download_get_hf_plan``
chooses): the first model GGUF (not a projector, imatrix or draft head) whose name holds the tag,
case-insensitively, followed by '.' or '-'; with no tag, Q4_K_M, else Q8_0, else the first model
GGUF. A split GGUF brings every shard of its prefix and count (-00001-of-00003 ...). A projector
(``mmproj`` in the name) in the same folder comes along, the one whose quantization bits are
nearest the model's, as ``-hf`` loads it.

vLLM (``org/repo``): what ``vllm serve`` reads from a snapshot: config, tokenizer and generation
files and the safetensors weights with their index; never .bin, .pt, .gguf or the repo's extras.

The files beside the weights (``controller.hub.cache.hub_refs``): a llama.cpp draft is chosen as
the model is, without a projector (vLLM's as vLLM's model); a projector named on its own is the
repo's ``mmproj*.gguf`` for the tag (``for_mmproj``); an adapter is the repo's one LoRA GGUF
(``for_lora_gguf``) or its PEFT pair (``for_peft``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from controller.errors import HubError

DEFAULT_TAGS = ("Q4_K_M", "Q8_0")  # llama.cpp's choice when the reference names no tag
NOT_MODELS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")  # sidecars, not weights
SPLIT = re.compile(r"^(.+)-([0-9]{5})-of-([0-9]{5})$", re.IGNORECASE)
TAG = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)
# vLLM's files: configs, tokenizers, generation settings, chat templates, safetensors (+ index).
VLLM_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.model",  # sentencepiece tokenizers
    "*.tiktoken",
    "*.txt",  # merges.txt, vocab.txt
    "*.jinja",  # chat_template.jinja
    "*.py",  # custom code (trust_remote_code models)
)


@dataclass(frozen=True, slots=True)
class RepoFile:
    path: str  # relative to the repo's root, '/'-separated
    size: int  # bytes
    blob: str = ""  # the cache's blob name (LFS sha256, else git blob id); "" when unknown


@dataclass(frozen=True, slots=True)
class Selection:
    """The files to fetch; ``primary`` is what the engine opens (llama.cpp's GGUF, shard 1; ""
    for vLLM, which opens the snapshot folder); ``mmproj`` the projector, if any."""

    files: tuple[RepoFile, ...]
    primary: str = ""
    mmproj: str | None = None

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)


def split_info(path: str) -> tuple[str, str, int, int]:
    """(prefix, TAG, index, count) of a GGUF file's name, as llama.cpp reads it."""
    prefix = path[: -len(".gguf")] if path.lower().endswith(".gguf") else path
    index = count = 1
    if (m := SPLIT.match(prefix)) is not None:
        prefix, index, count = m.group(1), int(m.group(2)), int(m.group(3))
    tag = m.group(1).upper() if (m := TAG.search(prefix)) is not None else ""
    return prefix, tag, index, count


def is_model(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.endswith(".gguf") and not any(word in name for word in NOT_MODELS)


def quant_bits(tag: str) -> int:
    """4 for Q4_0, 16 for F16, 0 when the tag holds no number."""
    m = re.search(r"[0-9]+", tag)
    return int(m.group(0)) if m else 0


def best_model(files: tuple[RepoFile, ...], tag: str) -> RepoFile | None:
    """llama.cpp's ``find_best_model``: the first shard-1 model GGUF matching the tag."""
    firsts = [f for f in files if is_model(f.path) and _first_shard(f)]
    for wanted in (tag,) if tag else DEFAULT_TAGS:
        pattern = re.compile(re.escape(wanted) + r"[.-]", re.IGNORECASE)
        for f in firsts:
            if pattern.search(f.path):
                return f
    return None if tag or not firsts else firsts[0]


def _first_shard(f: RepoFile) -> bool:
    _, _, index, count = split_info(f.path)
    return count <= 1 or index == 1


def shards(files: tuple[RepoFile, ...], primary: RepoFile) -> tuple[RepoFile, ...]:
    """Every shard of ``primary``'s split (same prefix and count), or ``primary`` alone."""
    prefix, _, _, count = split_info(primary.path)
    if count <= 1:
        return (primary,)
    found = tuple(f for f in files if split_info(f.path)[0] == prefix and split_info(f.path)[3] == count)
    if len(found) != count:
        raise HubError(f"{primary.path}: the repo lists {len(found)} of its {count} shards")
    return tuple(sorted(found, key=lambda f: split_info(f.path)[2]))


def best_mmproj(files: tuple[RepoFile, ...], model: str) -> RepoFile | None:
    """llama.cpp's ``find_best_mmproj``: a projector GGUF in the model's folder (or above it),
    the deepest such folder first, then the nearest quantization bits."""
    folder = model.rsplit("/", 1)[0] if "/" in model else ""
    bits = quant_bits(split_info(model)[1])
    best: tuple[int, int, RepoFile] | None = None
    for f in files:
        if not f.path.endswith(".gguf") or "mmproj" not in f.path:
            continue
        own = f.path.rsplit("/", 1)[0] if "/" in f.path else ""
        if own and not (folder == own or folder.startswith(own + "/")):
            continue
        depth = len(own.split("/")) if own else 0
        rank = (-depth, abs(quant_bits(split_info(f.path)[1]) - bits), f)
        if best is None or rank[:2] < best[:2]:
            best = rank
    return best[2] if best else None


def for_llamacpp(files: tuple[RepoFile, ...], repo: str, tag: str, *, projector: bool = True) -> Selection:
    """The GGUF(s) and projector ``-hf repo[:tag]`` fetches (``projector`` False: the model alone,
    as a draft is loaded). Raises HubError when none matches."""
    primary = best_model(files, tag)
    if primary is None:
        wanted = f"quant '{tag}'" if tag else "a model GGUF"
        raise HubError(f"hf://{repo}: no file for {wanted} (GGUF files in the repo: {_ggufs(files)})")
    mmproj = best_mmproj(files, primary.path) if projector else None
    chosen = shards(files, primary) + ((mmproj,) if mmproj else ())
    return Selection(chosen, primary.path, mmproj.path if mmproj else None)


def for_vllm(files: tuple[RepoFile, ...], repo: str) -> Selection:
    """Configs, tokenizers and safetensors. Raises HubError when the repo has no safetensors."""
    chosen = tuple(f for f in files if any(fnmatch.fnmatch(f.path, p) for p in VLLM_PATTERNS))
    if not any(f.path.endswith(".safetensors") for f in chosen):
        raise HubError(f"hf://{repo}: no .safetensors weights in the repo (vLLM needs them)")
    if not any(f.path == "config.json" for f in chosen):
        raise HubError(f"hf://{repo}: no config.json in the repo (vLLM needs it)")
    return Selection(chosen)


def for_mmproj(files: tuple[RepoFile, ...], repo: str, tag: str) -> Selection:
    """A projector named on its own (``mmproj: hf://org/repo[:TAG]``): the repo's ``mmproj*.gguf``
    whose name holds the tag, else the one nearest the tag's quantization bits (``best_mmproj``:
    ``:Q4_K_M`` means "the projector for the Q4_K_M model"); with no tag the only one, or the one
    ``-hf org/repo`` would load beside the model it picks. Raises HubError when none fits."""
    projectors = tuple(f for f in files if f.path.endswith(".gguf") and "mmproj" in _name(f.path))
    if not projectors:
        raise HubError(
            f"hf://{_ref(repo, tag)}: no projector (mmproj*.gguf) in the repo (GGUF files: {_ggufs(files)})"
        )
    named = [f for f in projectors if tag and _holds_tag(f.path, tag)]
    if named:
        return Selection((named[0],), named[0].path, named[0].path)
    if len(projectors) == 1:
        return Selection(projectors, projectors[0].path, projectors[0].path)
    model = f"x-{tag}.gguf" if tag else getattr(best_model(files, ""), "path", "")
    found = best_mmproj(projectors, model) if model else None
    if found is None:
        names = ", ".join(f.path for f in projectors)
        raise HubError(f"hf://{repo}: several projectors ({names}) and no model to match: name one with :TAG")
    return Selection((found,), found.path, found.path)


def for_lora_gguf(files: tuple[RepoFile, ...], repo: str, tag: str) -> Selection:
    """A llama.cpp adapter (``adapters[].path: hf://org/repo[:TAG]``): the repo's one GGUF that is
    not a projector or imatrix, or the one whose name holds the tag as a word of its own
    (``:b`` finds ``smollm2-lora-b.gguf``). Several and no tag is refused: which one is meant is
    a guess. A file whose name holds ',' or ':' cannot be given to ``--lora-scaled``."""
    ggufs = [f for f in files if f.path.endswith(".gguf") and not _sidecar(f.path)]
    chosen = [f for f in ggufs if _holds_tag(f.path, tag)] if tag else ggufs
    if not chosen:
        wanted = f"no GGUF file matching '{tag}'" if tag else "no LoRA GGUF file"
        raise HubError(f"hf://{_ref(repo, tag)}: {wanted} in the repo (GGUF files: {_ggufs(files)})")
    if len(chosen) > 1:
        names = ", ".join(f.path for f in chosen)
        raise HubError(
            f"hf://{_ref(repo, tag)}: several LoRA GGUF files in the repo ({names}): name one with :TAG"
        )
    lora = chosen[0]
    if "," in lora.path or ":" in lora.path:
        raise HubError(
            f"hf://{_ref(repo, tag)}: llama.cpp cannot take an adapter path with ',' or ':' ({lora.path})"
        )
    return Selection((lora,), lora.path)


PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def for_peft(files: tuple[RepoFile, ...], repo: str) -> Selection:
    """A vLLM adapter (``adapters[].path: hf://org/repo``): the PEFT repo's ``adapter_config.json``
    and ``adapter_model.safetensors`` (at the repo's root, as ``--lora-modules`` reads a folder).
    Raises HubError when either is missing."""
    by_path = {f.path: f for f in files}
    missing = [name for name in PEFT_FILES if name not in by_path]
    if missing:
        raise HubError(f"hf://{repo}: not a PEFT adapter repo: no {' or '.join(missing)} at its root")
    return Selection(tuple(by_path[name] for name in PEFT_FILES))


def _ref(repo: str, tag: str) -> str:
    return f"{repo}:{tag}" if tag else repo


def _ggufs(files: tuple[RepoFile, ...]) -> str:
    return ", ".join(f.path for f in files if f.path.endswith(".gguf")) or "none"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _sidecar(path: str) -> bool:
    return "mmproj" in _name(path) or "imatrix" in _name(path)


def _holds_tag(path: str, tag: str) -> bool:
    """The file's name (less .gguf) holds ``tag`` as a word of its own, case-insensitively: between
    '-', '.', '_' or the name's ends (``a`` is in ``lora-a.gguf``, not in ``lora-b.gguf``)."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".gguf")
    return re.search(rf"(^|[-._]){re.escape(tag)}($|[-._])", stem, re.IGNORECASE) is not None
