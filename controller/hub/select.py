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


def for_llamacpp(files: tuple[RepoFile, ...], repo: str, tag: str) -> Selection:
    """The GGUF(s) and projector ``-hf repo[:tag]`` fetches. Raises HubError when none matches."""
    primary = best_model(files, tag)
    if primary is None:
        ggufs = ", ".join(f.path for f in files if f.path.endswith(".gguf")) or "none"
        wanted = f"quant '{tag}'" if tag else "a model GGUF"
        raise HubError(f"hf://{repo}: no file for {wanted} (GGUF files in the repo: {ggufs})")
    mmproj = best_mmproj(files, primary.path)
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
